"""What Hydra knows about the current job (all None/False when the run functions are called without Hydra)."""
from __future__ import annotations

import os

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf


def _hydra():
    return HydraConfig.get() if HydraConfig.initialized() else None


def is_multirun() -> bool:
    hydra = _hydra()
    return hydra is not None and hydra.mode == RunMode.MULTIRUN


def job_num() -> int | None:
    hydra = _hydra()
    if hydra is None or not is_multirun():
        return None
    return OmegaConf.select(hydra, "job.num", default=None)


def sweep_dir() -> str | None:
    return str(_hydra().sweep.dir) if is_multirun() else None


def overrides() -> list[str]:
    hydra = _hydra()
    return list(hydra.overrides.task) if hydra is not None else []


def launching_rank() -> int:
    """This process's rank as its launcher set it, before Lightning starts (0 when not distributed)."""
    for key in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    node, local = int(os.environ.get("NODE_RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    return 0 if node == 0 and local == 0 else max(1, node * 1000 + local)
