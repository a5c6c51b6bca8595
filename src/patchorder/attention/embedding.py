"""2-D embeddings of attention, as in the seed paper's scatterplot view, with PCA, t-SNE and UMAP (seeded).

- blocks: each (block, image) attention matrix of one stage is a point; clusters show blocks that attend alike.
- patches: each patch's attention row of one block, averaged over images, is a point.
Points are first projected on their leading principal components (at most 50; for blocks through the Gram
matrix, which gives the same projection as PCA on the flattened matrices without stacking millions of values
per point), then laid out in 2-D: PCA takes the first two components, t-SNE and UMAP run on the projection.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from patchorder.attention.export import AttentionExport

METHODS = ("pca", "tsne", "umap")
MAX_COMPONENTS = 50
EXACT_TSNE_POINTS = 300  # below this, exact t-SNE is faster than Barnes-Hut and has no approximation
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


def _check_methods(methods: str | Iterable[str]) -> list[str]:
    methods = [methods] if isinstance(methods, str) else list(methods)
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown embedding method {m!r}; choose from {', '.join(map(repr, METHODS))}")
    return methods


def _gram(vectors: list[np.ndarray], chunk: int = 1 << 22) -> np.ndarray:
    """X X^T of the flattened vectors, accumulated over feature chunks (never stacks X)."""
    size = vectors[0].size
    gram = np.zeros((len(vectors), len(vectors)))
    for f0 in range(0, size, chunk):
        part = np.stack([v.reshape(-1)[f0:f0 + chunk] for v in vectors]).astype(np.float64)
        gram += part @ part.T
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


def block_embeddings(export: AttentionExport, stage: int, methods: str | Iterable[str] = METHODS,
                     seed: int = 0) -> dict[str, Embedding]:
    """Inter-block view: each (block, image) attention matrix of ``stage`` is a point (routes summed if kept apart)."""
    methods = _check_methods(methods)
    blocks = [b for b in export.blocks if b.stage == stage]
    if not blocks:
        raise ValueError(f"the export has no block in stage {stage}; it has stages {export.stages()}")
    vectors, points = [], []
    for b in blocks:
        for image, matrix in enumerate(b.merged_attention()):
            vectors.append(matrix)
            point = {"key": b.key, "block": b.block, "image": image}
            if image < len(export.labels):
                point["label"] = int(export.labels[image])
            points.append(point)
    components = _components_from_gram(_gram(vectors))
    out = {}
    for method in methods:
        coords, note = _layout(components, method, seed)
        out[method] = Embedding("blocks", method, stage, None, coords, points, note)
    return out


def patch_embeddings(export: AttentionExport, stage: int, block: int, methods: str | Iterable[str] = METHODS,
                     seed: int = 0) -> dict[str, Embedding]:
    """Intra-block view: each patch's attention row of one block, averaged over images, is a point.

    Labels per point: patch (raster index), row, col, seq_pos (position in the ordering's forward route).
    """
    methods = _check_methods(methods)
    b = export.block(stage, block)
    rows = b.mean_attention()  # (L, L)
    height, width = b.grid
    seq_pos = np.empty(rows.shape[0], dtype=np.int64)
    seq_pos[np.asarray(b.routes[0])] = np.arange(rows.shape[0])
    points = [{"patch": q, "row": q // width, "col": q % width, "seq_pos": int(seq_pos[q])}
              for q in range(height * width)]
    components = _components_from_rows(rows, seed)
    out = {}
    for method in methods:
        coords, note = _layout(components, method, seed)
        out[method] = Embedding("patches", method, stage, block, coords, points, note)
    return out
