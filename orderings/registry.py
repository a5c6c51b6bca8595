"""Name -> ordering class registry, and turning any user spec into an :class:`Ordering`."""
from __future__ import annotations

from typing import Any, Callable

from orderings.base import FunctionOrdering, Ordering, OrderingError

_REGISTRY: dict[str, type[Ordering]] = {}


def register(name: str) -> Callable[[type[Ordering]], type[Ordering]]:
    """Class decorator: make an :class:`Ordering` subclass available as ``orderings.get(name)``."""

    def decorate(cls: type[Ordering]) -> type[Ordering]:
        if not (isinstance(cls, type) and issubclass(cls, Ordering)):
            raise TypeError(f"@register({name!r}) expects a subclass of orderings.Ordering, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise OrderingError(
                f"ordering name {name!r} is already registered by {_REGISTRY[name].__module__}."
                f"{_REGISTRY[name].__qualname__}; pick another name"
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available() -> list[str]:
    """Sorted names of every registered ordering."""
    return sorted(_REGISTRY)


def get(name: str, **kwargs: Any) -> Ordering:
    """Instantiate the registered ordering ``name`` with ``kwargs`` (e.g. ``get("random", seed=3)``)."""
    if name not in _REGISTRY:
        raise OrderingError(
            f"unknown ordering {name!r}; available: {', '.join(available())}. "
            f"Register your own with @orderings.register('my_name') or select it with a Hydra _target_."
        )
    return _REGISTRY[name](**kwargs)


def resolve(spec: Any) -> Ordering:
    """Turn a name, an :class:`Ordering`, a Hydra ``{_target_: ...}`` mapping or a function into an Ordering."""
    if isinstance(spec, Ordering):
        return spec
    if isinstance(spec, str):
        return get(spec)
    if hasattr(spec, "keys") and "_target_" in spec:
        from hydra.utils import instantiate

        return resolve(instantiate(spec))
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
