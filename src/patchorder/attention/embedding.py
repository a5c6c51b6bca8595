"""2-D embeddings of attention, as in the seed paper's scatterplot view, with PCA, t-SNE and UMAP (seeded).

- blocks: each (block, image) attention matrix of one stage is a point; clusters show blocks that attend alike.
- patches: each patch's attention row of one block, averaged over images, is a point.
Points are first projected on their leading principal components (at most 50; for blocks through the Gram
matrix, which gives the same projection as PCA on the flattened matrices without stacking millions of values
per point), then laid out in 2-D: PCA takes the first two components, t-SNE and UMAP run on the projection.
An :class:`EmbeddingCache` shared by several calls on the same export computes each projection and layout once.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from patchorder.attention.export import AttentionExport

METHODS = ("pca", "tsne", "umap")
MAX_COMPONENTS = 50
# Up to this many points exact t-SNE (no approximation) costs about what Barnes-Hut does (0.1-0.2 s, either may
# win); above it Barnes-Hut is 1.5-2.5x faster. sklearn, shared 2-core CPU, median of 5, 1 / 2 OpenMP threads:
# 49-64 points exact 0.11-0.19 s, Barnes-Hut 0.09-0.20 s; 100 points 0.39 vs 0.18 / 0.38 vs 0.25 s; 196 points
# 0.93 vs 0.39 / 0.96 vs 0.39 s (experiments/benchmarks/bench_tsne_methods.py).
EXACT_TSNE_POINTS = 64
MIN_POINTS_NONLINEAR = 5  # t-SNE and UMAP need a neighbourhood; with fewer points PCA is returned (noted)


@dataclass
class Embedding:
    kind: str  # "blocks" or "patches"
    method: str  # what was asked for
    stage: int
    block: int | None
    coords: np.ndarray  # (P, 2) float32
    points: list[dict]  # one label dict per point, in the order of coords
    note: str = ""  # e.g. why PCA stands in for t-SNE

    def to_json(self) -> dict:
        return {"kind": self.kind, "method": self.method, "stage": self.stage, "block": self.block,
                "coords": self.coords.astype(float).round(6).tolist(), "points": self.points, "note": self.note}


@dataclass
class EmbeddingCache:
    """Projections and layouts computed once and handed to every call given this cache (the attention files,
    then the explorer, embed the same export). An entry is reused only for the very arrays it was computed from
    (identity: comparing values would cost what reuse saves) and the same seed; otherwise it is computed afresh."""

    entries: dict[tuple, tuple[tuple[np.ndarray, ...], Any]] = field(default_factory=dict)

    def get(self, key: tuple, sources: Sequence[np.ndarray], compute: Callable[[], Any]) -> Any:
        sources = tuple(sources)
        hit = self.entries.get(key)
        if hit is not None and len(hit[0]) == len(sources) and all(a is b for a, b in zip(hit[0], sources)):
            return hit[1]
        value = compute()
        self.entries[key] = (sources, value)
        return value


def _check_methods(methods: str | Iterable[str]) -> list[str]:
    methods = [methods] if isinstance(methods, str) else list(methods)
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown embedding method {m!r}; choose from {', '.join(map(repr, METHODS))}")
    return methods


def _gram(vectors: list[np.ndarray], buffer_values: int = 1 << 20) -> np.ndarray:
    """X X^T of the flattened vectors in float64, accumulated over feature chunks through one small buffer (8 MB):
    never stacks X (stacking VMamba-T's stage-0 chunks as float64 copied ~1.25 GB and took ~13x longer)."""
    flat = [np.ravel(v) for v in vectors]  # views of contiguous matrices; a copy only for a non-contiguous one
    size = flat[0].size
    chunk = max(1, min(size, buffer_values // len(flat)))
    part = np.empty((len(flat), chunk))
    gram = np.zeros((len(flat), len(flat)))
    for f0 in range(0, size, chunk):
        n = min(chunk, size - f0)
        for row, v in zip(part, flat):
            row[:n] = v[f0:f0 + n]  # float32 -> float64 on the copy
        gram += part[:, :n] @ part[:, :n].T
    return gram


def _components_from_gram(gram: np.ndarray) -> np.ndarray:
    """PCA scores (P, k) from the linear-kernel Gram matrix (KernelPCA centres it)."""
    P = gram.shape[0]
    k = max(1, min(MAX_COMPONENTS, P - 1))
    if P < 2:
        return np.zeros((P, 2))
    from sklearn.decomposition import KernelPCA  # scikit-learn loads in seconds: only when embedding

    scores = KernelPCA(n_components=k, kernel="precomputed", eigen_solver="dense").fit_transform(gram)
    return _pad(scores)


def _components_from_rows(rows: np.ndarray, seed: int) -> np.ndarray:
    P, F = rows.shape
    k = max(1, min(MAX_COMPONENTS, P - 1, F))
    if P < 2:
        return np.zeros((P, 2))
    from sklearn.decomposition import PCA

    return _pad(PCA(n_components=k, random_state=seed).fit_transform(rows.astype(np.float64)))


def _pad(scores: np.ndarray) -> np.ndarray:
    """At least two columns, so a 2-D layout exists even for one-dimensional data."""
    if scores.shape[1] >= 2:
        return scores
    return np.concatenate([scores, np.zeros((scores.shape[0], 2 - scores.shape[1]))], axis=1)


def _layout(components: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str]:
    P = components.shape[0]
    if method == "pca" or P < MIN_POINTS_NONLINEAR:
        note = "" if method == "pca" else f"{method} needs at least {MIN_POINTS_NONLINEAR} points, got {P}: PCA shown"
        return components[:, :2].astype(np.float32), note
    if method == "tsne":
        from sklearn.manifold import TSNE

        tsne = TSNE(n_components=2, perplexity=min(30.0, (P - 1) / 3), init="pca", learning_rate="auto",
                    method="exact" if P <= EXACT_TSNE_POINTS else "barnes_hut", random_state=seed)
        return tsne.fit_transform(components).astype(np.float32), ""
    import umap  # heavy import (numba), only when asked for

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")  # seeding makes it serial
        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, P - 1), random_state=seed)
        return reducer.fit_transform(components).astype(np.float32), ""


def _layouts(kind: str, stage: int, block: int | None, components: Callable[[], np.ndarray], methods: list[str],
             seed: int, sources: Sequence[np.ndarray],
             cache: EmbeddingCache | None) -> dict[str, tuple[np.ndarray, str]]:
    """(coords, note) per method, from one projection (computed by ``components`` when neither it nor the layout
    is in ``cache``); ``sources``: the attention arrays they are computed from."""
    cache = EmbeddingCache() if cache is None else cache  # without one, still one projection for every method

    def layout(method: str) -> tuple[np.ndarray, str]:
        return _layout(cache.get((kind, stage, block, seed), sources, components), method, seed)

    return {m: cache.get((kind, stage, block, seed, m), sources, lambda m=m: layout(m)) for m in methods}


def block_embeddings(export: AttentionExport, stage: int, methods: str | Iterable[str] = METHODS,
                     seed: int = 0, cache: EmbeddingCache | None = None) -> dict[str, Embedding]:
    """Inter-block view: each (block, image) attention matrix of ``stage`` is a point (routes summed if kept apart)."""
    methods = _check_methods(methods)
    blocks = [b for b in export.blocks if b.stage == stage]
    if not blocks:
        raise ValueError(f"the export has no block in stage {stage}; it has stages {export.stages()}")
    points = []
    for b in blocks:
        for image in range(b.attn.shape[0]):
            point = {"key": b.key, "block": b.block, "image": image}
            if image < len(export.labels):
                point["label"] = int(export.labels[image])
            points.append(point)

    def components() -> np.ndarray:
        return _components_from_gram(_gram([matrix for b in blocks for matrix in b.merged_attention()]))

    layouts = _layouts("blocks", stage, None, components, methods, seed, [b.attn for b in blocks], cache)
    return {m: Embedding("blocks", m, stage, None, coords, points, note) for m, (coords, note) in layouts.items()}


def patch_embeddings(export: AttentionExport, stage: int, block: int, methods: str | Iterable[str] = METHODS,
                     seed: int = 0, cache: EmbeddingCache | None = None) -> dict[str, Embedding]:
    """Intra-block view: each patch's attention row of one block, averaged over images, is a point.

    Labels per point: patch (raster index), row, col, seq_pos (position in the ordering's forward route).
    """
    methods = _check_methods(methods)
    b = export.block(stage, block)
    height, width = b.grid
    L = height * width
    seq_pos = np.empty(L, dtype=np.int64)
    seq_pos[np.asarray(b.routes[0])] = np.arange(L)
    points = [{"patch": q, "row": q // width, "col": q % width, "seq_pos": int(seq_pos[q])} for q in range(L)]

    def components() -> np.ndarray:
        return _components_from_rows(b.mean_attention(), seed)  # rows: (L, L)

    layouts = _layouts("patches", stage, block, components, methods, seed, [b.attn], cache)
    return {m: Embedding("patches", m, stage, block, coords, points, note) for m, (coords, note) in layouts.items()}
