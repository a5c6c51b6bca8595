"""Spiral order: clockwise from the top-left corner inwards.

Top row left to right, right column down, bottom row right to left, left column up, then the same on the
inner rectangle; consecutive cells are always 4-neighbours.
"""
from orderings.base import Ordering
from orderings.registry import register


@register("spiral")
class Spiral(Ordering):
    def permutation(self, height: int, width: int) -> list[int]:
        top, bottom, left, right = 0, height - 1, 0, width - 1
        cells: list[tuple[int, int]] = []
        while top <= bottom and left <= right:
            cells += [(top, c) for c in range(left, right + 1)]
            cells += [(r, right) for r in range(top + 1, bottom + 1)]
            if top < bottom:  # a single remaining row has no bottom side to walk back
                cells += [(bottom, c) for c in range(right - 1, left - 1, -1)]
            if left < right:  # a single remaining column has no left side to walk up
                cells += [(r, left) for r in range(bottom - 1, top, -1)]
            top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
        return [r * width + c for r, c in cells]
