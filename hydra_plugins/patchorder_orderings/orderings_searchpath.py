"""Hydra plugin: patchorder's structured configs enter Hydra's ConfigStore before any config is composed.

Every registered patch ordering becomes an ``ordering=<name>`` option (orderings.hydra_options), and the
LightningModule's recipe becomes ``module/default`` (patchorder.training.recipe), and every data module a
``data=<name>`` option (patchorder.data.hydra_options; a conf/data yaml of the same name wins). Hydra imports every module under
the ``hydra_plugins`` namespace package and calls each SearchPathPlugin while it builds the config search path,
before any config is composed: the moment to fill the ConfigStore.
"""
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class PatchorderConfigs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from orderings.hydra_options import store  # imports the built-in orderings, which register themselves
        from patchorder.data.hydra_options import store as store_data
        from patchorder.training.recipe import store as store_recipe

        # Only options without a yaml: a ConfigStore entry of a yaml's name would become that yaml's schema.
        # (hydra.main gives the config directory as file://..., initialize_config_dir as a plain path.)
        config_dirs = [e.path.removeprefix("file://") for e in search_path.get_path()
                       if e.path.startswith("file://") or "://" not in e.path]
        store(config_dirs)  # the search path itself is left as it is: the ConfigStore is already on it (structured://)
        store_recipe()
        store_data(config_dirs)
