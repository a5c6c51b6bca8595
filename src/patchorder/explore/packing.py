"""Binary payload of the report: typed arrays, each deflated on its own, concatenated and base64-encoded once.

The page decodes the base64 string once, then inflates each array with the browser's built-in
``DecompressionStream("deflate")`` (zlib format, what :func:`zlib.compress` writes). Arrays are compressed one by
one so the report builder knows each array's exact cost while it decides what fits the size budget.

Attention matrices use one of two encodings (``encode_matrix``):
  ``log8``  non-negative values: uint8 codes on a log scale relative to each row's maximum (one float32 scale
           per row). Code 0 is "below floor * row max"; codes 1..255 span [floor, 1] * row max geometrically,
           so every value at or above the floor comes back within a relative error of ``log8_relative_error``.
  ``f16``   anything else (signed reductions): float16 of value / max|value| with one float32 scale per matrix.
"""
from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass, field

import numpy as np

# The log8 code is shared with the .npz storage of attention exports (one implementation).
from patchorder.attention.log8 import (  # noqa: F401  (re-exported: tests and callers import them from here)
    LOG8_LEVELS, dequantise_log8, log8_relative_error, log8_step, quantise_log8,
)

# Type tags the page understands, and the numpy dtype each one is stored as (little-endian).
DTYPES = {"u8": np.dtype("<u1"), "i32": np.dtype("<i4"), "f32": np.dtype("<f4"), "f16": np.dtype("<f2")}
# Arrays smaller than this are stored raw: inflating them would cost more than it saves.
MIN_COMPRESS_BYTES = 256

@dataclass
class Packer:
    """Collects arrays; each call to :meth:`add` returns the integer id the JSON payload refers to."""

    level: int = 6
    entries: list[dict] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    offset: int = 0

    def add(self, array: np.ndarray, tag: str) -> int:
        data = np.ascontiguousarray(array, dtype=DTYPES[tag])
        raw = data.tobytes()
        compressed = len(raw) >= MIN_COMPRESS_BYTES
        stored = zlib.compress(raw, self.level) if compressed else raw
        if compressed and len(stored) >= len(raw):  # incompressible: keep it raw
            stored, compressed = raw, False
        self.entries.append({"t": tag, "n": int(data.size), "o": self.offset, "z": len(stored), "c": int(compressed)})
        self.chunks.append(stored)
        self.offset += len(stored)
        return len(self.entries) - 1

    def truncate(self, count: int) -> None:
        """Forget every array added after the first ``count`` (a view that did not fit the budget)."""
        del self.entries[count:], self.chunks[count:]
        self.offset = sum(len(c) for c in self.chunks)

    def cost(self, array_id: int) -> int:
        """Bytes this array adds to the HTML file (base64 inflates by 4/3)."""
        return (self.entries[array_id]["z"] * 4 + 2) // 3

    def encoded(self) -> str:
        return base64.b64encode(b"".join(self.chunks)).decode("ascii")

    def encoded_size(self) -> int:
        return 4 * ((self.offset + 2) // 3)


def encode_matrix(packer: Packer, values: np.ndarray, encoding: str, floor: float,
                  codes: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Store an (..., L) float array; returns the JSON reference the page decodes (see module docstring).

    ``codes``: ``quantise_log8(values, floor)`` when the caller has it already (log8 only; not checked here)."""
    values = np.asarray(values, dtype=np.float32)
    if encoding == "log8":
        codes, scales = quantise_log8(values, floor) if codes is None else codes
        return {"enc": "log8", "floor": floor, "codes": packer.add(codes, "u8"), "scales": packer.add(scales, "f32")}
    if encoding == "f16":
        peak = float(np.abs(values).max()) if values.size else 0.0
        scale = peak if peak > 0 else 1.0
        return {"enc": "f16", "scale": scale, "values": packer.add(values / scale, "f16")}
    raise ValueError(f"unknown matrix encoding {encoding!r}; use 'log8' or 'f16'")


def uncompressed_cost(values: np.ndarray, encoding: str) -> int:
    """Bytes the arrays of ``encode_matrix(packer, values, encoding, ...)`` add to the file at most (stored raw,
    base64-encoded): log8 codes (1 byte a value) and a float32 scale per row, or float16 values."""
    shape = np.shape(values)
    size = int(np.prod(shape))
    arrays = [size, 4 * (size // shape[-1] if size else 0)] if encoding == "log8" else [2 * size]
    return sum((n * 4 + 2) // 3 for n in arrays)


def decode_matrix(packer: Packer, ref: dict, shape: tuple[int, ...]) -> np.ndarray:
    """Python inverse of :func:`encode_matrix` (used by tests and for checking a payload)."""

    def unpack(array_id: int) -> np.ndarray:
        entry = packer.entries[array_id]
        stored = packer.chunks[array_id]
        raw = zlib.decompress(stored) if entry["c"] else stored
        return np.frombuffer(raw, dtype=DTYPES[entry["t"]])

    if ref["enc"] == "log8":
        codes = unpack(ref["codes"]).reshape(shape)
        scales = unpack(ref["scales"]).reshape(shape[:-1])
        return dequantise_log8(codes, scales, ref["floor"])
    return (unpack(ref["values"]).astype(np.float32) * np.float32(ref["scale"])).reshape(shape)
