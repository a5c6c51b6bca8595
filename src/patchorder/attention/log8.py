"""log8: non-negative attention as uint8 codes on a log scale relative to each row's maximum (one float32 scale
per row). Code 0 is "below floor * row max"; codes 1..255 span [floor, 1] * row max geometrically, so every
value at or above the floor comes back within a relative error of :func:`log8_relative_error` (1.8% at the
default floor 1e-4). Used by the explorer's page data and by the attention export's ``dtype="log8"`` storage.

For files, :func:`difference_codes` turns a matrix of codes into its 2-D differences (modulo 256, exactly
invertible by :func:`undo_difference_codes`). On large grids attention varies smoothly over neighbouring query
and key patches, so the differences are mostly small and deflate packs them tighter (VMamba-T's 56 x 56 stage 0:
0.77 of a byte a value against 0.94); on small grids the codes themselves pack tighter.
:func:`differences_pay` tells which, from the byte entropy of one matrix (it predicts deflate's winner).
"""
from __future__ import annotations

import numpy as np

LOG8_LEVELS = 254  # codes 1..255


def log8_step(floor: float) -> float:
    """Ratio between two consecutive log8 codes."""
    return float(floor) ** (-1.0 / LOG8_LEVELS)


def log8_relative_error(floor: float) -> float:
    """Largest relative error of a log8-coded value at or above ``floor`` times its row's maximum."""
    return float(np.sqrt(log8_step(floor)) - 1.0)


def quantise_log8(matrix: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Codes (uint8, same shape) and per-row scales (float32, shape[:-1]) for a non-negative array."""
    if not 0.0 < floor < 1.0:
        raise ValueError(f"log8 floor must be in (0, 1), got {floor}")
    # A copy in float32 (float64 stays float64): the work below is in place (one O(L^2) buffer). float32 puts a
    # code position within ~2e-6 of its float64 value (a code flips only that close to a half-way point, still
    # within the error bound) and runs 2.5x faster than float64 on VMamba-T's 3136 x 3136 matrices.
    kind = np.result_type(np.asarray(matrix).dtype, np.float32)
    values = np.array(matrix, dtype=kind)
    if values.size and values.min() < 0:
        raise ValueError("log8 encodes non-negative values only; use the f16 encoding for signed attention")
    scales = values.max(axis=-1)
    values /= np.where(scales > 0, scales, kind.type(1))[..., None]
    with np.errstate(divide="ignore"):
        np.log(values, out=values)
    # position = LEVELS + 1 + LEVELS * log(relative) / -log(floor); below the floor (position < 0.5) -> code 0
    values *= kind.type(LOG8_LEVELS / -np.log(floor))
    values += kind.type(LOG8_LEVELS + 1)
    np.nan_to_num(values, copy=False, nan=0.0, neginf=0.0)
    np.rint(values, out=values)
    np.clip(values, 0, 255, out=values)
    return values.astype(np.uint8), scales.astype(np.float32)


def dequantise_log8(codes: np.ndarray, scales: np.ndarray, floor: float) -> np.ndarray:
    """Inverse of :func:`quantise_log8` (float32), exactly as the page computes it."""
    factors = np.exp(np.log(floor) * (LOG8_LEVELS + 1 - np.arange(256)) / LOG8_LEVELS)
    factors[0] = 0.0
    return (factors[codes] * scales[..., None]).astype(np.float32)


def difference_codes(codes: np.ndarray) -> np.ndarray:
    """uint8 codes (..., rows, cols) -> code[i, j] - code[i-1, j] - code[i, j-1] + code[i-1, j-1] modulo 256
    (outside the matrix counts as 0): a lossless reordering of the information that compresses better."""
    out = np.array(codes, dtype=np.uint8)  # uint8 arithmetic wraps modulo 256
    out[..., 1:] -= out[..., :-1].copy()  # along each row (a copy: the right side must be the old values)
    out[..., 1:, :] -= out[..., :-1, :].copy()  # then down each column
    return out


def undo_difference_codes(differences: np.ndarray) -> np.ndarray:
    """Inverse of :func:`difference_codes`: cumulative sums over both axes, modulo 256 (uint8 arithmetic wraps)."""
    return np.cumsum(np.cumsum(differences, axis=-2, dtype=np.uint8), axis=-1, dtype=np.uint8)


def byte_entropy(values: np.ndarray) -> float:
    """Zeroth-order entropy of uint8 values, in bits per value."""
    counts = np.bincount(np.asarray(values, dtype=np.uint8).ravel(), minlength=256)
    p = counts[counts > 0] / max(1, values.size)
    return float(-(p * np.log2(p)).sum())


def differences_pay(codes: np.ndarray) -> bool:
    """True when the 2-D differences of the first matrix of ``codes`` (..., rows, cols) have a lower byte entropy
    than the codes: then storing the differences makes the deflated file smaller."""
    first = np.asarray(codes).reshape(-1, *np.shape(codes)[-2:])[:1]
    return first.size > 0 and byte_entropy(difference_codes(first)) < byte_entropy(first)
