"""SS2D: VMamba's 2-D selective-scan block, with the scan routes taken from a pluggable patch ordering.

Follows the official v2 block (MzeroMiko/VMamba, ``SS2D`` with forward type ``v05_noz``): in_proj (no bias, no z
branch) -> depthwise 3x3 conv -> SiLU -> cross-scan into K routes -> per-route x_proj / dt_proj -> selective scan
(dt bias + softplus) -> cross-merge (sum) -> out_norm -> out_proj. Parameter names and shapes are the official
ones, so official checkpoints load unchanged. The block works on channels-last tensors (B, H, W, C): the official
channel-first layout computes the same function, and channels-last makes every projection a plain matmul on CPU.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm
from torch import nn

import orderings
from orderings import SCHEMES
from patchorder.models.records import SSMRecord
from patchorder.ops import selective_scan


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors in float32; float32 and float64 (the oracles' precision) as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def cross_scan(x: torch.Tensor, routes: torch.Tensor) -> torch.Tensor:
    """(B, D, L) raster-order features -> (B, K, D, L): route k visits raster index routes[k, s] at position s."""
    batch, channels, length = x.shape
    num_routes = routes.shape[0]
    index = routes.view(1, num_routes, 1, length).expand(batch, num_routes, channels, length)
    return torch.gather(x.unsqueeze(1).expand(batch, num_routes, channels, length), 3, index)


def cross_merge(ys: torch.Tensor, inverse_routes: torch.Tensor) -> torch.Tensor:
    """(B, K, D, L) per-route outputs -> (B, D, L) in raster order: each route mapped back, then summed."""
    batch, num_routes, channels, length = ys.shape
    index = inverse_routes.view(1, num_routes, 1, length).expand(batch, num_routes, channels, length)
    return torch.gather(ys, 3, index).sum(1)


def dt_projection_init(dt_rank: int, d_inner: int, dt_min: float, dt_max: float, dt_init_floor: float,
                       dt_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba's dt init ("v0"): weight ~ U(+-dt_scale / sqrt(rank)); bias = softplus^-1(dt), dt log-uniform."""
    bound = dt_rank**-0.5 * dt_scale
    weight = torch.empty(d_inner, dt_rank).uniform_(-bound, bound)
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_init_floor)
    bias = dt + torch.log(-torch.expm1(-dt))  # inverse of softplus
    return weight, bias


class SS2D(nn.Module):
    """One SS2D operator on channels-last input (B, H, W, d_model) -> (B, H, W, d_model).

    ``ordering`` is anything :func:`orderings.resolve` accepts; ``scan_scheme`` picks the routes built from it
    ("cross4": K=4, "bidirectional": K=2, "single": K=1); every per-route parameter has K copies.
    ``scan_backend`` is passed to :func:`patchorder.ops.selective_scan` ("auto", "torch", "reference", ...).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 1,
        ssm_ratio: float = 1.0,
        dt_rank: int | str = "auto",
        d_conv: int = 3,
        conv_bias: bool = False,
        dropout: float = 0.0,
        ordering="row_major",
        scan_scheme: str = "cross4",
        scan_backend: str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        stage: int = 0,
        block: int = 0,
    ):
        super().__init__()
        if scan_scheme not in SCHEMES:
            raise ValueError(f"unknown scan_scheme {scan_scheme!r}; choose one of {', '.join(SCHEMES)}")
        if d_conv < 2:
            raise ValueError(f"d_conv must be >= 2 (the v05_noz block always has its depthwise conv), got {d_conv}")
        self.ordering = orderings.resolve(ordering)
        self.scan_scheme = scan_scheme
        self.scan_backend = scan_backend
        self.stage, self.block = stage, block
        self.num_routes = K = SCHEMES[scan_scheme]
        self.d_state = N = int(d_state)
        self.d_inner = D = int(ssm_ratio * d_model)
        self.dt_rank = R = int(math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank)

        # Direct parameters first, then submodules: the official state_dict order.
        bound = D**-0.5  # nn.Linear's default init, as the official per-route x_proj layers had
        self.x_proj_weight = nn.Parameter(torch.empty(K, R + 2 * N, D).uniform_(-bound, bound))
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(K * D, 1))
        self.Ds = nn.Parameter(torch.ones(K * D))
        dt = [dt_projection_init(R, D, dt_min, dt_max, dt_init_floor) for _ in range(K)]
        self.dt_projs_weight = nn.Parameter(torch.stack([w for w, _ in dt]))  # (K, D, R)
        self.dt_projs_bias = nn.Parameter(torch.stack([b for _, b in dt]))  # (K, D)
        for p in (self.A_logs, self.Ds):
            p._no_weight_decay = True  # the official optimizer setup reads this flag

        self.out_norm = LayerNorm(D, eps=1e-5)  # nn.LayerNorm's default eps, as the official code
        self.in_proj = nn.Linear(d_model, D, bias=False)
        self.act = nn.SiLU()
        self.conv2d = nn.Conv2d(D, D, kernel_size=d_conv, padding=(d_conv - 1) // 2, groups=D, bias=conv_bias)
        self.out_proj = nn.Linear(D, d_model, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

        self._index_cache: dict[tuple[int, int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        self.capture_sink: list[SSMRecord] | None = None  # set by patchorder.models.capture_ssm
        # True: the selective scan is replaced by its D skip (y = D * u), so nothing is mixed along the sequence.
        # Set through patchorder.models.scan_ablation; a question asked of a trained model, not a training mode.
        self.scan_ablated = False

    def extra_repr(self) -> str:
        return (f"ordering={self.ordering.label!r}, scan_scheme={self.scan_scheme!r}, K={self.num_routes}, "
                f"d_inner={self.d_inner}, d_state={self.d_state}, dt_rank={self.dt_rank}, "
                f"scan_backend={self.scan_backend!r}" + (", scan_ablated=True" if self.scan_ablated else ""))

    def set_ordering(self, ordering) -> None:
        """Scan with another ordering from now on (the weights stay; cached routes are rebuilt)."""
        self.ordering = orderings.resolve(ordering)
        self._index_cache.clear()

    def route_indices(self, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(routes, inverse routes), each (K, L), computed once per grid and device."""
        key = (height, width, device)
        cached = self._index_cache.get(key)
        if cached is None:
            routes = orderings.routes(self.ordering, height, width, self.scan_scheme, device=device)
            cached = (routes, torch.argsort(routes, dim=1))
            self._index_cache[key] = cached
        return cached

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_proj(x).permute(0, 3, 1, 2)  # (B, D, H, W), channels-last in memory
        x = self.act(self.conv2d(x))
        y = self.scan(x)  # (B, H, W, D)
        return self.dropout(self.out_proj(self.out_norm(y)))

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """Cross-scan, selective scan, cross-merge: (B, D, H, W) -> (B, H, W, D), before out_norm."""
        batch, D, height, width = x.shape
        K, N, R, L = self.num_routes, self.d_state, self.dt_rank, height * width
        routes, inverse = self.route_indices(height, width, x.device)

        xs = cross_scan(x.flatten(2), routes)  # (B, K, D, L), contiguous
        x_dbl = torch.matmul(self.x_proj_weight, xs)  # per route: (R + 2N, D) @ (D, L)
        dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
        dts = torch.matmul(self.dt_projs_weight, dts)  # per route: (D, R) @ (R, L)

        u = xs.view(batch, K * D, L)
        delta = dts.reshape(batch, K * D, L)
        A = -torch.exp(self.A_logs.float())
        Bs, Cs = Bs.contiguous(), Cs.contiguous()
        D_skip = self.Ds.float()
        delta_bias = self.dt_projs_bias.view(-1).float()
        if self.scan_ablated:
            ys = u * D_skip[None, :, None].to(u.dtype)
        else:
            # The scan runs in float32 under any autocast: in half precision its long products of decays lose the
            # state (VMamba users report NaN losses). Its inputs come from bf16/fp16 matmuls under autocast.
            with torch.autocast(x.device.type, enabled=False):
                ys = selective_scan(_at_least_float32(u), _at_least_float32(delta), A, _at_least_float32(Bs),
                                    _at_least_float32(Cs), D_skip, delta_bias, delta_softplus=True,
                                    backend=self.scan_backend)

        if self.capture_sink is not None:
            self._record(routes, (height, width), u, delta, delta_bias, A, Bs, Cs, D_skip, ys)

        y = cross_merge(ys.view(batch, K, D, L), inverse)  # (B, D, L)
        return y.transpose(1, 2).reshape(batch, height, width, D)

    def _record(self, routes, grid, u, delta, delta_bias, A, B, C, D, y) -> None:
        with torch.no_grad():
            delta = F.softplus(delta.float() + delta_bias[None, :, None])
        self.capture_sink.append(SSMRecord(
            stage=self.stage, block=self.block, grid=grid, ordering=self.ordering.label, scheme=self.scan_scheme,
            routes=routes, u=u.detach(), delta=delta.detach(), A=A.detach(), B=B.detach(), C=C.detach(),
            D=D.detach(), y=y.detach(),
        ))
