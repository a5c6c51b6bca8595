"""Data modules: bundled digits (default), generated spatial-relation shapes, ImageNet subsets.

See :mod:`patchorder.data.base` for the contract every module keeps. Every module of this package is imported
with it: each :class:`ImageDataModule` subclass that sets its own ``name`` is a data module, importable as
``patchorder.data.<ClassName>`` (the ``_target_`` of conf/data/*.yaml) and, through
:mod:`patchorder.data.hydra_options`, a ``data=<name>`` option even without a yaml file. Add one: a new module
here (and a conf/data/<name>.yaml when its defaults need documenting or differ from the constructor's).
"""
import importlib
import inspect
import pkgutil

from patchorder.data.base import DataConfigError, ImageDataModule
from patchorder.data.image_files import CorruptImageError

DATA_MODULES: dict[str, type[ImageDataModule]] = {}  # name -> class, filled below

for _info in pkgutil.iter_modules(__path__):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _cls in vars(_module).values():
        if (inspect.isclass(_cls) and issubclass(_cls, ImageDataModule) and _cls.__module__ == _module.__name__
                and "name" in vars(_cls) and not inspect.isabstract(_cls)):
            if _cls.name in DATA_MODULES:
                raise RuntimeError(f"two data modules are named {_cls.name!r}: {DATA_MODULES[_cls.name]} and {_cls}")
            DATA_MODULES[_cls.name] = _cls
            globals()[_cls.__name__] = _cls  # patchorder.data.<ClassName>, as the configs' _target_ names it


def available() -> list[str]:
    """The names of the data modules of this package (the ``data=<name>`` options they give)."""
    return sorted(DATA_MODULES)


__all__ = ["CorruptImageError", "DataConfigError", "ImageDataModule", "DATA_MODULES", "available",
           *sorted(cls.__name__ for cls in DATA_MODULES.values())]
