"""The optional kernels, mamba-ssm's CUDA selective scan and patchorder's Triton kernels, and their guards.

This is the one place either is imported: on first use, each tried once and the outcome remembered (as
mamba-ssm's own modules do with their optional kernels, but lazily, so that importing patchorder never
imports them). Their absence is never an error until a backend that needs one is explicitly requested.
"""
from __future__ import annotations

from functools import lru_cache

INSTALL_HINTS = {
    "mamba_ssm": "install the optional extra with `pip install -e '.[cuda]'` on a machine with CUDA",
    "triton": "install the triton package that matches your torch (torch's CUDA wheels bring it)",
}


@lru_cache(maxsize=None)
def load(name: str):
    """(scan function, None) if the optional kernel ``name`` imports, else (None, the reason)."""
    try:
        if name == "mamba_ssm":
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as kernel
        elif name == "triton":
            from patchorder.ops.triton_scan import selective_scan_triton as kernel
        else:
            raise KeyError(f"no optional kernel named {name!r}")
    except Exception as error:  # ImportError, or a build that fails to load its CUDA extension
        return None, error
    return kernel, None


def available(name: str) -> bool:
    """True if the optional kernel ``name`` ("mamba_ssm" or "triton") can be imported (cached)."""
    return load(name)[0] is not None


def mamba_ssm_available() -> bool:
    return available("mamba_ssm")


def _require(name: str):
    kernel, reason = load(name)
    if kernel is None:
        raise RuntimeError(
            f"selective-scan backend {name!r} was requested but {name.replace('_', '-')} cannot be imported "
            f"({reason}). Either {INSTALL_HINTS[name]}, or use backend='auto' or 'torch' (the pure-PyTorch scan)."
        )
    return kernel


def selective_scan_mamba_ssm(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """The selective scan by mamba-ssm's fused CUDA kernel (no gate z); CUDA tensors only."""
    kernel = _require("mamba_ssm")
    if not u.is_cuda:
        raise ValueError(
            f"selective-scan backend 'mamba_ssm' runs on CUDA tensors only, but u is on {u.device}. "
            "Move the inputs to a GPU, or use backend='auto' or 'torch' (the pure-PyTorch scan) on the CPU."
        )
    return kernel(u, delta, A, B, C, D, z=None, delta_bias=delta_bias, delta_softplus=delta_softplus)


def selective_scan_triton(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """The selective scan by patchorder's Triton kernels: CUDA tensors, or CPU tensors under the interpreter."""
    kernel = _require("triton")
    if not u.is_cuda:
        from patchorder.ops import triton_scan

        if not triton_scan.INTERPRETED:
            raise ValueError(
                f"selective-scan backend 'triton' runs on CUDA tensors, or on CPU tensors only under the Triton "
                f"interpreter, but u is on {u.device} and the kernels were compiled for a GPU. Set "
                "TRITON_INTERPRET=1 in the environment before Python starts (slow: meant for tests), move the "
                "inputs to a GPU, or use backend='auto' or 'torch' (the pure-PyTorch scan) on the CPU."
            )
    return kernel(u, delta, A, B, C, D, delta_bias=delta_bias, delta_softplus=delta_softplus)
