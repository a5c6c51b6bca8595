"""One entry point, several backends.

Shapes as mamba-ssm's ``selective_scan_fn``: u, delta (b, d, l); A (d, n); B, C (b, g, n, l) with g dividing d;
D, delta_bias (d). Returns y (b, d, l).
"""
from __future__ import annotations

import warnings

import torch

from patchorder.ops.reference import selective_scan_reference

_warned_no_cuda_kernel = False


def _torch_backend(*args, **kwargs):
    from patchorder.ops.fast import selective_scan_fast

    return selective_scan_fast(*args, **kwargs)


def _mamba_ssm_backend(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    from patchorder.ops.cuda import selective_scan_mamba_ssm

    return selective_scan_mamba_ssm(u, delta, A, B, C, D, delta_bias, delta_softplus)


BACKENDS = {
    "reference": selective_scan_reference,
    "torch": _torch_backend,
    "mamba_ssm": _mamba_ssm_backend,
}


def _auto(u: torch.Tensor) -> str:
    global _warned_no_cuda_kernel
    if u.is_cuda:
        from patchorder.ops.cuda import mamba_ssm_available

        if mamba_ssm_available():
            return "mamba_ssm"
        if not _warned_no_cuda_kernel:
            warnings.warn(
                "mamba-ssm is not installed: CUDA tensors use patchorder's pure-PyTorch scan. "
                "Install the CUDA kernel with `pip install -e '.[cuda]'` for full speed.",
                stacklevel=3,
            )
            _warned_no_cuda_kernel = True
    return "torch"


def check_ssm_shapes(caller: str, delta, A, B, C) -> None:
    """delta (b, d, l), A (d, n), B and C (b, g, n, l) with g dividing d; a ValueError names what does not fit."""
    if delta.dim() != 3:
        raise ValueError(f"{caller}: delta must be (batch, channels, length), got {tuple(delta.shape)}")
    b, d, length = delta.shape
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"{caller}: A must be (channels={d}, d_state), got {tuple(A.shape)}")
    n = A.shape[1]
    for name, X in (("B", B), ("C", C)):
        if X.dim() != 4 or X.shape[0] != b or X.shape[2] != n or X.shape[3] != length or d % X.shape[1]:
            raise ValueError(
                f"{caller}: {name} must be (batch={b}, groups dividing {d}, d_state={n}, length={length}), "
                f"got {tuple(X.shape)}"
            )


def check_shapes(u, delta, A, B, C, D=None, delta_bias=None) -> None:
    """Raise a ValueError that names the argument whose shape does not fit."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, channels, length), got {tuple(u.shape)}")
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: delta must match u {tuple(u.shape)}, got {tuple(delta.shape)}")
    check_ssm_shapes("selective_scan", delta, A, B, C)
    d = u.shape[1]
    for name, X in (("D", D), ("delta_bias", delta_bias)):
        if X is not None and tuple(X.shape) != (d,):
            raise ValueError(f"selective_scan: {name} must be (channels={d},), got {tuple(X.shape)}")


def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, backend="auto"):
    """y (b, d, l) of the selective scan; ``backend`` is "auto", "reference", "torch" or "mamba_ssm"."""
    check_shapes(u, delta, A, B, C, D, delta_bias)
    name = _auto(u) if backend == "auto" else backend
    if name not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
    return BACKENDS[name](u, delta, A, B, C, D=D, delta_bias=delta_bias, delta_softplus=delta_softplus)
