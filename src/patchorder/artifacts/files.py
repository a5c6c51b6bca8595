"""An attention export written as plain files, by one implementation for both paths that produce attention: the
AttentionLogger callback during training and ``eval.py attention.export=true`` for a checkpoint. For a tag such
as ``attention_final`` it writes, in one directory:

  attention_final.npz              the export (patchorder.attention.save; the explorer and studies read it)
  attention_final_metrics.json     metrics_table rows per block, stage_summary rows, and what was exported
  attention_final_embeddings.csv   the 2-D embeddings (blocks per stage, patches per block), one row per point
  attention_final_images/*.png     colour-mapped matrices and per-patch heatmaps (uint8 RGB)
  attention_final.html             the interactive explorer (optional)
"""
from __future__ import annotations

import csv
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from patchorder.artifacts.pictures import strip
from patchorder.artifacts.compute import PhaseClock, progress_bar
from patchorder.artifacts.options import NPZ_DTYPES, AttentionOptions
from patchorder.artifacts.render import EmbeddingTable, RenderedAttention, render_attention
from patchorder.attention import AttentionExport, EmbeddingCache, save
from patchorder.attention.export import log8_codes, stored

CSV_COLUMNS = ["mode", "stage", "block", "image", "label", "class_name", "patch", "row", "col", "seq_pos",
               "method", "x", "y"]


@dataclass
class WrittenAttention:
    paths: dict[str, Any]  # npz, metrics, embeddings, images {key: png}, report
    rendered: RenderedAttention
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds of each step (also in the metrics JSON)


# VMamba-T's 42 pictures on photographs: 2.4x faster to deflate than at Pillow's level 6, 7% larger (20.9 MB).
PNG_DEFLATE_LEVEL = 3


def picture_filename(key: str) -> str:
    return key.replace("/", "_") + ".png"


def write_png(path: Path, pictures: list[np.ndarray]) -> Path:
    """One picture as is, several side by side (see patchorder.artifacts.pictures.strip)."""
    from PIL import Image

    array = pictures[0] if len(pictures) == 1 else strip(pictures)
    Image.fromarray(array, mode="RGB").save(path, compress_level=PNG_DEFLATE_LEVEL)
    return path


def write_attention_artifacts(export: AttentionExport, out_dir: str | Path, tag: str, options: AttentionOptions,
                              report: bool = False, meta: dict | None = None) -> WrittenAttention:
    """Render ``export`` and write the files listed in this module's docstring under ``out_dir``."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Everything below is computed from the values as stored, so the files agree with each other exactly.
    clock = PhaseClock()
    dtype = NPZ_DTYPES[options.npz_dtype]
    codes = log8_codes(export) if dtype == "log8" else None  # once, for the stored values and the file
    export = stored(export, dtype, codes)
    clock.lap("storage_rounding")
    paths: dict[str, Any] = {"npz": out_dir / f"{tag}.npz"}
    # The files are deflated on a second thread (zlib and PNG encoding release the GIL) while this one renders
    # and builds the explorer, which mostly run on one core.
    with ThreadPoolExecutor(1) as writer, progress_bar(4 if report else 3, f"attention: {tag}") as bar:
        npz = writer.submit(clock.timed, "npz", save, paths["npz"], export, dtype=dtype, codes=codes)
        bar.set_postfix_str("pictures, metrics, embeddings")
        cache = EmbeddingCache()  # the explorer reuses these embeddings' projections
        rendered = render_attention(export, options, clock=clock, cache=cache)
        bar.update()
        pictures = writer.submit(clock.timed, "png_csv", _write_pictures, out_dir, tag, rendered)
        if report:
            from dataclasses import replace

            from patchorder.explore import build_report

            bar.set_postfix_str("explorer")
            # From the export in memory (no re-reading of the .npz) with the metrics already computed.
            source = replace(export, extra={**export.extra, "source": str(paths["npz"])})
            paths["report"] = build_report(source, out_dir / f"{tag}.html", methods=options.report_methods,
                                           seed=options.seed, metrics=rendered.metrics, colour_scale=options.scale,
                                           log_floor=options.log_floor, codes=codes, embedding_cache=cache)
            clock.lap("explorer")
            bar.update()
        bar.set_postfix_str(".npz, png, csv")
        npz.result()
        bar.update()
        paths.update(pictures.result())
        clock.lap("files_wait")  # what the two file jobs took beyond the work above
        bar.update()
    seconds = time.perf_counter() - started
    document = {
        "tag": tag, **(meta or {}), "model": export.model, "ordering": export.ordering, "scheme": export.scheme,
        "merge": export.merge, "reduce": export.reduce, "num_images": int(len(export.images)),
        "labels": list(export.labels), "npz": paths["npz"].name, "blocks": rendered.metrics,
        "stages": rendered.stages, "scan_usage": rendered.scan_usage or None, "write_seconds": round(seconds, 3),
        "phase_seconds": clock.seconds,
    }
    paths["metrics"] = out_dir / f"{tag}_metrics.json"
    paths["metrics"].write_text(json.dumps(document, indent=2) + "\n")
    return WrittenAttention(paths, rendered, seconds, clock.seconds)


def _write_pictures(out_dir: Path, tag: str, rendered: RenderedAttention) -> dict[str, Any]:
    """The PNGs and the embeddings CSV; returns their paths (keys "images" and, with embeddings, "embeddings")."""
    image_dir = out_dir / f"{tag}_images"
    image_dir.mkdir(exist_ok=True)
    paths = {"images": {key: write_png(image_dir / picture_filename(key), [p for p, _ in items])
                        for key, items in rendered.pictures.items()}}
    if rendered.embeddings:
        paths["embeddings"] = _write_embeddings_csv(out_dir / f"{tag}_embeddings.csv", rendered.embeddings)
    return paths


def _write_embeddings_csv(path: Path, tables: dict[str, EmbeddingTable]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for table in tables.values():
            for row in table.rows:
                writer.writerow({"mode": table.mode, **dict(zip(table.columns, row))})
    return path


def paths_as_strings(paths: dict[str, Any]) -> dict[str, Any]:
    """The paths of a WrittenAttention as JSON-ready strings (for results.json)."""
    return {k: ({kk: str(vv) for kk, vv in v.items()} if isinstance(v, dict) else str(v)) for k, v in paths.items()}
