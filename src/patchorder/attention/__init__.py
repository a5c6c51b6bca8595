"""Hidden attention of VMamba blocks: exact extraction, the .npz export, and analyses (metrics, embeddings)."""
from patchorder.attention.export import AttentionExport, BlockAttention, load, save
from patchorder.attention.hidden import block_attention, hidden_attention

__all__ = [
    "hidden_attention", "block_attention",
    "AttentionExport", "BlockAttention", "save", "load",
]
