"""Diagonal order: anti-diagonals d = r + c in increasing order, each one top to bottom."""
import torch

from orderings.base import Ordering
from orderings.registry import register


@register("diagonal")
class Diagonal(Ordering):
    def permutation(self, height: int, width: int) -> torch.Tensor:
        rows = torch.arange(height).view(-1, 1).expand(height, width)
        cols = torch.arange(width).view(1, -1).expand(height, width)
        # Sort by (r + c, r): r < height, so (r + c) * height + r is unique and orders exactly that way.
        key = ((rows + cols) * height + rows).reshape(-1)
        return torch.argsort(key)
