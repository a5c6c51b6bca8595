"""An attention export turned into what people look at: pictures (uint8 RGB, see :mod:`.pictures`), metric rows
and embedding tables, in one :class:`RenderedAttention` that the files, W&B and the explorer all use."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from patchorder.artifacts.compute import PhaseClock
from patchorder.artifacts.pictures import heatmap_picture, matrix_picture, query_cell, resolve_queries
from patchorder.artifacts.options import AttentionOptions
from patchorder.attention import (
    AttentionExport, EmbeddingCache, block_embeddings, metrics_table, patch_embeddings, stage_summary,
)
from patchorder.attention.metrics import is_number, scalar_metrics
from patchorder.attention.scan_usage import MODEL_COLUMNS

PATCH_COLUMNS = ["stage", "block", "patch", "row", "col", "seq_pos", "x", "y", "method"]
BLOCK_COLUMNS = ["stage", "block", "image", "label", "class_name", "x", "y", "method"]


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


def render_attention(export: AttentionExport, options: AttentionOptions, clock: PhaseClock | None = None,
                     cache: EmbeddingCache | None = None) -> RenderedAttention:
    """Pictures, metric rows and embedding tables of ``export``; ``clock`` (when given) laps each of the three;
    ``cache`` keeps the embeddings' projections for a later caller (the explorer)."""
    clock = clock or PhaseClock()
    draw = {"cmap": options.cmap, "scale": options.scale, "floor": options.log_floor}
    captions = export.image_names()
    points = resolve_queries(options.query_patches, _stage0_grid(export))
    pictures: dict[str, list[tuple[np.ndarray, str]]] = {}
    for b in export.blocks:
        per_image = b.merged_attention()  # (N, L, L)
        pictures[f"{b.key}/matrix"] = [(matrix_picture(b.mean_attention(), min_px=options.min_px,
                                                       max_px=options.max_px, **draw), "mean over images")]
        if options.per_image_matrices:
            pictures[f"{b.key}/matrix_per_image"] = [
                (matrix_picture(m, min_px=options.min_px, max_px=options.max_px, **draw), c)
                for m, c in zip(per_image, captions)]
        for row, col in dict.fromkeys(query_cell(p, b.grid) for p in points):
            q = row * b.grid[1] + col
            pictures[f"{b.key}/patch_r{row}c{col}"] = [
                (heatmap_picture(image, m[q], b.grid, (row, col), min_px=options.min_px, **draw), c)
                for image, m, c in zip(export.images, per_image, captions)]
    clock.lap("pictures")
    rows = metrics_table(export)
    clock.lap("metrics")
    embeddings = _embedding_tables(export, options, cache) if options.embeddings else {}
    clock.lap("embeddings")
    return RenderedAttention(pictures, rows, stage_summary(rows), embeddings, export.extra.get("scan_usage") or {})


def _embedding_tables(export: AttentionExport, options: AttentionOptions,
                      cache: EmbeddingCache | None) -> dict[str, EmbeddingTable]:
    tables = {}
    names = export.class_names or []
    for stage in export.stages():
        for method, emb in block_embeddings(export, stage, options.methods, options.seed, cache).items():
            rows = []
            for (x, y), p in zip(emb.coords.tolist(), emb.points):
                label = p.get("label")
                name = names[label] if label is not None and label < len(names) else None
                rows.append([stage, p["block"], p["image"], label, name, x, y, method])
            tables[f"stage{stage}/blocks_{method}"] = EmbeddingTable(
                BLOCK_COLUMNS, rows, f"stage {stage}: blocks x images, {method}" + _note(emb.note), "blocks")
        for b in (b for b in export.blocks if b.stage == stage):
            layouts = patch_embeddings(export, stage, b.block, options.methods, options.seed, cache)
            for method, emb in layouts.items():
                rows = [[stage, b.block, p["patch"], p["row"], p["col"], p["seq_pos"], x, y, method]
                        for (x, y), p in zip(emb.coords.tolist(), emb.points)]
                tables[f"{b.key}/patches_{method}"] = EmbeddingTable(
                    PATCH_COLUMNS, rows, f"{b.key}: patches, {method}" + _note(emb.note), "patches")
    return tables


def _note(note: str) -> str:
    return f" ({note})" if note else ""
