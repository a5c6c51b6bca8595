"""An ordering defined outside the registry, to be selected by its import path (a Hydra ``_target_``).

    ordering:
      _target_: orderings.examples.Tiled
      tile: 4

``orderings.resolve`` (used by the model and the configs) instantiates such a mapping, so a user's own class
in their own module works the same way without ``@register``.
"""
import operator

import torch

from orderings.base import Ordering, OrderingError


class Tiled(Ordering):
    """Local windows: tile x tile blocks taken in row-major order, each block row-major inside.

    Like a windowed (local) scan: patches of one window stay contiguous in the sequence. Edge blocks of a
    grid whose sides are not multiples of ``tile`` are simply smaller.
    """

    name = "tiled"

    def __init__(self, tile: int = 2):
        try:
            value = None if isinstance(tile, bool) else operator.index(tile)
        except TypeError:
            value = None
        if value is None or value < 1:
            raise OrderingError(f"ordering 'tiled': tile must be an integer >= 1, got {tile!r}")
        self.tile = value

    @property
    def label(self) -> str:
        return f"{self.name}(tile={self.tile})"

    def permutation(self, height: int, width: int) -> torch.Tensor:
        t = self.tile
        rows = torch.arange(height).repeat_interleave(width)
        cols = torch.arange(width).repeat(height)
        tiles_per_row = -(-width // t)
        tile_index = (rows // t) * tiles_per_row + cols // t
        # Within a tile, (r % t) * width + c is row-major and always < t * width.
        return torch.argsort(tile_index * (t * width) + (rows % t) * width + cols)
