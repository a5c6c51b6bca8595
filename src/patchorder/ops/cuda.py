"""mamba-ssm's CUDA selective-scan kernel: an optional extra, imported on first use, its absence never an error.

Nothing here imports mamba_ssm at module import time; ``mamba_ssm_available()`` tries once and remembers.
"""
from __future__ import annotations

from functools import lru_cache

INSTALL_HINT = "install the optional extra with `pip install -e '.[cuda]'` on a machine with CUDA"


@lru_cache(maxsize=1)
def _load_kernel():
    """(selective_scan_fn, None) if mamba-ssm imports, else (None, the reason)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as error:  # ImportError, or a build that fails to load its CUDA extension
        return None, error
    return selective_scan_fn, None


def mamba_ssm_available() -> bool:
    """True if mamba-ssm's selective_scan_fn can be imported (cached after the first call)."""
    return _load_kernel()[0] is not None


def selective_scan_mamba_ssm(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """The selective scan by mamba-ssm's fused CUDA kernel (no gate z); CUDA tensors only."""
    kernel, reason = _load_kernel()
    if kernel is None:
        raise RuntimeError(
            f"selective-scan backend 'mamba_ssm' was requested but mamba-ssm cannot be imported ({reason}). "
            f"Either {INSTALL_HINT}, or use backend='auto' or 'torch' (the pure-PyTorch scan)."
        )
    if not u.is_cuda:
        raise ValueError(
            f"selective-scan backend 'mamba_ssm' runs on CUDA tensors only, but u is on {u.device}. "
            "Move the inputs to a GPU, or use backend='auto' or 'torch' (the pure-PyTorch scan) on the CPU."
        )
    return kernel(u, delta, A, B, C, D, z=None, delta_bias=delta_bias, delta_softplus=delta_softplus)
