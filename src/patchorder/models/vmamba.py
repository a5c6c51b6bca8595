"""VMamba (official v2 architecture: PatchEmbed v2, VSS blocks with SS2D v05_noz, downsample v3) with orderings.

Module names follow MzeroMiko/VMamba's ``VSSM`` so that ``state_dict`` keys and shapes are the official ones.
Inside the network features are channels-last (B, H, W, C); the official ``ln2d`` channel-first variant computes
the same function (LayerNorm over channels, 1x1 projections), so official weights give official outputs.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from timm.layers import DropPath, LayerNorm, LayerNorm2d, Mlp, SelectAdaptivePool2d, trunc_normal_
from torch import nn

from orderings import SCHEMES, Ordering, resolve
from patchorder.models.ss2d import SS2D


INITS = ("vmamba", "scan_ready")
SCAN_READY_X_PROJ_GAIN = 16.0


class Permute(nn.Module):
    """``x.permute(*dims)`` as a module, to switch between NCHW convolutions and channels-last blocks."""

    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


def patch_embed_v2(in_chans: int, embed_dim: int, patch_size: int = 4) -> nn.Sequential:
    """A stride-2 then a stride-(patch_size/2) conv with norm + GELU between (stride patch_size in all); NCHW in,
    channels-last out. At patch_size 4 this is the official module (two stride-2 3x3 convs).

    Indices 0/2/5/7 hold the weights, as in the official module; 1 and 3 are placeholders kept for that reason.
    """
    second = patch_size // 2
    return nn.Sequential(
        nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1),
        nn.Identity(),
        LayerNorm2d(embed_dim // 2, eps=1e-5),
        nn.Identity(),
        nn.GELU(),
        # kernel stride+1 (3 at least) with padding 1 maps a side of n * stride to exactly n
        nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=max(3, second + 1), stride=second, padding=1),
        Permute(0, 2, 3, 1),
        LayerNorm(embed_dim, eps=1e-5),
    )


def downsample_v3(dim: int, out_dim: int) -> nn.Sequential:
    """3x3 stride-2 conv + LayerNorm, channels-last in and out (weights at indices 1 and 3, as official)."""
    return nn.Sequential(
        Permute(0, 3, 1, 2),
        nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1),
        Permute(0, 2, 3, 1),
        LayerNorm(out_dim, eps=1e-5),
    )


class VSSBlock(nn.Module):
    """x + DropPath(SS2D(norm(x))), then x + DropPath(MLP(norm2(x))); channels-last."""

    def __init__(self, dim: int, drop_path: float = 0.0, mlp_ratio: float = 4.0, mlp_drop_rate: float = 0.0,
                 **ss2d_kwargs: Any):
        super().__init__()
        self.norm = LayerNorm(dim, eps=1e-5)
        self.op = SS2D(d_model=dim, **ss2d_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=mlp_drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VMamba(nn.Module):
    """VMamba classifier whose SS2D blocks scan patches in a configurable order.

    Args:
        ordering: one ordering for every stage (a registered name, an ``orderings.Ordering``, a function
            ``(H, W) -> permutation`` or a Hydra ``_target_`` mapping), or a list with one per stage.
        scan_scheme: "cross4" (VMamba's four routes), "bidirectional" or "single".
        scan_backend: selective-scan backend, "auto" picks the fastest available for the tensors' device.
        init: "vmamba" (official: every linear layer truncated-normal, std 0.02) or "scan_ready" (SS2D's in_proj
            and out_proj keep nn.Linear's default init, as mamba-ssm's Mamba block does, and x_proj is scaled by
            SCAN_READY_X_PROJ_GAIN). The scan's mixing term C (sum delta B u) is third order in the activations:
            under "vmamba" it starts at ~1e-4 of the D skip (scan share, patchorder.attention.scan_usage), under
            "scan_ready" at ~0.4, so a small model trained for minutes can learn to use its scan (README: "Which
            setting shows ordering effects").
        depths, dims: blocks per stage and channels (an int doubles per stage, as the official ``dims=96``).
        d_state, ssm_ratio, dt_rank, d_conv, conv_bias: SS2D sizes (official ``ssm_*`` arguments).
        Remaining arguments as in timm models.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        patch_size: int = 4,
        depths: Sequence[int] = (2, 2, 9, 2),
        dims: int | Sequence[int] = 96,
        d_state: int = 1,
        ssm_ratio: float = 1.0,
        dt_rank: int | str = "auto",
        d_conv: int = 3,
        conv_bias: bool = False,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        ssm_drop_rate: float = 0.0,
        mlp_drop_rate: float = 0.0,
        global_pool: str = "avg",
        ordering: Any = "row_major",
        scan_scheme: str = "cross4",
        scan_backend: str = "auto",
        init: str = "vmamba",
        **kwargs: Any,
    ):
        super().__init__()
        if kwargs:
            raise TypeError(f"VMamba got unexpected arguments: {', '.join(sorted(kwargs))}")
        if scan_scheme not in SCHEMES:
            raise ValueError(f"unknown scan_scheme {scan_scheme!r}; choose one of {', '.join(SCHEMES)}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
        if patch_size < 2 or patch_size % 2:
            raise ValueError(f"patch_size must be an even number >= 2 (a stride-2 conv, then stride patch_size/2), "
                             f"got {patch_size}")
        depths = [int(d) for d in depths]
        num_stages = len(depths)
        dims = [int(dims * 2**i) for i in range(num_stages)] if isinstance(dims, int) else [int(d) for d in dims]
        if len(dims) != num_stages:
            raise ValueError(f"dims has {len(dims)} entries but depths has {num_stages} stages")
        stage_orderings = _per_stage(ordering, num_stages)

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.depths, self.dims = depths, dims
        self.num_features = self.head_hidden_size = dims[-1]
        # The one source of the model's geometry: stage i sees the image at stride patch_size * 2**i.
        self.stage_strides = [patch_size * 2**i for i in range(num_stages)]
        self.stride = self.stage_strides[-1]
        self.scan_scheme = scan_scheme
        self.feature_info = [
            dict(num_chs=dims[i], reduction=self.stage_strides[i], module=f"layers.{i}") for i in range(num_stages)
        ]

        self.patch_embed = patch_embed_v2(in_chans, dims[0], patch_size)
        drop_paths = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # cpu: works on meta
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            blocks = [
                VSSBlock(
                    dims[i], drop_path=drop_paths[sum(depths[:i]) + j], mlp_ratio=mlp_ratio,
                    mlp_drop_rate=mlp_drop_rate, d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank,
                    d_conv=d_conv, conv_bias=conv_bias, dropout=ssm_drop_rate, ordering=stage_orderings[i],
                    scan_scheme=scan_scheme, scan_backend=scan_backend, stage=i, block=j,
                )
                for j in range(depth)
            ]
            downsample = downsample_v3(dims[i], dims[i + 1]) if i < num_stages - 1 else nn.Identity()
            self.layers.append(nn.Sequential(OrderedDict(blocks=nn.Sequential(*blocks), downsample=downsample)))

        self.classifier = nn.Sequential(OrderedDict(
            norm=LayerNorm(self.num_features, eps=1e-5),
            avgpool=SelectAdaptivePool2d(pool_type=global_pool, flatten=True, input_fmt="NHWC"),
            drop=nn.Dropout(drop_rate),
            head=nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity(),
        ))
        self.apply(_init_weights)
        if init == "scan_ready":
            for op in self.ss2d_blocks():
                for linear in (op.in_proj, op.out_proj):
                    linear.reset_parameters()
                with torch.no_grad():
                    op.x_proj_weight.mul_(SCAN_READY_X_PROJ_GAIN)
        self._checked_inputs: set[tuple[int, int, torch.device]] = set()

    # --- orderings -------------------------------------------------------------------------------------------
    @property
    def orderings(self) -> list:
        """The ordering used by each stage."""
        return [stage.blocks[0].op.ordering for stage in self.layers]

    def set_ordering(self, ordering: Any) -> None:
        """Scan with another ordering (one for all stages, or one per stage) from now on; the weights stay.

        This is how a trained model is tested under an ordering it was not trained with.
        """
        stage_orderings = _per_stage(ordering, len(self.depths))
        for op in self.ss2d_blocks():
            op.set_ordering(stage_orderings[op.stage])
        self._checked_inputs.clear()

    def ss2d_blocks(self) -> list[SS2D]:
        return [m for m in self.modules() if isinstance(m, SS2D)]

    def stage_grids(self, height: int, width: int) -> list[tuple[int, int]]:
        """The patch grid (rows, columns) each stage scans for an image of ``height`` x ``width`` pixels."""
        return [(height // s, width // s) for s in self.stage_strides]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for inputs the network cannot take, before any computation.

        The first time a size is seen, every stage's routes are built (and so validated) for it.
        """
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"VMamba expects images (batch, {self.in_chans}, height, width), got shape {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        if height % self.stride or width % self.stride:
            raise ValueError(
                f"input size {height}x{width} (height x width) is not divisible by the model's total stride "
                f"{self.stride} (patch size x 2 per downsampling); resize or crop to multiples of {self.stride}, "
                f"e.g. {max(self.stride, height // self.stride * self.stride)}x"
                f"{max(self.stride, width // self.stride * self.stride)}"
            )
        key = (height, width, x.device)
        if key not in self._checked_inputs:
            grids = self.stage_grids(height, width)
            for op in self.ss2d_blocks():
                op.route_indices(*grids[op.stage], x.device)
            self._checked_inputs.add(key)

    # --- timm model interface --------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """A_logs and Ds (the official code keeps weight decay off them)."""
        return {name for name, p in self.named_parameters() if getattr(p, "_no_weight_decay", False)}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.classifier.avgpool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True, input_fmt="NHWC")
        self.classifier.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.classifier.head.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> last-stage features (B, H/stride, W/stride, C), channels-last."""
        self.check_input(x)
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.classifier.drop(self.classifier.avgpool(self.classifier.norm(x)))
        return x if pre_logits else self.classifier.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _per_stage(ordering: Any, num_stages: int) -> list[Ordering]:
    """Resolve one ordering spec for every stage, or a list with exactly one per stage (shared by its blocks)."""
    if isinstance(ordering, Sequence) and not isinstance(ordering, str):
        specs = list(ordering)
        if len(specs) != num_stages:
            raise ValueError(
                f"ordering list has {len(specs)} entries but the model has {num_stages} stages; "
                f"give one ordering per stage or a single ordering for all"
            )
        return [resolve(spec) for spec in specs]
    return [resolve(ordering)] * num_stages


def _init_weights(module: nn.Module) -> None:
    """The official init: truncated-normal linear weights (std 0.02), zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
