"""What the logging callbacks share: the network to probe, where files go, the W&B run if any."""
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
from torch import nn

from patchorder.errors import ConfigError


def eval_network(pl_module: L.LightningModule) -> nn.Module:
    """The weights validation uses (the EMA copy when the module keeps one), else ``pl_module.model``."""
    if hasattr(pl_module, "eval_model"):
        return pl_module.eval_model()
    return getattr(pl_module, "model", pl_module)


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


def probe(datamodule: Any, n: int, who: str, setting: str) -> tuple:
    """``datamodule.probe_batch(n)`` with an error that names the setting to change."""
    try:
        return datamodule.probe_batch(n)
    except ValueError as error:
        raise ConfigError(f"{who}: {error}; lower {setting}") from None


def every_n(value: Any, name: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{name}={value!r} must be an integer >= 0 (0 or null: only at the end of training)")
    return value


@contextmanager
def blas_threads_like_torch() -> Iterator[None]:
    """Limit numpy/scipy's BLAS threads to torch's intra-op thread count (the run's cpu_threads) meanwhile.

    Without it OpenBLAS starts one busy-waiting thread per core next to torch's: on a shared 2-core machine a
    256 x 256 SVD (the PCA of a 16 x 16 grid's attention rows) took 2.5 s instead of 0.014 s.
    """
    import scipy.linalg  # noqa: F401  scipy's own OpenBLAS must be loaded to be limited
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        yield


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
