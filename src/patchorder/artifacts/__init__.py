"""Attention artifacts: from a model and its probe batch to the files, pictures and tables people look at.

One implementation shared by the AttentionLogger callback (patchorder.callbacks) and ``eval.py
attention.export=true`` (:mod:`.eval_export`); it imports neither Lightning's training loop nor the callbacks.

- :mod:`.options`: :class:`AttentionOptions`, what an export contains and how it is drawn, checked up front.
- :mod:`.probe`: the probe batch, the selection check and :func:`probe_export` (the extraction).
- :mod:`.pictures`: colour-mapped uint8 pictures of matrices and per-patch heatmaps.
- :mod:`.render`: :class:`RenderedAttention` (pictures, metric rows, embedding tables) of an export.
- :mod:`.files`: :func:`write_attention_artifacts`, the .npz, metrics JSON, embeddings CSV, PNGs and explorer.
- :mod:`.compute`: BLAS threads like torch's, the progress bar.
"""
from patchorder.artifacts.files import WrittenAttention, write_attention_artifacts
from patchorder.artifacts.options import AttentionOptions, make_options
from patchorder.artifacts.probe import check_selection, probe_export
from patchorder.artifacts.render import RenderedAttention, render_attention

__all__ = ["AttentionOptions", "make_options", "check_selection", "probe_export", "RenderedAttention",
           "render_attention", "WrittenAttention", "write_attention_artifacts"]
