"""What the logging callbacks share: where files go, the W&B run if any, the random streams left untouched."""
from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lightning as L
from lightning.pytorch.loggers import WandbLogger

from patchorder.artifacts.compute import blas_threads_like_torch
from patchorder.errors import ConfigError


def output_dir(trainer: L.Trainer, dirpath: str | Path | None, default_name: str) -> Path:
    """``dirpath`` when given, else <trainer.default_root_dir (the run directory)>/<default_name>."""
    return Path(dirpath) if dirpath else Path(trainer.default_root_dir) / default_name


def wandb_run(trainer: L.Trainer) -> Any | None:
    """The W&B run of the trainer's WandbLogger, or None when W&B is not among the loggers."""
    logger = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
    return logger.experiment if logger is not None else None


def other_loggers(trainer: L.Trainer) -> list:
    return [lg for lg in trainer.loggers if not isinstance(lg, WandbLogger)]


def datamodule_of(trainer: L.Trainer, who: str) -> Any:
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None or not hasattr(datamodule, "probe_batch"):
        raise ConfigError(f"{who} needs a data module with probe_batch(n) (every patchorder data module has one); "
                          f"pass it as trainer.fit(module, datamodule=...)")
    return datamodule


def every_n(value: Any, name: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{name}={value!r} must be an integer >= 0 (0 or null: only at the end of training)")
    return value


@contextmanager
def logging_work() -> Iterator[None]:
    """What every logging call runs under: training's random streams preserved, BLAS threads like torch's."""
    with preserved_rng(), blas_threads_like_torch():
        yield


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Leave torch's, numpy's and Python's global random streams as they were: logging must never change
    what training draws next (a resumed run has to reproduce an uninterrupted one)."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)
