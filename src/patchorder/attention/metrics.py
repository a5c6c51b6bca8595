"""Numbers for what the seed paper only looked at: how far, how local, how sequence-bound a block attends.

All functions take patch-space attention as exported (rows = query patch, columns = key patch, raster order)
with any leading dimensions (images, routes). Row weights are |attn| normalised to sum 1 per row; rows with no
mass are left out. Results are plain floats / lists so they can go to JSON, W&B and the HTML explorer.

The registry :data:`METRICS` is the one list of per-block metrics: :func:`metrics_table` computes every entry,
and the callbacks (W&B scalars, metrics.json), the explorer's metrics panel and the ordering study (stage
tables, figure panels, study.md) show every scalar entry, by its ``label`` and ``description``.

Adding a metric is one entry in :data:`METRICS`::

    Metric("far_mass", "mass beyond 4 patches", "Far mass (share of each row's attention more than 4 patches "
           "away)", lambda v: 1 - neighbour_mass(v.attn, v.grid, 4))

``compute`` gets a :class:`BlockView`: the block (its routes, grid, per-route attention when the export keeps
routes apart), its merged attention ``attn`` (N, L, L), the previous block of its stage, and ``values``, the
results of the entries listed before it (so an entry may reuse an earlier one, as ``distance_relative`` does).
It returns a float (NaN or None when the block has no value). An entry with ``scalar=False`` may return any
JSON value (a list per route, say); it is kept in metrics_table rows and metrics.json only.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from patchorder.attention.export import AttentionExport, BlockAttention
from patchorder.attention.parallel import each_matrix

SIMILARITIES = ("cosine", "pearson")


def grid_coordinates(grid: Sequence[int]) -> np.ndarray:
    """(L, 2) float (row, column) of each raster patch index."""
    height, width = grid
    rows, cols = np.divmod(np.arange(height * width), width)
    return np.stack([rows, cols], axis=1).astype(np.float64)


def _matrices(attn: np.ndarray, grid: Sequence[int]) -> np.ndarray:
    """(M, L, L) view of (..., L, L) attention, checked against the grid."""
    attn = np.asarray(attn)
    L = grid[0] * grid[1]
    if attn.ndim < 2 or attn.shape[-1] != L or attn.shape[-2] != L:
        raise ValueError(f"attention must be (..., {L}, {L}) for grid {tuple(grid)}, got {attn.shape}")
    return attn.reshape(-1, L, L)


def _row_values(attn: np.ndarray, grid: Sequence[int], weigh: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """(M, L): weigh(w) / row mass with w = |matrix| in float64, per matrix and query; NaN for rows without mass.
    ``weigh`` maps w (L, L) to (L,), e.g. each row's sum of w times a kernel.

    One matrix at a time (a few on threads) in float64, so memory stays O(L^2) whatever the number of images.
    """
    matrices = _matrices(attn, grid)
    out = np.empty(matrices.shape[:2])

    def row_values(i: int) -> None:
        w = np.abs(matrices[i], dtype=np.float64)
        mass = w.sum(axis=1)
        out[i] = np.where(mass > 0, weigh(w) / np.where(mass > 0, mass, 1.0), np.nan)

    each_matrix(row_values, len(matrices))
    return out


def _against(kernel: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """weigh for :func:`_row_values`: each row of w times the same row of a dense (L, L) kernel, summed."""
    return lambda w: np.einsum("qk,qk->q", w, kernel)


def _within(grid: Sequence[int], radius: int) -> Callable[[np.ndarray], np.ndarray]:
    """weigh for :func:`_row_values`: the sum of each row of w over the keys at most ``radius`` rows and columns
    from its query (gathered: (2 radius + 1)^2 values a row instead of a pass over an (L, L) kernel)."""
    height, width = grid
    rows, cols = np.divmod(np.arange(height * width), width)
    steps = np.arange(-radius, radius + 1)
    near_rows = (rows[:, None, None] + steps[None, :, None]).repeat(len(steps), axis=2).reshape(len(rows), -1)
    near_cols = (cols[:, None, None] + steps[None, None, :]).repeat(len(steps), axis=1).reshape(len(rows), -1)
    inside = (near_rows >= 0) & (near_rows < height) & (near_cols >= 0) & (near_cols < width)
    keys = np.where(inside, near_rows * width + near_cols, 0)
    return lambda w: np.where(inside, np.take_along_axis(w, keys, axis=1), 0.0).sum(axis=1)


def _mean_over_rows(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _pairwise_distance(grid: Sequence[int]) -> np.ndarray:
    """(L, L) Euclidean distance between patches, in patch units."""
    rows, cols = grid_coordinates(grid).T
    return np.hypot(np.subtract.outer(rows, rows), np.subtract.outer(cols, cols))


def distance_map(attn: np.ndarray, grid: Sequence[int]) -> np.ndarray:
    """(L,) per query patch: attention-weighted mean Euclidean distance to its keys, averaged over images."""
    values = _row_values(attn, grid, _against(_pairwise_distance(grid)))
    counts = np.isfinite(values).sum(axis=0)
    return np.where(counts > 0, np.nansum(values, axis=0) / np.maximum(counts, 1), np.nan)


def attention_distance(attn: np.ndarray, grid: Sequence[int]) -> float:
    """Mean over query rows (and images) of the attention-weighted query-key distance, in patch units."""
    return _mean_over_rows(_row_values(attn, grid, _against(_pairwise_distance(grid))))


def neighbour_mass(attn: np.ndarray, grid: Sequence[int], radius: int = 1) -> float:
    """Mean over rows of the fraction of a row's mass on keys within Chebyshev distance ``radius`` of the query."""
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    return _mean_over_rows(_row_values(attn, grid, _within(grid, radius)))


def sequence_coherence(attn: np.ndarray, route: np.ndarray, max_pairs: int = 500_000, seed: int = 0) -> float:
    """Spearman correlation, over patch pairs, of their distance in the scan sequence and 1 - cosine of their rows.

    ``route`` is the sequence whose distances are used (the ordering's forward route, routes[0]); rows are
    averaged over leading dims first. High values: patches close in the scan attend alike. Pairs are all
    p < q, or ``max_pairs`` of them drawn with ``seed`` when there are more. Dissimilarities are rounded to
    1e-9 so that rows equal up to floating-point rounding count as ties.
    """
    route = np.asarray(route).astype(np.int64)
    L = route.shape[0]
    matrices = _matrices(attn, (1, L))
    mean_rows = sum(np.abs(m.astype(np.float64)) for m in matrices) / len(matrices)
    norms = np.linalg.norm(mean_rows, axis=1)
    live = np.nonzero(norms > 0)[0]
    if len(live) < 3:
        return float("nan")
    unit = mean_rows[live] / norms[live, None]
    position = np.empty(L, dtype=np.int64)
    position[route] = np.arange(L)
    n = len(live)
    total = n * (n - 1) // 2
    if total <= max_pairs:
        p, q = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        p, q = rng.integers(0, n, size=(2, max_pairs))
        keep = p != q
        p, q = p[keep], q[keep]
    # One (n, n) cosine matrix, then a lookup per pair: gathering two rows per pair would hold pairs x L values
    # (12 GB for 500k pairs at L = 3136).
    cosine = unit @ unit.T
    dissimilarity = np.round(1.0 - cosine[p, q], 9)
    seq_distance = np.abs(position[live[p]] - position[live[q]])
    from scipy.stats import spearmanr  # scipy.stats takes a while to import; only needed here

    if np.ptp(dissimilarity) == 0:
        return float("nan")  # every row alike: no ranking to correlate
    return float(spearmanr(seq_distance, dissimilarity).statistic)


def matrix_similarity(a: np.ndarray, b: np.ndarray, method: str = "cosine") -> float:
    """Cosine or Pearson similarity of two attention arrays of the same shape, flattened."""
    if method not in SIMILARITIES:
        raise ValueError(f"unknown similarity {method!r}; choose one of {', '.join(map(repr, SIMILARITIES))}")
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"cannot compare attention arrays of {a.size} and {b.size} values: grids differ")
    if method == "pearson":
        a, b = a - a.mean(), b - b.mean()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else float("nan")


def block_similarity_matrix(export: AttentionExport, stage: int,
                            method: str = "cosine") -> tuple[list[str], np.ndarray]:
    """Similarity between every pair of blocks of one stage (image-averaged matrices): (keys, (B, B))."""
    blocks = [b for b in export.blocks if b.stage == stage]
    if not blocks:
        raise ValueError(f"the export has no block in stage {stage}; it has stages {export.stages()}")
    means = [b.mean_attention() for b in blocks]
    sim = np.array([[matrix_similarity(x, y, method) for y in means] for x in means])
    return [b.key for b in blocks], sim


# --- the registry ------------------------------------------------------------------------------------------
@dataclass
class BlockView:
    """What a metric sees of one block; its merged and image-mean attention are computed once for all entries."""

    block: BlockAttention
    previous: BlockView | None  # the block before it in the same stage, None for a stage's first
    values: dict[str, Any] = field(default_factory=dict)  # the entries listed before this one, by name
    scan_usage: dict[str, Any] = field(default_factory=dict)  # this block's row of export.extra["scan_usage"]

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.block.grid)

    @cached_property
    def attn(self) -> np.ndarray:
        """(N, L, L): ``block.merged_attention()``."""
        return self.block.merged_attention()

    @cached_property
    def mean(self) -> np.ndarray:
        """(L, L): ``attn`` averaged over images."""
        return self.attn.mean(axis=0)


@dataclass(frozen=True)
class Metric:
    """One registry entry: a value per block of an export."""

    name: str  # metrics_table column, W&B key ("attention/s0b1/<name>"), study.json key
    label: str  # short: the explorer's metrics panel, the study's figure panels
    description: str  # one sentence: the study's markdown tables
    compute: Callable[[BlockView], Any]  # float (NaN or None: no value) or, when not scalar, any JSON value
    scalar: bool = True  # False: kept in metrics_table rows only (not averaged, logged, plotted or shown)


def _relative_distance(view: BlockView) -> float:
    baseline = float(_pairwise_distance(view.grid).mean())  # uniform attention over the whole grid
    return view.values["distance"] / baseline if baseline > 0 else float("nan")


def _similarity_previous(view: BlockView) -> float | None:
    if view.previous is None:
        return None
    return matrix_similarity(view.previous.mean, view.mean)


METRICS: list[Metric] = [
    Metric("distance", "attention distance (patches)",
           "Attention distance (patches, attention-weighted mean query-key distance on the grid)",
           lambda v: attention_distance(v.attn, v.grid)),
    Metric("distance_relative", "distance / uniform attention",
           "Relative distance (attention distance / mean distance under uniform attention)", _relative_distance),
    Metric("neighbour_mass_r1", "mass on neighbours (r=1)",
           "Neighbour mass (share of each row's attention on the query's 3x3 neighbourhood)",
           lambda v: neighbour_mass(v.attn, v.grid, 1)),
    Metric("neighbour_mass_r2", "mass on neighbours (r=2)",
           "Neighbour mass, r=2 (share of each row's attention on the query's 5x5 neighbourhood)",
           lambda v: neighbour_mass(v.attn, v.grid, 2)),
    Metric("coherence", "sequence coherence (Spearman)",
           "Sequence coherence (Spearman: distance in the scan vs dissimilarity of attention rows)",
           lambda v: sequence_coherence(v.attn, v.block.routes[0])),
    Metric("similarity_previous", "cosine to previous block",
           "Similarity to the previous block (cosine of the image-mean attention; none for a stage's first block)",
           _similarity_previous),
    # Measured on the model when the export was made (patchorder.attention.scan_usage), not from the attention.
    Metric("scan_share", "scan share of the output",
           "Scan share (norm of what the scan mixed in from other patches / (that + norm of the D skip))",
           lambda v: v.scan_usage.get("scan_share")),
    Metric("swap_change", "change under another ordering",
           "Ordering-swap change (relative change of the block's output when it scans with another ordering)",
           lambda v: v.scan_usage.get("swap_change")),
]


def scalar_metrics() -> list[Metric]:
    """The registered metrics whose value is one number per block, in registry order."""
    return [m for m in METRICS if m.scalar]


def metrics_table(export: AttentionExport) -> list[dict]:
    """One JSON-friendly row per block: key, stage, block, grid, ordering, then one column per :data:`METRICS` entry.

    NaN values (e.g. a block without attention mass) become None.
    """
    rows = []
    previous: dict[int, BlockView] = {}
    usage = {(u["stage"], u["block"]): u for u in (export.extra.get("scan_usage") or {}).get("blocks", [])}
    for block in sorted(export.blocks, key=lambda b: (b.stage, b.block)):
        view = BlockView(block, previous.get(block.stage), scan_usage=usage.get((block.stage, block.block), {}))
        for metric in METRICS:
            view.values[metric.name] = metric.compute(view)
        view.__dict__.pop("attn", None)  # the next block needs only this one's mean: free the (N, L, L) copy
        previous[block.stage] = view
        rows.append(_json_ready({"key": block.key, "stage": block.stage, "block": block.block,
                                 "grid": list(block.grid), "ordering": block.ordering, **view.values}))
    return rows


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def stage_summary(rows: list[dict]) -> list[dict]:
    """Per stage: the mean over its blocks of every scalar metric of :func:`metrics_table` (None when none has one)."""
    out = []
    for stage in sorted({r["stage"] for r in rows}):
        members = [r for r in rows if r["stage"] == stage]
        summary = {"stage": stage, "blocks": len(members), "grid": members[0]["grid"]}
        for metric in scalar_metrics():
            values = [m[metric.name] for m in members if is_number(m.get(metric.name))]
            summary[metric.name] = float(np.mean(values)) if values else None
        out.append(_json_ready(summary))
    return out


def compare_exports(a: AttentionExport, b: AttentionExport) -> list[dict]:
    """The same blocks under two exports (two orderings or checkpoints): similarity and metric differences."""
    rows_a = {r["key"]: r for r in metrics_table(a)}
    rows_b = {r["key"]: r for r in metrics_table(b)}
    out = []
    for block_a in a.blocks:
        block_b = next((x for x in b.blocks if x.key == block_a.key), None)
        if block_b is None or tuple(block_b.grid) != tuple(block_a.grid):
            continue
        mean_a, mean_b = block_a.mean_attention(), block_b.mean_attention()
        row = {"key": block_a.key, "stage": block_a.stage, "block": block_a.block,
               "ordering_a": block_a.ordering, "ordering_b": block_b.ordering,
               "cosine": matrix_similarity(mean_a, mean_b, "cosine"),
               "pearson": matrix_similarity(mean_a, mean_b, "pearson")}
        for metric in scalar_metrics():
            row[f"{metric.name}_a"] = rows_a[block_a.key].get(metric.name)
            row[f"{metric.name}_b"] = rows_b[block_a.key].get(metric.name)
        out.append(_json_ready(row))
    if not out:
        raise ValueError("the two exports share no block with the same stage, block and grid; nothing to compare")
    return out


def _json_ready(row: dict) -> dict:
    def clean(v):
        if isinstance(v, (np.floating, float)):
            return None if math.isnan(float(v)) else float(v)
        if isinstance(v, np.integer):
            return int(v)
        return v

    return {k: clean(v) for k, v in row.items()}
