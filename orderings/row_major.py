"""Row-major (raster) order: VMamba's default scan."""
import torch

from orderings.base import Ordering
from orderings.registry import register


@register("row_major")
class RowMajor(Ordering):
    def permutation(self, height: int, width: int) -> torch.Tensor:
        return torch.arange(height * width)
