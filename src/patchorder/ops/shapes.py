"""Shape checks for the selective scan's arguments (mamba-ssm's layout), shared by every backend and by
patchorder.attention, so that a wrong shape is reported once, before any work, naming the argument."""
from __future__ import annotations


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


def check_scan_shapes(u, delta, A, B, C, D=None, delta_bias=None) -> None:
    """All arguments of one selective-scan call: a ValueError names the argument whose shape does not fit."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, channels, length), got {tuple(u.shape)}")
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: delta must match u {tuple(u.shape)}, got {tuple(delta.shape)}")
    check_ssm_shapes("selective_scan", delta, A, B, C)
    d = u.shape[1]
    for name, X in (("D", D), ("delta_bias", delta_bias)):
        if X is not None and tuple(X.shape) != (d,):
            raise ValueError(f"selective_scan: {name} must be (channels={d},), got {tuple(X.shape)}")
