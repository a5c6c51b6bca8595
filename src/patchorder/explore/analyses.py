"""Adapter over patchorder.attention's analyses (embeddings, metrics): the shapes the report needs."""
from __future__ import annotations


class EmbeddingUnavailable(RuntimeError):
    """An embedding that cannot be computed for this input (e.g. too few points for t-SNE)."""


def patch_embedding(export, stage, block, method, seed):
    raise NotImplementedError


def block_embedding(export, stage, method, seed):
    raise NotImplementedError


def block_metrics(export):
    raise NotImplementedError


def metric_names(metrics):
    return sorted({name for values in metrics.values() for name in values})
