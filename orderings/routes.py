"""Routes: the K sequences a VMamba block scans, generalising VMamba's cross-scan to any ordering."""
from __future__ import annotations

from typing import Any

import torch

from orderings.base import OrderingError, check_grid
from orderings.registry import resolve

# Each scheme's routes, in the order routes() stacks them; the one source of their count and their names.
ROUTE_NAMES = {
    "single": ("forward",),
    "bidirectional": ("forward", "reverse"),
    "cross4": ("forward", "transposed", "reverse", "transposed reverse"),
}
SCHEMES = {scheme: len(names) for scheme, names in ROUTE_NAMES.items()}


def route_names(scheme: str, count: int) -> list[str]:
    """Display names of a scheme's ``count`` routes; "route k" when the scheme is unknown or the count differs."""
    names = ROUTE_NAMES.get(scheme, ())
    return list(names) if len(names) == count else [f"route {k}" for k in range(count)]


def transposed(ordering, height: int, width: int) -> torch.Tensor:
    """The ordering computed on the transposed (width, height) grid, as raster indices of (height, width)."""
    ordering = resolve(ordering)
    t = ordering(width, height)  # raster index on the transposed grid: r' * height + c'
    return (t % height) * width + t // height


def routes(ordering: Any, height: int, width: int, scheme: str = "cross4", device=None) -> torch.Tensor:
    """LongTensor (K, height * width): row k is the k-th route's permutation (raster index per position).

    ``cross4`` = [ordering, ordering on the transposed grid mapped back, reverse of each]; for row-major
    this is VMamba's cross-scan (row flatten, column flatten, their flips). ``bidirectional`` = the
    ordering and its reverse; ``single`` = the ordering alone. Cached per (grid, scheme, device) on the
    ordering (names resolve to a shared instance); treat the result as read-only.
    """
    if scheme not in SCHEMES:
        raise OrderingError(f"unknown scan scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    ordering = resolve(ordering)
    height, width = check_grid(ordering.label, height, width)
    device = torch.device(device) if device is not None else torch.device("cpu")
    cache = ordering.__dict__.setdefault("_route_cache", {})
    key = (height, width, scheme, device)
    if key not in cache:
        forward = ordering(height, width)
        if scheme == "single":
            rows = [forward]
        elif scheme == "bidirectional":
            rows = [forward, forward.flip(0)]
        else:
            across = transposed(ordering, height, width)
            rows = [forward, across, forward.flip(0), across.flip(0)]
        cache[key] = torch.stack(rows).to(device)
    return cache[key]
