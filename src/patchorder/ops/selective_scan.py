"""One entry point, several backends; the shapes are checked here, once per call.

Shapes as mamba-ssm's ``selective_scan_fn``: u, delta (b, d, l); A (d, n); B, C (b, g, n, l) with g dividing d;
D, delta_bias (d). Returns y (b, d, l).
"""
from __future__ import annotations

import warnings

import torch

from patchorder.ops import kernels
from patchorder.ops.fast import scan_torch
from patchorder.ops.reference import selective_scan_reference
from patchorder.ops.shapes import check_scan_shapes

BACKENDS = {
    "reference": selective_scan_reference,
    "torch": scan_torch,
    "triton": kernels.selective_scan_triton,
    "mamba_ssm": kernels.selective_scan_mamba_ssm,
}
# What "auto" tries on CUDA tensors, fastest first; the pure-PyTorch scan is the last resort (and the CPU default).
CUDA_PREFERENCE = ("mamba_ssm", "triton")
_FALLBACK_NOTES = {
    "mamba_ssm": "mamba-ssm is not installed ({reason})",
    "triton": "Triton is unavailable ({reason})",
}
_warned_fallbacks: set[str] = set()  # each fallback is said once per process


def _auto(u: torch.Tensor) -> str:
    """The backend "auto" picks for u; on CUDA, the first optional kernel that imports, else torch."""
    if not u.is_cuda:
        return "torch"
    missing = []
    for name in CUDA_PREFERENCE:
        if kernels.available(name):
            choice = name
            break
        missing.append(name)
    else:
        choice = "torch"
    if missing and choice not in _warned_fallbacks:
        _warned_fallbacks.add(choice)
        notes = " and ".join(_FALLBACK_NOTES[m].format(reason=kernels.load(m)[1]) for m in missing)
        used = {"triton": "patchorder's Triton kernels", "torch": "patchorder's pure-PyTorch scan (slow on GPUs)"}
        warnings.warn(
            f"{notes}: CUDA tensors use {used[choice]}. For mamba-ssm's CUDA kernel, "
            f"{kernels.INSTALL_HINTS['mamba_ssm']}.",
            stacklevel=3,
        )
    return choice


def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, backend="auto"):
    """y (b, d, l) of the selective scan; ``backend`` is "auto", "reference", "torch", "triton" or "mamba_ssm"."""
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
    check_scan_shapes(u, delta, A, B, C, D, delta_bias)
    name = _auto(u) if backend == "auto" else backend
    return BACKENDS[name](u, delta, A, B, C, D=D, delta_bias=delta_bias, delta_softplus=delta_softplus)
