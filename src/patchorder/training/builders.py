"""Turning config sections into objects: data module, LightningModule, callbacks, loggers, trainer."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from omegaconf import DictConfig

from patchorder.errors import USER_ERRORS, ConfigError
from patchorder.training import hydra_info
from patchorder.training.config import ordering_label
from patchorder.training.data_order import make_train_loader_resumable


def build_datamodule(data_cfg: DictConfig, resumable: bool = True) -> L.LightningDataModule:
    try:
        datamodule = instantiate(data_cfg, _convert_="all")
    except InstantiationException as error:  # show the data module's own message, not Hydra's wrapper
        if isinstance(error.__cause__, USER_ERRORS):
            raise error.__cause__ from None
        raise
    datamodule.setup("fit")  # builds the splits now: data errors surface before the model is built
    return make_train_loader_resumable(datamodule) if resumable else datamodule


def build_callbacks(callbacks_cfg: DictConfig | None) -> list[L.Callback]:
    """Every entry with a ``_target_`` (set an entry to null to drop it, e.g. callbacks.model_summary=null)."""
    callbacks = []
    for name, entry in (callbacks_cfg or {}).items():
        if entry is None:
            continue
        if "_target_" not in entry:
            raise ConfigError(f"callbacks.{name} has no _target_; each callback entry needs one")
        callbacks.append(instantiate(entry))
    return callbacks


def default_run_name(cfg: DictConfig) -> str:
    job = hydra_info.job_num()
    name = f"{ordering_label(cfg.ordering)}-{cfg.model.name}-s{cfg.seed}"
    return f"{job}-{name}" if job is not None else name


def default_group(cfg: DictConfig) -> str:
    """The experiment name, plus the sweep's date and time in a multirun so one sweep is one W&B group."""
    experiment = cfg.get("experiment_name") or "train"
    sweep_dir = hydra_info.sweep_dir()
    if sweep_dir is None:
        return experiment
    parts = Path(sweep_dir).parts
    return f"{experiment}-{'_'.join(parts[-2:])}"


def build_loggers(cfg: DictConfig) -> list[Logger]:
    loggers: list[Logger] = []
    for name, entry in (cfg.get("logger") or {}).items():
        if entry is None:
            continue
        if "_target_" not in entry:
            raise ConfigError(f"logger.{name} has no _target_; each logger entry needs one")
        extra: dict[str, Any] = {}
        if entry._target_.endswith("WandbLogger"):
            extra["name"] = entry.get("name") or default_run_name(cfg)
            extra["group"] = entry.get("group") or default_group(cfg)
            Path(entry.save_dir).mkdir(parents=True, exist_ok=True)
            os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(instantiate(entry, **extra, _convert_="all"))
    return loggers


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback], loggers: list[Logger]) -> L.Trainer:
    if not cfg.trainer.get("enable_progress_bar", True):  # so trainer.enable_progress_bar=false just works
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, _convert_="all")
    check_launcher_fits_hydra_mode(trainer)
    return trainer


def check_launcher_fits_hydra_mode(trainer: L.Trainer) -> None:
    """Lightning starts DDP workers by re-running the script with its arguments, which cannot work inside a
    Hydra multirun (the workers would start a sweep of their own)."""
    strategy = trainer.strategy
    relaunches = (
        isinstance(getattr(strategy, "launcher", None), _SubprocessScriptLauncher)
        and not strategy.cluster_environment.creates_processes_externally
        and trainer.num_devices * trainer.num_nodes > 1
    )
    if relaunches and hydra_info.is_multirun():
        raise ConfigError(
            "trainer.strategy=ddp starts its worker processes by re-running train.py, which Hydra's local multirun "
            "cannot do. In a sweep use hydra/launcher=slurm (SLURM starts one task per GPU), or "
            "trainer.strategy=ddp_spawn for a local multi-device sweep, or run the orderings one at a time."
        )


def wandb_logger(loggers: list[Logger]) -> WandbLogger | None:
    return next((lg for lg in loggers if isinstance(lg, WandbLogger)), None)


def csv_logger(loggers: list[Logger]) -> CSVLogger | None:
    return next((lg for lg in loggers if isinstance(lg, CSVLogger)), None)
