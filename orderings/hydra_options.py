"""Every registered ordering is an option of Hydra's ``ordering`` config group, with no yaml file.

:func:`store` puts ``{name: <registered name>}`` into Hydra's ConfigStore as ``ordering/<name>`` for every
registered ordering. Hydra looks in the config directory (``conf/``) before the ConfigStore, so a
``conf/ordering/<name>.yaml`` of the same name wins: that is where an ordering's default parameters go
(``conf/ordering/random.yaml``: ``seed``), or a ``_target_`` to a class outside this package. Group listings
(``-m 'ordering=glob(*)'``, tab completion) merge both. The Hydra plugin in ``hydra_plugins/patchorder_orderings``
calls :func:`store` whenever Hydra builds its config search path, so ``train.py``, ``eval.py`` and ``compose()``
all see every ordering of this package without importing it first.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from orderings.registry import available

GROUP = "ordering"


def store(config_dirs: list[str | Path] = ()) -> None:
    """Register every registered ordering as ``ordering/<name>`` in Hydra's ConfigStore (idempotent), except those
    with a yaml in one of ``config_dirs``: a ConfigStore entry of a yaml's name would become that yaml's schema
    (deprecated by Hydra, and it warns)."""
    store_without_yaml(GROUP, {name: {"name": name} for name in available()}, config_dirs, "orderings")


def store_without_yaml(group: str, nodes: dict[str, Any], config_dirs: list[str | Path], provider: str) -> None:
    """``nodes[name]`` as the ConfigStore entry ``<group>/<name>`` for every name with no ``<group>/<name>.yaml`` in
    ``config_dirs`` (Hydra would take the entry as that yaml's schema). Shared by the ordering and data options."""
    from hydra.core.config_store import ConfigStore

    configs = ConfigStore.instance()
    for name, node in nodes.items():
        if not any((Path(d) / group / f"{name}.yaml").is_file() for d in config_dirs):
            configs.store(group=group, name=name, node=node, provider=provider)


def option_names(conf_dir: str | Path) -> list[str]:
    """What ``ordering=<name>`` accepts with config directory ``conf_dir``: its yaml files and every registered name."""
    files = {path.stem for path in (Path(conf_dir) / GROUP).glob("*.yaml")}
    return sorted(files | set(available()))


def option_config(name: str, conf_dir: str | Path) -> dict[str, Any]:
    """The config ``ordering=<name>`` selects: ``conf_dir/ordering/<name>.yaml`` if there is one, else ``{name: ...}``."""
    path = Path(conf_dir) / GROUP / f"{name}.yaml"
    if path.is_file():
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if name not in available():
        raise KeyError(f"no ordering option {name!r}: choose one of {', '.join(option_names(conf_dir))}")
    return {"name": name}
