"""Lightning callbacks that log what a VMamba computes, on rank 0, with any combination of loggers.

- :class:`AttentionLogger` (conf/callbacks/attention.yaml): hidden attention on a fixed probe batch, as
  colour-mapped matrices, per-patch heatmaps, metrics, embedding tables, the raw .npz and the HTML explorer.
- :class:`EmbeddingLogger` (conf/callbacks/embedding.yaml): pooled image features of a validation sample as a
  table for W&B's 2D projection panel, and as CSV/NPZ.

What they compute and write (options, probe, pictures, files; shared with ``eval.py attention.export=true``) is
:mod:`patchorder.artifacts`; this package holds only the callbacks and the W&B media they log.
"""
from patchorder.callbacks.attention import AttentionLogger
from patchorder.callbacks.embedding import EmbeddingLogger

__all__ = ["AttentionLogger", "EmbeddingLogger"]
