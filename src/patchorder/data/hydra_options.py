"""Every data module of :mod:`patchorder.data` is an option of Hydra's ``data`` config group, yaml file or not.

:func:`store` puts ``{_target_: patchorder.data.<Class>, <constructor defaults>}`` into Hydra's ConfigStore as
``data/<name>`` for every data module without a ``data/<name>.yaml`` in the config directories (every built-in
has one: it documents its parameters; a ConfigStore entry of the same name would become its schema). A
constructor argument without a default becomes a mandatory value (``???``: Hydra names it if it is not given);
``seed`` follows the run's seed, as in the yaml files. Called by the Hydra plugin in hydra_plugins/.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

GROUP = "data"


def option_config(cls: type) -> dict[str, Any]:
    """``_target_`` and the constructor's arguments with their defaults, through every ``**loader_args`` level."""
    from patchorder.data import ImageDataModule

    config: dict[str, Any] = {"_target_": f"patchorder.data.{cls.__name__}"}
    for klass in cls.__mro__:
        if not issubclass(klass, ImageDataModule):
            break
        if "__init__" not in vars(klass):
            continue
        parameters = list(inspect.signature(klass.__init__).parameters.values())[1:]  # without self
        for p in parameters:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in config:
                config[p.name] = "???" if p.default is p.empty else p.default
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break  # this constructor passes nothing further up
    if "seed" in config:
        config["seed"] = "${oc.select:seed,0}"
    return config


def store(config_dirs: list[str | Path] = ()) -> None:
    """Register every data module without a yaml in ``config_dirs`` as ``data/<name>`` in the ConfigStore."""
    from orderings.hydra_options import store_without_yaml
    from patchorder.data import DATA_MODULES

    if not any((Path(d) / GROUP).is_dir() for d in config_dirs):
        return  # an app without a data group (the ordering study, whose `data` is a list of names) is left alone
    nodes = {name: option_config(cls) for name, cls in DATA_MODULES.items()}
    store_without_yaml(GROUP, nodes, config_dirs, "patchorder.data")
