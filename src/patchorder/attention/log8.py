"""log8: non-negative attention as uint8 codes on a log scale relative to each row's maximum (one float32 scale
per row). Code 0 is "below floor * row max"; codes 1..255 span [floor, 1] * row max geometrically, so every
value at or above the floor comes back within a relative error of :func:`log8_relative_error` (1.8% at the
default floor 1e-4). Used by the explorer's page data and by the attention export's ``dtype="log8"`` storage.
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
    values = np.asarray(matrix, dtype=np.float64)
    if values.size and values.min() < 0:
        raise ValueError("log8 encodes non-negative values only; use the f16 encoding for signed attention")
    scales = values.max(axis=-1).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0)[..., None].astype(np.float64)
    with np.errstate(divide="ignore"):
        position = LOG8_LEVELS + 1 + LOG8_LEVELS * np.log(values / safe) / -np.log(floor)
    codes = np.rint(np.nan_to_num(position, neginf=0.0))
    codes[codes < 1] = 0  # below the floor
    return np.clip(codes, 0, 255).astype(np.uint8), scales


def dequantise_log8(codes: np.ndarray, scales: np.ndarray, floor: float) -> np.ndarray:
    """Inverse of :func:`quantise_log8` (float32), exactly as the page computes it."""
    factors = np.exp(np.log(floor) * (LOG8_LEVELS + 1 - np.arange(256)) / LOG8_LEVELS)
    factors[0] = 0.0
    return (factors[codes] * scales[..., None]).astype(np.float32)
