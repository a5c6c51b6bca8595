"""The ordering contract: a grid (height, width) -> a permutation of its raster indices.

``perm[s]`` is the raster index ``r * width + c`` of the patch visited at sequence position ``s``.
Subclasses implement :meth:`Ordering.permutation`; calling the ordering validates the result once
per grid and caches it per grid.
"""
from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch


class OrderingError(ValueError):
    """A permutation or an ordering request that cannot be used; the message says how to fix it."""


class Ordering:
    """Base class of every patch ordering. Override :meth:`permutation` and set ``name``.

    Calling ``ordering(height, width, device)`` returns a cached LongTensor (cached on the CPU; a copy on another
    device, which :func:`orderings.routes` caches for the model): treat it as read-only
    (clone it before modifying it in place), since every caller of the same grid shares it.
    """

    name: str = "custom"

    def permutation(self, height: int, width: int) -> Any:
        """Return the visiting order of the (height, width) grid as raster indices (any int sequence)."""
        raise NotImplementedError(f"{type(self).__name__} must implement permutation(height, width)")

    def __call__(self, height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
        height, width = check_grid(self.label, height, width)
        # The one cache of a grid's permutation (validated, on the CPU); routes() keeps its device copies.
        cache = self.__dict__.setdefault("_perm_cache", {})
        if (height, width) not in cache:
            cache[(height, width)] = validate(self.permutation(height, width), height, width, self.label)
        perm = cache[(height, width)]
        return perm if device is None else perm.to(device)

    @property
    def label(self) -> str:
        """The name used in messages, file names and logs (parameterised orderings add their parameters)."""
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class FunctionOrdering(Ordering):
    """Wraps a plain function ``fn(height, width) -> permutation`` as an ordering."""

    def __init__(self, fn, name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "custom")

    def permutation(self, height: int, width: int):
        return self.fn(height, width)


def check_grid(label: str, height: Any, width: Any) -> tuple[int, int]:
    """Return (height, width) as Python ints, or raise OrderingError if either is not an integer >= 1."""
    sides = []
    for side, value in (("height", height), ("width", width)):
        try:
            # operator.index accepts int, numpy integers and 0-d integer tensors, but not 3.0 or "3".
            number = None if isinstance(value, bool) else operator.index(value)
        except TypeError:
            number = None
        if number is None or number < 1:
            raise OrderingError(
                f"ordering {label!r}: grid {side} must be an integer >= 1, got {value!r} "
                f"(grid {height!r}x{width!r}, height x width)"
            )
        sides.append(number)
    return sides[0], sides[1]


def _as_tensor(perm: Any, where: str) -> torch.Tensor:
    if isinstance(perm, torch.Tensor):
        return perm.detach().cpu()
    try:
        array = np.asarray(perm)
    except ValueError as error:  # ragged nested lists
        raise OrderingError(f"{where}: permutation must be a flat sequence of integers ({error})") from None
    if array.dtype.kind not in "biufc":  # None, strings, objects
        raise OrderingError(
            f"{where}: permutation must be a sequence of integers, got {type(perm).__name__} "
            f"of dtype {array.dtype}"
        )
    return torch.from_numpy(array.copy()) if array.size else torch.empty(array.shape, dtype=torch.int64)


def validate(perm: Any, height: int, width: int, label: str = "custom") -> torch.Tensor:
    """Check that ``perm`` is a permutation of range(height * width) and return it as a CPU LongTensor.

    Raises :class:`OrderingError` naming the ordering, the grid and the first offending position.
    """
    height, width = check_grid(label, height, width)
    where = f"ordering {label!r} on grid {height}x{width} (height x width)"
    tensor = _as_tensor(perm, where)
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise OrderingError(
            f"{where}: permutation has dtype {tensor.dtype}; return integer raster indices "
            f"(e.g. torch.long), not {tensor.dtype}"
        )
    if tensor.dim() != 1:
        raise OrderingError(
            f"{where}: permutation must be one-dimensional (length {height * width}), got shape "
            f"{tuple(tensor.shape)}; flatten it with perm.reshape(-1) if it is already the visiting order"
        )
    length = height * width
    if tensor.numel() != length:
        raise OrderingError(
            f"{where}: permutation has length {tensor.numel()}, expected {length} (one entry per patch); "
            f"first offending position {min(tensor.numel(), length)}"
        )
    tensor = tensor.to(torch.long)
    bad = ((tensor < 0) | (tensor >= length)).nonzero()
    if bad.numel():
        s = int(bad[0])
        raise OrderingError(
            f"{where}: position {s} holds raster index {int(tensor[s])}, outside 0..{length - 1}"
        )
    first = torch.zeros(length, dtype=torch.long).scatter_reduce(
        0, tensor, torch.arange(length), reduce="amin", include_self=False
    )
    duplicates = (first[tensor] != torch.arange(length)).nonzero()
    if duplicates.numel():
        s = int(duplicates[0])
        v = int(tensor[s])
        missing = int((torch.bincount(tensor, minlength=length) == 0).nonzero()[0])
        raise OrderingError(
            f"{where}: position {s} repeats raster index {v} (first visited at position {int(first[v])}); "
            f"raster index {missing} is never visited"
        )
    return tensor.contiguous()
