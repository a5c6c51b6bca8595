"""The attention export: every requested block's patch-space attention for a probe batch, in one .npz file.

File layout (a contract shared by the callbacks, eval.py, the explorer and the study):
  "meta"          0-d array holding a JSON string (see :class:`AttentionExport` fields and ``BlockAttention``)
  "images"        uint8 (N, H, W, 3): the probe images as they can be displayed
  "<key>/attn"    float16/float32 (N, L, L) when merged, (N, K, L, L) when routes are kept apart; or, saved with
                  dtype="log8" (non-negative blocks), "<key>/attn_log8" uint8 codes of that shape and
                  "<key>/attn_scale" float32 row maxima (shape without the last axis), see patchorder.attention.log8
  "<key>/routes"  int32 (K, L): route k visits raster patch routes[k, s] at sequence position s
with ``key`` = "s{stage}b{block}" and L = grid height * grid width. attn[n, q, k] is the attention of query
patch q on key patch k (raster indices), zero where k comes after q in every route.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "patchorder.attention/1"


@dataclass
class BlockAttention:
    stage: int
    block: int
    grid: tuple[int, int]
    ordering: str
    attn: np.ndarray  # (N, L, L) merged or (N, K, L, L) per route
    routes: np.ndarray  # (K, L)

    @property
    def key(self) -> str:
        return f"s{self.stage}b{self.block}"

    @property
    def merged(self) -> bool:
        return self.attn.ndim == 3


@dataclass
class AttentionExport:
    blocks: list[BlockAttention]
    images: np.ndarray  # uint8 (N, H, W, 3)
    model: str = ""
    ordering: str = ""
    scheme: str = "cross4"
    reduce: str = "mean_abs"
    merge: str = "sum"
    labels: list[int] = field(default_factory=list)
    class_names: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def block(self, stage: int, block: int) -> BlockAttention:
        for b in self.blocks:
            if (b.stage, b.block) == (stage, block):
                return b
        have = ", ".join(b.key for b in self.blocks)
        raise KeyError(f"no attention for stage {stage} block {block} in this export; it has {have}")

    def stages(self) -> list[int]:
        return sorted({b.stage for b in self.blocks})


LOG8_FLOOR = 1e-4  # log8 storage keeps values down to 1e-4 of their row's maximum, within 1.8%


def _log8_able(attn: np.ndarray) -> bool:
    return attn.size == 0 or float(attn.min()) >= 0


def _log8_encode(attn: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Codes and row scales, one (L, L) matrix at a time (the float64 work array stays O(L^2))."""
    from patchorder.attention.log8 import quantise_log8

    matrices = attn.reshape(-1, *attn.shape[-2:])
    codes = np.empty(matrices.shape, np.uint8)
    scales = np.empty(matrices.shape[:-1], np.float32)
    for i, matrix in enumerate(matrices):
        codes[i], scales[i] = quantise_log8(matrix, floor)
    return codes.reshape(attn.shape), scales.reshape(attn.shape[:-1])


def _log8_decode(codes: np.ndarray, scales: np.ndarray, floor: float) -> np.ndarray:
    from patchorder.attention.log8 import dequantise_log8

    return dequantise_log8(codes, scales, floor)


def stored(export: AttentionExport, dtype=np.float32) -> AttentionExport:
    """The export as :func:`load` would return it after ``save(..., dtype=dtype)``: compute metrics and pictures
    from this, and they describe exactly what the file holds."""
    from dataclasses import replace

    if dtype in (np.float32, "float32"):
        return export

    def values(b: BlockAttention) -> np.ndarray:
        if dtype == "log8" and _log8_able(b.attn):
            return _log8_decode(*_log8_encode(b.attn, LOG8_FLOOR), LOG8_FLOOR)
        as_float = np.float16 if dtype == "log8" else dtype  # signed blocks: float16 under log8
        return np.asarray(b.attn, dtype=as_float).astype(np.float32)

    return replace(export, blocks=[replace(b, attn=values(b)) for b in export.blocks])


def save(path: str | Path, export: AttentionExport, dtype=np.float32) -> Path:
    """Write ``export`` to ``path`` (.npz, compressed). ``dtype=np.float16`` halves the size; ``dtype="log8"``
    stores non-negative blocks as uint8 log codes with a float32 scale per row (a quarter of float32 before
    compression, values within 1.8% down to 1e-4 of each row's maximum) and signed blocks as float16."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in asdict(export).items() if k not in ("blocks", "images")}
    meta["format"] = FORMAT
    log8 = {b.key: dtype == "log8" and _log8_able(b.attn) for b in export.blocks}
    meta["blocks"] = [
        {"key": b.key, "stage": b.stage, "block": b.block, "grid": list(b.grid), "ordering": b.ordering,
         "num_routes": int(b.routes.shape[0]), "merged": b.merged,
         **({"encoding": "log8", "floor": LOG8_FLOOR} if log8[b.key] else {})}
        for b in export.blocks
    ]
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta)), "images": np.asarray(export.images, np.uint8)}
    for b in export.blocks:
        if log8[b.key]:
            arrays[f"{b.key}/attn_log8"], arrays[f"{b.key}/attn_scale"] = _log8_encode(b.attn, LOG8_FLOOR)
        else:
            arrays[f"{b.key}/attn"] = np.asarray(b.attn, dtype=np.float16 if dtype == "log8" else dtype)
        arrays[f"{b.key}/routes"] = np.asarray(b.routes, dtype=np.int32)
    np.savez_compressed(path, **arrays)
    return path


def load(path: str | Path) -> AttentionExport:
    """Read an export written by :func:`save`; attention arrays come back as float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"attention export {path} does not exist")
    with np.load(path, allow_pickle=False) as data:
        if "meta" not in data.files:
            raise ValueError(f"{path} is not a patchorder attention export (no 'meta' entry)")
        meta = json.loads(str(data["meta"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: unsupported attention export format {meta.get('format')!r}, expected {FORMAT}")
        blocks = [
            BlockAttention(
                stage=m["stage"], block=m["block"], grid=tuple(m["grid"]), ordering=m["ordering"],
                attn=_read_attn(data, m), routes=data[f"{m['key']}/routes"].astype(np.int64),
            )
            for m in meta.pop("blocks")
        ]
        images = data["images"]
    meta.pop("format")
    return AttentionExport(blocks=blocks, images=images, **meta)


def _read_attn(data, block_meta: dict) -> np.ndarray:
    key = block_meta["key"]
    if block_meta.get("encoding") == "log8":
        return _log8_decode(data[f"{key}/attn_log8"], data[f"{key}/attn_scale"], float(block_meta["floor"]))
    return data[f"{key}/attn"].astype(np.float32)
