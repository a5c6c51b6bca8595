"""Public entry points: the hidden attention of one selective scan, and of one captured VMamba block."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from patchorder.attention.kernel import DEFAULT_CHUNK_MB, MERGES, REDUCES, patch_attention
from patchorder.ops.shapes import check_ssm_shapes

if TYPE_CHECKING:  # importing patchorder.models pulls in timm; the record is only duck-typed here
    from patchorder.models.records import SSMRecord


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(map(repr, choices))}")


def _check_signs(delta: torch.Tensor, A: torch.Tensor, where: str) -> None:
    """The factorisation relies on delta >= 0 and A <= 0 (every exponent then stays <= 0), as in Mamba."""
    if not torch.isfinite(delta).all() or (delta < 0).any():
        raise ValueError(
            f"{where}: delta must be finite and >= 0, i.e. taken after the dt bias and softplus "
            f"(min {delta.min().item():.3g}); apply torch.nn.functional.softplus(delta + delta_bias) first"
        )
    if not torch.isfinite(A).all() or (A > 0).any():
        raise ValueError(
            f"{where}: A must be finite and <= 0, i.e. A = -exp(A_logs) (max {A.max().item():.3g}); "
            f"pass -torch.exp(A_logs), not A_logs"
        )


def hidden_attention(
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    reduce: str = "mean_abs",
    chunk_mb: float = DEFAULT_CHUNK_MB,
) -> torch.Tensor:
    """The attention matrix a selective scan applies to its input (Ali et al., arXiv 2403.01590).

    delta (b, d, l) after bias and softplus; A (d, n); B, C (b, g, n, l) with g dividing d. Per channel,
    alpha[i, j] = sum_n C[i, n] exp(A[n] (S_i - S_j)) delta_j B[j, n] for j <= i (zero above the diagonal),
    S = cumsum(delta), so that the scan output without the D skip is y[:, c] = alpha_c @ u[:, c].
    reduce "none" -> (b, d, l, l); "mean" / "mean_abs" -> (b, l, l), the mean over channels of alpha or |alpha|.
    Exact to float32 rounding at any length (float64 inputs are computed in float64); ``chunk_mb`` bounds the
    working memory beyond the result.
    """
    _check_choice("reduce", reduce, REDUCES)
    check_ssm_shapes("hidden_attention", delta, A, B, C)
    length = delta.shape[2]
    if B.shape[1] != C.shape[1]:
        raise ValueError(f"hidden_attention: B and C must have the same groups, got {B.shape[1]} and {C.shape[1]}")
    _check_signs(delta, A, "hidden_attention")
    identity = torch.arange(length)[None]  # one route visiting positions in order: patch space = sequence
    out = patch_attention(delta[:, None], A[None], B[:, None], C[:, None], identity,
                          merge="none", reduce=reduce, chunk_mb=chunk_mb)
    return out[:, 0]


def block_attention(
    record: SSMRecord,
    merge: str = "sum",
    reduce: str = "mean_abs",
    chunk_mb: float = DEFAULT_CHUNK_MB,
) -> torch.Tensor:
    """A captured SS2D block's attention in raster patch space: attn[q, k] = alpha_route[pos(q), pos(k)].

    merge "sum" adds the routes per channel before the channel reduction (the operator the block's
    cross-merge applies), "none" keeps routes apart. Shapes: (b, L, L) / (b, K, L, L); with reduce "none"
    the channels stay: (b, d, L, L) / (b, K, d, L, L).
    """
    _check_choice("merge", merge, MERGES)
    _check_choice("reduce", reduce, REDUCES)
    K, L = record.routes.shape
    height, width = record.grid
    if height * width != L:
        raise ValueError(f"{record.name}: grid {record.grid} has {height * width} patches but routes have {L}")
    b, KD, length = record.delta.shape
    if length != L or KD % K:
        raise ValueError(
            f"{record.name}: delta must be (batch, {K} routes * channels, {L}), got {tuple(record.delta.shape)}"
        )
    d = KD // K
    n = record.A.shape[-1]
    if tuple(record.A.shape) != (KD, n) or tuple(record.B.shape) != (b, K, n, L) or record.C.shape != record.B.shape:
        raise ValueError(
            f"{record.name}: expected A ({KD}, n), B and C ({b}, {K}, n, {L}); got A {tuple(record.A.shape)}, "
            f"B {tuple(record.B.shape)}, C {tuple(record.C.shape)}"
        )
    _check_signs(record.delta, record.A, record.name)
    return patch_attention(
        record.delta.reshape(b, K, d, L), record.A.reshape(K, d, n), record.B[:, :, None], record.C[:, :, None],
        record.routes, merge=merge, reduce=reduce, chunk_mb=chunk_mb,
    )
