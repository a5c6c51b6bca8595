"""Random order: a seeded random permutation, the control that has no spatial structure.

The module is not called ``random`` so it can never shadow the standard library's ``random``.
"""
import operator

import torch

from orderings.base import Ordering, OrderingError
from orderings.registry import register


@register("random")
class RandomOrder(Ordering):
    """A uniform random permutation; the same seed and grid give the same permutation in every process."""

    def __init__(self, seed: int = 0):
        try:
            value = None if isinstance(seed, bool) else operator.index(seed)
        except TypeError:
            value = None
        if value is None or not 0 <= value < 2**63:
            raise OrderingError(f"ordering 'random': seed must be an integer in 0..2**63-1, got {seed!r}")
        self.seed = value

    @property
    def label(self) -> str:
        return f"{self.name}(seed={self.seed})"

    def permutation(self, height: int, width: int) -> torch.Tensor:
        # A private CPU generator: reproducible, and it leaves the global torch RNG untouched.
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randperm(height * width, generator=generator)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"
