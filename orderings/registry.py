"""Name -> ordering class registry, and turning any user spec into an :class:`Ordering`."""
from __future__ import annotations

import inspect
from typing import Any, Callable

from orderings.base import FunctionOrdering, Ordering, OrderingError

_REGISTRY: dict[str, type[Ordering]] = {}
# get() hands out one shared instance per (name, kwargs) so that permutations and routes, cached on the
# instance, are computed once per process however often a name is looked up.
_INSTANCES: dict[tuple, Ordering] = {}


def register(name: str) -> Callable[[type[Ordering]], type[Ordering]]:
    """Class decorator: make an :class:`Ordering` subclass available as ``orderings.get(name)``."""
    if not isinstance(name, str) or not name.strip():
        raise OrderingError(f"@register expects a non-empty string name, got {name!r}")

    def decorate(cls: type[Ordering]) -> type[Ordering]:
        if not (isinstance(cls, type) and issubclass(cls, Ordering)):
            raise TypeError(f"@register({name!r}) expects a subclass of orderings.Ordering, got {cls!r}")
        previous = _REGISTRY.get(name)
        # Re-running the same definition (a notebook cell, a reloaded module) replaces it; a different
        # class under a taken name is a clash.
        redefinition = previous is not None and (previous.__module__, previous.__qualname__) == (
            cls.__module__, cls.__qualname__)
        if previous is not None and previous is not cls and not redefinition:
            raise OrderingError(
                f"ordering name {name!r} is already registered by {previous.__module__}."
                f"{previous.__qualname__}; pick another name"
            )
        other_names = [n for n, c in _REGISTRY.items() if c is cls and n != name]
        if other_names:
            raise OrderingError(
                f"{cls.__qualname__} is already registered as {other_names[0]!r}; a class has one name "
                f"(its .name), so subclass it to register it as {name!r} too"
            )
        cls.name = name
        _REGISTRY[name] = cls
        for key in [k for k in _INSTANCES if k[0] == name]:
            del _INSTANCES[key]
        return cls

    return decorate


def available() -> list[str]:
    """Sorted names of every registered ordering."""
    return sorted(_REGISTRY)


def get(name: str, **kwargs: Any) -> Ordering:
    """The registered ordering ``name`` built with ``kwargs`` (e.g. ``get("random", seed=3)``).

    Instances are shared per (name, kwargs): do not set attributes on them.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise OrderingError(
            f"unknown ordering {name!r}; available: {', '.join(available())}. "
            f"Register your own with @orderings.register('my_name') or select it with a Hydra _target_."
        )
    cls = _REGISTRY[name]
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError:
        raise OrderingError(
            f"ordering {name!r} does not accept {kwargs}; its parameters are {inspect.signature(cls)}"
        ) from None
    try:
        key = (name, tuple(sorted(kwargs.items())))
        hash(key)
    except TypeError:  # unhashable parameter values: no sharing
        return cls(**kwargs)
    if key not in _INSTANCES:
        _INSTANCES[key] = cls(**kwargs)
    return _INSTANCES[key]


def resolve(spec: Any) -> Ordering:
    """Turn a spec into an Ordering: a registered name, an :class:`Ordering` (instance or subclass),
    a Hydra ``{_target_: ...}`` mapping, a ``{name: ..., **params}`` mapping, or a function
    ``(height, width) -> permutation``."""
    if isinstance(spec, Ordering):
        return spec
    if isinstance(spec, str):
        return get(spec)
    if isinstance(spec, type) and issubclass(spec, Ordering):
        return spec()
    if hasattr(spec, "keys") and "_target_" in spec:
        from hydra.errors import InstantiationException
        from hydra.utils import instantiate

        try:
            built = instantiate(spec)
        except InstantiationException as error:
            cause = error.__cause__
            reason = str(cause) if isinstance(cause, OrderingError) else str(error)
            raise OrderingError(
                f"cannot build the ordering _target_ {spec['_target_']!r}: {reason}"
            ) from error
        return resolve(built)
    if hasattr(spec, "keys") and "name" in spec:
        params = {k: v for k, v in dict(spec).items() if k != "name"}
        return get(spec["name"], **params)
    if callable(spec):
        return FunctionOrdering(spec)
    raise OrderingError(
        f"cannot use {spec!r} as an ordering: give a registered name ({', '.join(available())}), "
        f"an orderings.Ordering instance, a function (height, width) -> permutation, "
        f"or a mapping with _target_"
    )
