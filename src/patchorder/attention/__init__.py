"""Hidden attention of VMamba blocks: exact extraction, the .npz export, and analyses (metrics, embeddings).

- :func:`hidden_attention` / :func:`block_attention`: exact attention of one scan / one captured SS2D block.
- :func:`extract_attention`: one forward pass of a model -> :class:`AttentionExport` (save/load as .npz).
- :mod:`~patchorder.attention.metrics`: distance, neighbour mass, sequence coherence, similarity, ``metrics_table``;
  ``METRICS``, the one registry of per-block metrics that the callbacks, the explorer and the study read.
- :mod:`~patchorder.attention.embedding`: block and patch embeddings with PCA, t-SNE and UMAP.
- Whole-model maps: :func:`rollout` (attention rollout over every block and stage), :func:`attribution`
  (gradient-weighted, class-specific), :func:`effective_receptive_field`, and their faithfulness
  (:func:`deletion_insertion`, :func:`compare_maps`).
"""
from patchorder.attention.attribution import attribution, gradient_weighted_attention
from patchorder.attention.embedding import Embedding, EmbeddingCache, block_embeddings, patch_embeddings
from patchorder.attention.export import AttentionExport, BlockAttention, load, save
from patchorder.attention.erf import effective_receptive_field
from patchorder.attention.extract import extract_attention, images_to_uint8
from patchorder.attention.faithfulness import (
    FaithfulnessCurves, channel_mean, compare_maps, deletion_insertion, faithfulness_table, input_gradient, random_map,
    relevance_maps,
)
from patchorder.attention.hidden import block_attention, hidden_attention
from patchorder.attention.relevance import relevance_views, write_relevance
from patchorder.attention.rollout import RelevanceMaps, rollout
from patchorder.attention.metrics import (
    METRICS, Metric, attention_distance, block_similarity_matrix, compare_exports, distance_map, matrix_similarity,
    metrics_table, neighbour_mass, scalar_metrics, sequence_coherence, stage_summary,
)

__all__ = [
    "hidden_attention", "block_attention", "extract_attention", "images_to_uint8",
    "AttentionExport", "BlockAttention", "save", "load",
    "attention_distance", "distance_map", "neighbour_mass", "sequence_coherence", "matrix_similarity",
    "block_similarity_matrix", "metrics_table", "stage_summary", "compare_exports", "METRICS", "Metric",
    "scalar_metrics",
    "Embedding", "EmbeddingCache", "block_embeddings", "patch_embeddings",
    "RelevanceMaps", "rollout", "attribution", "gradient_weighted_attention", "effective_receptive_field",
    "FaithfulnessCurves", "deletion_insertion", "compare_maps", "faithfulness_table", "input_gradient",
    "random_map", "channel_mean", "relevance_maps", "relevance_views", "write_relevance",
]
