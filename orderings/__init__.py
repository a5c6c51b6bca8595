"""Patch orderings: how a (height, width) grid of patches becomes the 1-D sequence a Mamba block scans.

``orderings.get(name, **kwargs)(H, W)`` -> LongTensor perm with ``perm[s]`` = raster index ``r * W + c`` of the
patch visited at position ``s``. Add your own: one module in this package with ``@orderings.register("name")``
on an :class:`orderings.Ordering` subclass. Every module here is imported with the package (so it registers),
and every registered name is an option of Hydra's ``ordering`` config group (:mod:`orderings.hydra_options`).
A class elsewhere is selected from Hydra with ``_target_``.
"""
import importlib
import pkgutil

from orderings.base import FunctionOrdering, Ordering, OrderingError, validate
from orderings.registry import available, get, register, resolve
from orderings.routes import ROUTE_NAMES, SCHEMES, route_names, route_tables, routes, transposed

# Command-line tools, not orderings: `python -m orderings.show` imports matplotlib, which a training run never needs.
_TOOLS = {"show"}

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _TOOLS and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")  # built-in orderings register themselves

__all__ = [
    "Ordering", "FunctionOrdering", "OrderingError", "validate",
    "available", "get", "register", "resolve",
    "SCHEMES", "ROUTE_NAMES", "route_names", "route_tables", "routes", "transposed",
]
