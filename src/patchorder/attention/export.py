"""The attention export: every requested block's patch-space attention for a probe batch, in one .npz file.

File layout (a contract shared by the callbacks, eval.py, the explorer and the study):
  "meta"          0-d array holding a JSON string (see :class:`AttentionExport` fields and ``BlockAttention``)
  "images"        uint8 (N, H, W, 3): the probe images as they can be displayed
  "<key>/attn"    float16/float32 (N, L, L) when merged, (N, K, L, L) when routes are kept apart; or, saved with
                  dtype="log8" (non-negative blocks), "<key>/attn_scale" float32 row maxima (shape without the last
                  axis) and uint8 log codes of the attention's shape (see patchorder.attention.log8), as they are
                  (block encoding "log8": "<key>/attn_log8") or as their 2-D differences (encoding "log8_diff":
                  "<key>/attn_log8_diff"), whichever deflates smaller for that block
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

from patchorder.attention.log8 import (
    dequantise_log8, difference_codes, differences_pay, quantise_log8, undo_difference_codes,
)
from patchorder.attention.parallel import each_matrix

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

    def merged_attention(self) -> np.ndarray:
        """(N, L, L): the merged attention, or the sum of the route matrices when the export keeps routes apart.

        The sum equals the merged attention for linear reductions ("mean"); for "mean_abs" it bounds it from
        above (routes are merged per channel before the absolute value).
        """
        return self.attn if self.merged else self.attn.sum(axis=1)

    def mean_attention(self) -> np.ndarray:
        """(L, L): :meth:`merged_attention` averaged over images."""
        return self.merged_attention().mean(axis=0)


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

    def image_names(self) -> list[str]:
        """One caption per probe image: "image 3: <class name>", "image 3: class 7" or "image 3"."""
        names = []
        for n in range(len(self.images)):
            label = self.labels[n] if n < len(self.labels) else None
            if label is None:
                names.append(f"image {n}")
            elif self.class_names and 0 <= label < len(self.class_names):
                names.append(f"image {n}: {self.class_names[label]}")
            else:
                names.append(f"image {n}: class {label}")
        return names


LOG8_FLOOR = 1e-4  # log8 storage keeps values down to 1e-4 of their row's maximum, within 1.8%


def _log8_able(attn: np.ndarray) -> bool:
    return attn.size == 0 or float(attn.min()) >= 0


def _log8_encode(attn: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Codes and row scales, one (L, L) matrix at a time (the float64 work array stays O(L^2) per thread)."""
    matrices = attn.reshape(-1, *attn.shape[-2:])
    codes = np.empty(matrices.shape, np.uint8)
    scales = np.empty(matrices.shape[:-1], np.float32)

    def encode(i: int) -> None:
        codes[i], scales[i] = quantise_log8(matrices[i], floor)

    each_matrix(encode, len(matrices))
    return codes.reshape(attn.shape), scales.reshape(attn.shape[:-1])


def _log8_decode(codes: np.ndarray, scales: np.ndarray, floor: float) -> np.ndarray:
    """:func:`dequantise_log8` one (L, L) matrix at a time (its float64 temporaries stay O(L^2) per thread)."""
    matrices = codes.reshape(-1, *codes.shape[-2:])
    rows = scales.reshape(-1, scales.shape[-1])
    out = np.empty(matrices.shape, np.float32)

    def decode(i: int) -> None:
        out[i] = dequantise_log8(matrices[i], rows[i], floor)

    each_matrix(decode, len(matrices))
    return out.reshape(codes.shape)


def log8_codes(export: AttentionExport) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per block key, the log8 (codes, row scales) that ``save(..., dtype="log8")`` stores for the non-negative
    blocks. Computed once, they serve :func:`stored` and :func:`save` both (quantising is the costly part)."""
    return {b.key: _log8_encode(b.attn, LOG8_FLOOR) for b in export.blocks if _log8_able(b.attn)}


def stored(export: AttentionExport, dtype=np.float32,
           codes: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> AttentionExport:
    """The export as :func:`load` would return it after ``save(..., dtype=dtype)``: compute metrics and pictures
    from this, and they describe exactly what the file holds. ``codes``: :func:`log8_codes` of ``export``."""
    from dataclasses import replace

    if dtype in (np.float32, "float32"):
        return export
    if dtype == "log8" and codes is None:
        codes = log8_codes(export)

    def values(b: BlockAttention) -> np.ndarray:
        if dtype == "log8" and b.key in codes:
            return _log8_decode(*codes[b.key], LOG8_FLOOR)
        as_float = np.float16 if dtype == "log8" else dtype  # signed blocks: float16 under log8
        return np.asarray(b.attn, dtype=as_float).astype(np.float32)

    return replace(export, blocks=[replace(b, attn=values(b)) for b in export.blocks])


def save(path: str | Path, export: AttentionExport, dtype=np.float32,
         codes: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> Path:
    """Write ``export`` to ``path`` (.npz, compressed). ``dtype=np.float16`` halves the size; ``dtype="log8"``
    stores non-negative blocks as uint8 log codes with a float32 scale per row (a quarter of float32 before
    compression, values within 1.8% down to 1e-4 of each row's maximum; large grids as the codes' 2-D differences,
    which deflate smaller) and signed blocks as float16. ``codes``: :func:`log8_codes` of ``export`` or of the
    export it was :func:`stored` from (the same codes: quantising stored values gives them back), if at hand."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in asdict(export).items() if k not in ("blocks", "images")}
    meta["format"] = FORMAT
    arrays: dict[str, np.ndarray] = {"images": np.asarray(export.images, np.uint8)}
    meta["blocks"] = []
    for b in export.blocks:
        encoding = {}
        if dtype == "log8" and _log8_able(b.attn):
            block_codes, arrays[f"{b.key}/attn_scale"] = (codes or {}).get(b.key) or _log8_encode(b.attn, LOG8_FLOOR)
            name = "log8_diff" if differences_pay(block_codes) else "log8"
            arrays[f"{b.key}/attn_{name}"] = difference_codes(block_codes) if name == "log8_diff" else block_codes
            encoding = {"encoding": name, "floor": LOG8_FLOOR}
        else:
            arrays[f"{b.key}/attn"] = np.asarray(b.attn, dtype=np.float16 if dtype == "log8" else dtype)
        arrays[f"{b.key}/routes"] = np.asarray(b.routes, dtype=np.int32)
        meta["blocks"].append({"key": b.key, "stage": b.stage, "block": b.block, "grid": list(b.grid),
                               "ordering": b.ordering, "num_routes": int(b.routes.shape[0]), "merged": b.merged,
                               **encoding})
    arrays["meta"] = np.array(json.dumps(meta))
    _write_npz(path, arrays)
    return path


NPZ_DEFLATE_LEVEL = 4  # VMamba-T's log8 codes: 2.7x faster than numpy's level 6, 3% larger (README, benchmarks)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """What ``np.savez_compressed`` writes (np.load reads it), deflated at :data:`NPZ_DEFLATE_LEVEL`."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=NPZ_DEFLATE_LEVEL) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_META_TYPES = {"model": str, "ordering": str, "scheme": str, "reduce": str, "merge": str, "extra": dict}
_BLOCK_CHECKS = {
    "stage": lambda v: _is_int(v) and v >= 0,
    "block": lambda v: _is_int(v) and v >= 0,
    "grid": lambda v: isinstance(v, list) and len(v) == 2 and all(_is_int(x) and x > 0 for x in v),
    "ordering": lambda v: isinstance(v, str),
    "num_routes": lambda v: _is_int(v) and v > 0,
    "merged": lambda v: isinstance(v, bool),
}


def check_meta(meta: dict, path: Path | str) -> None:
    """An export is a file from a user and its fields end up in HTML: every field must have its type (ints are
    ints, names are strings), and block keys must be what the stage and block numbers say."""
    def bad(field: str, value: Any) -> ValueError:
        return ValueError(f"{path}: attention export field {field} has an invalid value {value!r:.80}")

    for field, kind in _META_TYPES.items():
        if field in meta and not isinstance(meta[field], kind):
            raise bad(field, meta[field])
    if not isinstance(meta.get("labels", []), list) or not all(_is_int(v) for v in meta.get("labels", [])):
        raise bad("labels", meta.get("labels"))
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(v, str) for v in names)):
        raise bad("class_names", names)
    if not isinstance(meta.get("blocks"), list):
        raise bad("blocks", meta.get("blocks"))
    for i, block in enumerate(meta["blocks"]):
        if not isinstance(block, dict):
            raise bad(f"blocks[{i}]", block)
        for field, ok in _BLOCK_CHECKS.items():
            if not ok(block.get(field)):
                raise bad(f"blocks[{i}].{field}", block.get(field))
        if block.get("key") != f"s{block['stage']}b{block['block']}":
            raise bad(f"blocks[{i}].key", block.get("key"))


def load(path: str | Path) -> AttentionExport:
    """Read an export written by :func:`save`; attention arrays come back as float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"attention export {path} does not exist")
    with np.load(path, allow_pickle=False) as data:
        if "meta" not in data.files:
            raise ValueError(f"{path} is not a patchorder attention export (no 'meta' entry)")
        meta = json.loads(str(data["meta"]))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise ValueError(f"{path}: unsupported attention export format {found!r}, expected {FORMAT}")
        check_meta(meta, path)
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
    encoding = block_meta.get("encoding")
    if encoding in ("log8", "log8_diff"):
        codes = data[f"{key}/attn_{encoding}"]
        if encoding == "log8_diff":
            codes = undo_difference_codes(codes)
        return _log8_decode(codes, data[f"{key}/attn_scale"], float(block_meta["floor"]))
    return data[f"{key}/attn"].astype(np.float32)
