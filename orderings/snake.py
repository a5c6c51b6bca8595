"""Snake (boustrophedon) order: row 0 left to right, row 1 right to left, and so on."""
import torch

from orderings.base import Ordering
from orderings.registry import register


@register("snake")
class Snake(Ordering):
    def permutation(self, height: int, width: int) -> torch.Tensor:
        grid = torch.arange(height * width).view(height, width).clone()
        grid[1::2] = grid[1::2].flip(1)
        return grid.reshape(-1)
