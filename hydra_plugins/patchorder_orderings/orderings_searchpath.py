"""Hydra plugin: every registered patch ordering becomes an ``ordering=<name>`` option (orderings.hydra_options).

Hydra imports every module under the ``hydra_plugins`` namespace package and calls each SearchPathPlugin while
it builds the config search path, before any config is composed: the moment to fill the ConfigStore.
"""
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class OrderingOptions(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from orderings.hydra_options import store  # imports the built-in orderings, which register themselves

        store()  # the search path itself is left as it is: the ConfigStore is already on it (structured://)
