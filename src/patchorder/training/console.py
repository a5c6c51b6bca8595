"""What a run shows on the terminal: the resolved config as a rich tree, and a closing summary of its outputs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import rich
import rich.console
import rich.markup
import rich.syntax
import rich.table
import rich.tree
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

import logging

FIRST_SECTIONS = ("data", "model", "ordering", "module", "trainer", "callbacks", "logger", "paths")


@rank_zero_only
def print_config_tree(cfg: DictConfig, order: Sequence[str] = FIRST_SECTIONS) -> None:
    """One branch per top-level section, in ``order`` first, then the rest; values resolved."""
    tree = rich.tree.Tree("CONFIG", style="bold", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        branch = tree.add(f"[bold]{key}")
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if OmegaConf.is_config(value) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    rich.print(tree)


@rank_zero_only
def save_config(cfg: DictConfig, output_dir: str | Path) -> Path:
    """The resolved config beside the run's outputs (Hydra's .hydra/ keeps the unresolved one and overrides)."""
    path = Path(output_dir) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def terminal() -> rich.console.Console:
    """rich's console, except that output to a file or pipe is never wrapped (a log keeps every path whole)."""
    import sys

    if sys.stdout.isatty():
        return rich.get_console()
    return rich.console.Console(width=100_000)


@rank_zero_only
def print_outputs(title: str, rows: dict[str, Any]) -> None:
    table = rich.table.Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows.items():
        if value is not None:
            table.add_row(key, str(value))
    terminal().print(table)


@rank_zero_only
def print_error(error: BaseException) -> None:
    rich.print(f"[bold red]{type(error).__name__}:[/bold red] {rich.markup.escape(str(error))}")


def single_console_log() -> None:
    """Lightning's "lightning" logger prints to the console itself and also passes records up to the root logger,
    which Hydra already prints (and writes to <run dir>/<task>.log): drop Lightning's own console handler.
    Only inside a Hydra job, whose logging Hydra configured."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or not logging.getLogger().handlers:
        return
    lightning_logger = logging.getLogger("lightning")
    for handler in list(lightning_logger.handlers):
        if type(handler) is logging.StreamHandler:
            lightning_logger.removeHandler(handler)
