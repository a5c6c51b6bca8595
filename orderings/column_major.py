"""Column-major order: top to bottom, then left to right."""
import torch

from orderings.base import Ordering
from orderings.registry import register


@register("column_major")
class ColumnMajor(Ordering):
    def permutation(self, height: int, width: int) -> torch.Tensor:
        return torch.arange(height * width).view(height, width).t().reshape(-1)
