"""An attention export turned into what people look at, and written next to it as plain files.

One implementation for both paths that produce attention: the AttentionLogger callback during training and
``eval.py attention.export=true`` for a checkpoint. For a tag such as ``attention_final`` it writes, in one
directory:

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from patchorder.attention import (
    AttentionExport, block_embeddings, extract_attention, metrics_table, patch_embeddings, save, stage_summary,
)
from patchorder.attention.export import stored
from patchorder.attention.embedding import METHODS
from patchorder.attention.extract import EXPORT_REDUCES
from patchorder.attention.kernel import MERGES
from patchorder.attention.metrics import is_number, scalar_metrics
from patchorder.attention.scan_usage import MODEL_COLUMNS, scan_usage
from patchorder.callbacks import render
from patchorder.errors import ConfigError

PATCH_COLUMNS = ["stage", "block", "patch", "row", "col", "seq_pos", "x", "y", "method"]
BLOCK_COLUMNS = ["stage", "block", "image", "label", "class_name", "x", "y", "method"]
CSV_COLUMNS = ["mode", "stage", "block", "image", "label", "class_name", "patch", "row", "col", "seq_pos",
               "method", "x", "y"]
NPZ_DTYPES = {"float32": np.float32, "float16": np.float16, "log8": "log8"}  # see patchorder.attention.export.save


@dataclass
class AttentionOptions:
    """What an attention export contains and how it is drawn (the same keys in the callback and eval configs)."""

    stages: list[int] | None = None  # None: every stage
    blocks: list[int] | None = None  # None: every block (indices within each stage)
    num_images: int = 8  # probe images (validation split, spread over classes, the same every time)
    merge: str = "sum"  # "sum": the cross-merged operator; "none": each route kept (pictures sum them)
    reduce: str = "mean_abs"  # channel reduction: "mean_abs" or "mean"
    query_patches: list = field(default_factory=lambda: ["centre", "corner"])
    per_image_matrices: bool = False  # also draw each image's matrix, not only the image mean
    embeddings: bool = True
    methods: list[str] = field(default_factory=lambda: ["pca"])  # of attention.embedding.METHODS (umap compiles once per process)
    cmap: str = "inferno"
    scale: str = "log"  # colour scale of pictures: "log" (floor log_floor of the maximum) or "linear"
    log_floor: float = 1e-3
    min_px: int = 256  # small pictures are enlarged (nearest) to at least this side
    max_px: int = 1024  # matrices larger than this are averaged over tiles
    npz_dtype: str = "float32"  # float16 halves the .npz; log8 (the configs' default) stores uint8 log codes
    report_methods: list[str] = field(default_factory=lambda: ["pca", "tsne"])  # the HTML explorer's layouts
    seed: int = 0  # t-SNE / UMAP
    # Scan usage (patchorder.attention.scan_usage): each block's output is also computed with this ordering;
    # None: not measured.
    swap_ordering: str | None = "random"

    def __post_init__(self) -> None:
        self.stages = _int_list("stages", self.stages)
        self.blocks = _int_list("blocks", self.blocks)
        self.query_patches = [list(q) if isinstance(q, Sequence) and not isinstance(q, str) else q
                              for q in (self.query_patches or [])]
        self.methods, self.report_methods = list(self.methods or []), list(self.report_methods or [])
        if not isinstance(self.num_images, int) or self.num_images < 1:
            raise ConfigError(f"num_images={self.num_images!r} must be a positive integer (probe images)")
        if self.merge not in MERGES:
            raise ConfigError(f"merge={self.merge!r}: choose one of {', '.join(MERGES)}")
        if self.reduce not in EXPORT_REDUCES:
            raise ConfigError(f"reduce={self.reduce!r}: choose one of {', '.join(EXPORT_REDUCES)}")
        for name, methods in (("methods", self.methods), ("report_methods", self.report_methods)):
            unknown = [m for m in methods if m not in METHODS]
            if unknown:
                raise ConfigError(f"{name}={methods}: unknown {unknown}; choose from {', '.join(METHODS)}")
        if self.embeddings and not self.methods:
            raise ConfigError(f"embeddings=true needs at least one of methods=[{', '.join(METHODS)}]")
        if self.npz_dtype not in NPZ_DTYPES:
            raise ConfigError(f"npz_dtype={self.npz_dtype!r}: choose one of {', '.join(NPZ_DTYPES)}")
        if not (isinstance(self.min_px, int) and isinstance(self.max_px, int) and 1 <= self.min_px <= self.max_px):
            raise ConfigError(f"min_px={self.min_px!r}, max_px={self.max_px!r}: need integers 1 <= min_px <= max_px")
        try:
            render.check_scale(self.scale, self.log_floor)
            render.check_colormap(self.cmap)
            for spec in self.query_patches:  # their form; ranges are checked once the grid is known
                render.parse_query(spec)
        except ValueError as error:
            raise ConfigError(str(error)) from None


def make_options(settings: dict[str, Any], where: str) -> AttentionOptions:
    """AttentionOptions from config keys, with an error naming the keys that exist when one is unknown."""
    from dataclasses import fields

    known = [f.name for f in fields(AttentionOptions)]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}; the attention options are {', '.join(known)}")
    return AttentionOptions(**settings)


def _int_list(name: str, values: Any) -> list[int] | None:
    if values is None:
        return None
    if isinstance(values, int) and not isinstance(values, bool):
        return [values]
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={values!r} must be null (all) or a list of indices, e.g. [0, 1]") from None
    if not out or min(out) < 0:
        raise ConfigError(f"{name}={values!r} must be null (all) or a non-empty list of indices >= 0")
    return out


# --- the probe export --------------------------------------------------------------------------------------
def check_selection(model: nn.Module, options: AttentionOptions, image_size: Sequence[int]) -> None:
    """Fail early (before training) when stages, blocks or query patches do not exist in ``model``."""
    from patchorder.models.ss2d import SS2D

    present = sorted({(op.stage, op.block) for op in model.modules() if isinstance(op, SS2D)})
    if not present:
        raise ConfigError(f"{type(model).__name__} has no SS2D (VMamba) block: there is no attention to log")
    stages = sorted({s for s, _ in present})
    missing = [s for s in options.stages or [] if s not in stages]
    if missing:
        raise ConfigError(f"attention stages {missing} do not exist: the model has stages {stages}")
    chosen = [(s, b) for s, b in present if options.stages is None or s in options.stages]
    missing = [b for b in options.blocks or [] if b not in {b for _, b in chosen}]
    if missing:
        raise ConfigError(f"attention blocks {missing} exist in none of the chosen stages; the model has "
                          f"(stage, block) {present}")
    if hasattr(model, "stage_grids"):
        grid0 = model.stage_grids(int(image_size[0]), int(image_size[1]))[0]
        try:
            render.resolve_queries(options.query_patches, grid0)
        except ValueError as error:
            raise ConfigError(str(error)) from None


def progress_bar(total: int, what: str):
    """A progress bar on stderr for the minutes a large model's attention takes (hidden when not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="step", leave=False, dynamic_ncols=True, disable=None)


def _selected_blocks(model: nn.Module, options: AttentionOptions) -> int:
    from patchorder.models.ss2d import SS2D

    return sum(1 for op in model.modules() if isinstance(op, SS2D)
               and (options.stages is None or op.stage in options.stages)
               and (options.blocks is None or op.block in options.blocks))


def probe_export(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, datamodule: Any,
                 options: AttentionOptions) -> AttentionExport:
    """The attention of ``model`` on the probe batch (eval mode, no grad; the model's mode is restored)."""
    class_names = getattr(datamodule, "class_names", None)
    with progress_bar(_selected_blocks(model, options), "attention: blocks") as bar:
        export = extract_attention(model, images, stages=options.stages, blocks=options.blocks, merge=options.merge,
                                   reduce=options.reduce, labels=labels.tolist(), class_names=class_names,
                                   progress=lambda key: (bar.set_postfix_str(key, refresh=False), bar.update()))
    if hasattr(datamodule, "to_display"):  # the data's own normalisation, not the model's default
        export.images = np.asarray(datamodule.to_display(images.cpu()))
    if options.swap_ordering is not None:
        export.extra["scan_usage"] = scan_usage(model, images, swap=options.swap_ordering)
    return export


# --- rendering ---------------------------------------------------------------------------------------------
@dataclass
class EmbeddingTable:
    columns: list[str]
    rows: list[list]
    title: str
    mode: str  # "patches" or "blocks"


@dataclass
class RenderedAttention:
    """Pictures (uint8 RGB, one or one per image, with captions), metrics and embedding tables of an export."""

    pictures: dict[str, list[tuple[np.ndarray, str]]]  # "s0b1/matrix", "s0b1/patch_r3c4", ...
    metrics: list[dict]  # metrics_table rows
    stages: list[dict]  # stage_summary rows
    embeddings: dict[str, EmbeddingTable]  # "s0b1/patches_pca", "stage0/blocks_pca"
    scan_usage: dict = field(default_factory=dict)  # patchorder.attention.scan_usage's result, when measured

    def scalars(self) -> dict[str, float]:
        """Numeric metrics as flat keys: "s0b1/distance", "stage0/neighbour_mass_r1", ... (None values left out)."""
        out = {}
        for prefix, rows in (("", self.metrics), ("stage", self.stages)):
            for row in rows:
                name = row["key"] if not prefix else f"stage{row['stage']}"
                for metric in scalar_metrics():
                    if is_number(row.get(metric.name)):
                        out[f"{name}/{metric.name}"] = float(row[metric.name])
        out.update({f"scan/{k}": float(v) for k, v in self.scan_usage.items() if k in MODEL_COLUMNS})
        return out


def _stage0_grid(export: AttentionExport) -> tuple[int, int]:
    """Stage 0's grid: as the model said it when the export was made (``extract_attention`` records it), else
    the grid of an exported stage-0 block (an export put together by hand)."""
    grids = export.extra.get("stage_grids")
    if grids:
        return int(grids[0][0]), int(grids[0][1])
    stage0 = [b for b in export.blocks if b.stage == 0]
    if not stage0:
        raise ValueError("this attention export records no stage_grids and has no stage-0 block: the query patches "
                         "cannot be placed; export it again with extract_attention")
    return tuple(stage0[0].grid)


def render_attention(export: AttentionExport, options: AttentionOptions) -> RenderedAttention:
    draw = {"cmap": options.cmap, "scale": options.scale, "floor": options.log_floor}
    captions = export.image_names()
    points = render.resolve_queries(options.query_patches, _stage0_grid(export))
    pictures: dict[str, list[tuple[np.ndarray, str]]] = {}
    for b in export.blocks:
        per_image = b.merged_attention()  # (N, L, L)
        pictures[f"{b.key}/matrix"] = [(render.matrix_picture(b.mean_attention(), min_px=options.min_px,
                                                              max_px=options.max_px, **draw), "mean over images")]
        if options.per_image_matrices:
            pictures[f"{b.key}/matrix_per_image"] = [
                (render.matrix_picture(m, min_px=options.min_px, max_px=options.max_px, **draw), c)
                for m, c in zip(per_image, captions)]
        for row, col in dict.fromkeys(render.query_cell(p, b.grid) for p in points):
            q = row * b.grid[1] + col
            pictures[f"{b.key}/patch_r{row}c{col}"] = [
                (render.heatmap_picture(image, m[q], b.grid, (row, col), min_px=options.min_px, **draw), c)
                for image, m, c in zip(export.images, per_image, captions)]
    rows = metrics_table(export)
    embeddings = _embedding_tables(export, options) if options.embeddings else {}
    return RenderedAttention(pictures, rows, stage_summary(rows), embeddings, export.extra.get("scan_usage") or {})


def _embedding_tables(export: AttentionExport, options: AttentionOptions) -> dict[str, EmbeddingTable]:
    tables = {}
    names = export.class_names or []
    for stage in export.stages():
        for method, emb in block_embeddings(export, stage, options.methods, options.seed).items():
            rows = []
            for (x, y), p in zip(emb.coords.tolist(), emb.points):
                label = p.get("label")
                name = names[label] if label is not None and label < len(names) else None
                rows.append([stage, p["block"], p["image"], label, name, x, y, method])
            tables[f"stage{stage}/blocks_{method}"] = EmbeddingTable(
                BLOCK_COLUMNS, rows, f"stage {stage}: blocks x images, {method}" + _note(emb.note), "blocks")
        for b in (b for b in export.blocks if b.stage == stage):
            for method, emb in patch_embeddings(export, stage, b.block, options.methods, options.seed).items():
                rows = [[stage, b.block, p["patch"], p["row"], p["col"], p["seq_pos"], x, y, method]
                        for (x, y), p in zip(emb.coords.tolist(), emb.points)]
                tables[f"{b.key}/patches_{method}"] = EmbeddingTable(
                    PATCH_COLUMNS, rows, f"{b.key}: patches, {method}" + _note(emb.note), "patches")
    return tables


def _note(note: str) -> str:
    return f" ({note})" if note else ""


# --- files -------------------------------------------------------------------------------------------------
@dataclass
class WrittenAttention:
    paths: dict[str, Any]  # npz, metrics, embeddings, images {key: png}, report
    rendered: RenderedAttention
    seconds: float


def picture_filename(key: str) -> str:
    return key.replace("/", "_") + ".png"


def write_png(path: Path, pictures: list[np.ndarray]) -> Path:
    """One picture as is, several side by side (see render.strip)."""
    from PIL import Image

    array = pictures[0] if len(pictures) == 1 else render.strip(pictures)
    Image.fromarray(array, mode="RGB").save(path)
    return path


def write_attention_artifacts(export: AttentionExport, out_dir: str | Path, tag: str, options: AttentionOptions,
                              report: bool = False, meta: dict | None = None) -> WrittenAttention:
    """Render ``export`` and write the files listed in this module's docstring under ``out_dir``."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Everything below is computed from the values as stored, so the files agree with each other exactly.
    export = stored(export, NPZ_DTYPES[options.npz_dtype])
    with progress_bar(4 if report else 3, f"attention: {tag}") as bar:
        bar.set_postfix_str("pictures, metrics, embeddings")
        rendered = render_attention(export, options)
        bar.update()
        bar.set_postfix_str(".npz")
        paths: dict[str, Any] = {"npz": save(out_dir / f"{tag}.npz", export, dtype=NPZ_DTYPES[options.npz_dtype])}
        bar.update()
        bar.set_postfix_str("png, csv")
        image_dir = out_dir / f"{tag}_images"
        image_dir.mkdir(exist_ok=True)
        paths["images"] = {key: write_png(image_dir / picture_filename(key), [p for p, _ in items])
                           for key, items in rendered.pictures.items()}
        if rendered.embeddings:
            paths["embeddings"] = _write_embeddings_csv(out_dir / f"{tag}_embeddings.csv", rendered.embeddings)
        bar.update()
        if report:
            from dataclasses import replace

            from patchorder.explore import build_report

            bar.set_postfix_str("explorer")
            # From the export in memory (no re-reading of the .npz) with the metrics already computed.
            source = replace(export, extra={**export.extra, "source": str(paths["npz"])})
            paths["report"] = build_report(source, out_dir / f"{tag}.html", methods=options.report_methods,
                                           seed=options.seed, metrics=rendered.metrics, colour_scale=options.scale,
                                           log_floor=options.log_floor)
            bar.update()
    seconds = time.perf_counter() - started
    document = {
        "tag": tag, **(meta or {}), "model": export.model, "ordering": export.ordering, "scheme": export.scheme,
        "merge": export.merge, "reduce": export.reduce, "num_images": int(len(export.images)),
        "labels": list(export.labels), "npz": paths["npz"].name, "blocks": rendered.metrics,
        "stages": rendered.stages, "scan_usage": rendered.scan_usage or None, "write_seconds": round(seconds, 3),
    }
    paths["metrics"] = out_dir / f"{tag}_metrics.json"
    paths["metrics"].write_text(json.dumps(document, indent=2) + "\n")
    return WrittenAttention(paths, rendered, seconds)


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
