"""Patch orderings: how a (height, width) grid of patches becomes the 1-D sequence a Mamba block scans.

``orderings.get(name, **kwargs)(H, W)`` -> LongTensor perm with ``perm[s]`` = raster index ``r * W + c`` of the
patch visited at position ``s``. Add your own with ``@orderings.register("name")`` on an
:class:`orderings.Ordering` subclass, or select a class from Hydra with ``_target_``.
"""
from orderings.base import FunctionOrdering, Ordering, OrderingError, validate
from orderings.registry import available, get, register, resolve
from orderings.routes import ROUTE_NAMES, SCHEMES, route_names, routes, transposed

# Built-in orderings register themselves on import.
from orderings import (  # noqa: E402,F401  isort: skip
    column_major, diagonal, hilbert, morton, random_order, row_major, snake, spiral,
)

__all__ = [
    "Ordering", "FunctionOrdering", "OrderingError", "validate",
    "available", "get", "register", "resolve",
    "SCHEMES", "ROUTE_NAMES", "route_names", "routes", "transposed",
]
