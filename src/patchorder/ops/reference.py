"""The oracle selective scan: a plain sequential loop, exact in whatever dtype it is given (float64 included)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def prepare_delta(delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool) -> torch.Tensor:
    """delta after the optional per-channel bias and softplus, as mamba-ssm applies them."""
    if delta_bias is not None:
        delta = delta + delta_bias[None, :, None]
    return F.softplus(delta) if delta_softplus else delta


def expand_groups(X: torch.Tensor, channels: int) -> torch.Tensor:
    """(b, g, n, l) -> (b, channels, n, l): each group's B or C shared by channels // g channels."""
    return X.repeat_interleave(channels // X.shape[1], dim=1)


def selective_scan_reference(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t;  y_t = <C_t, h_t> + D * u_t."""
    out_dtype = u.dtype
    dtype = torch.promote_types(u.dtype, torch.float32)
    u, delta, A, B, C = (x.to(dtype) for x in (u, delta, A, B, C))
    delta = prepare_delta(delta, None if delta_bias is None else delta_bias.to(dtype), delta_softplus)
    b, d, length = u.shape
    B, C = expand_groups(B, d), expand_groups(C, d)
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    # Steps come from unbind, not x[..., t]: autograd's backward of per-step indexing is quadratic in length.
    for dt, u_t, B_t, C_t in zip(delta.unbind(-1), u.unbind(-1), B.unbind(-1), C.unbind(-1)):
        dt = dt[..., None]
        h = torch.exp(dt * A) * h + dt * B_t * u_t[..., None]
        ys.append((h * C_t).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.to(dtype)[None, :, None] * u
    return y.to(out_dtype)
