"""Morton (Z-order): cells sorted by the bit-interleaved code of (row, column), row bits more significant.

A 2x2 block is visited (0,0) (0,1) (1,0) (1,1), recursively. On grids whose sides are not powers of two
the same code sorts the cells that exist, so the curve jumps over the missing ones.
"""
import torch

from orderings.base import Ordering
from orderings.registry import register


def morton_code(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Interleave the bits of rows and cols: bit b of col goes to bit 2b, bit b of row to bit 2b + 1."""
    code = torch.zeros_like(rows)
    bits = max(int(rows.max()), int(cols.max()), 1).bit_length()
    for b in range(bits):
        code |= ((rows >> b) & 1) << (2 * b + 1)
        code |= ((cols >> b) & 1) << (2 * b)
    return code


@register("morton")
class Morton(Ordering):
    def permutation(self, height: int, width: int) -> torch.Tensor:
        rows = torch.arange(height).repeat_interleave(width)
        cols = torch.arange(width).repeat(height)
        return torch.argsort(morton_code(rows, cols))
