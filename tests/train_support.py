"""Shared helpers of the training-pipeline tests (test_train*.py, test_eval*.py, test_config*.py).

Callbacks here are selected from configs in tests (``+callbacks.kill._target_=train_support.KillAtStep``), the way a
user adds their own callbacks; subprocess runs get this directory on PYTHONPATH.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import orderings
import torch

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
TESTS_DIR = Path(__file__).resolve().parent

# Tiny but real: vmamba_micro on 32 px digits, a few batches, no network. The attention and embedding callbacks
# (tested in test_callbacks*.py) are left out to keep these runs short.
TINY = [
    "callbacks.attention=null",
    "callbacks.embedding=null",
    "data.batch_size=32",
    "data.image_size=32",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.num_sanity_val_steps=1",
    "trainer.log_every_n_steps=1",
]


class SimulatedKill(RuntimeError):
    """Stands in for a job killed by its scheduler."""


class KillAtStep(L.Callback):
    """Raise before the training step that would follow optimizer step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step:
            raise SimulatedKill(f"killed before step {trainer.global_step + 1}")


class InjectNaN(L.Callback):
    """Make the training batch at optimizer step ``step`` contain NaN pixels (bad data)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            batch[0][0, 0, 0, 0] = float("nan")


def env(root: Path) -> dict[str, str]:
    """Environment of a subprocess run: offline W&B, runs collected under ``root``, helpers importable."""
    return {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PATCHORDER_ROOT": str(root),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])),
        "HYDRA_FULL_ERROR": "1",
    }


def copy_repo(root: Path) -> Path:
    """A copy of what train.py needs (conf, orderings, hydra_plugins, src, train.py) under ``root``, to add files to."""
    import shutil

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("conf", "orderings", "hydra_plugins", "src"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    shutil.copy(REPO / "train.py", root / "train.py")
    return root


def run_in_copy(repo: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run python ``args`` with the copy ``repo`` first on the path (its packages are the ones imported); must pass."""
    environment = env(cwd)
    environment["PYTHONPATH"] = os.pathsep.join([str(repo / "src"), str(repo), str(TESTS_DIR)])
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def run_script(script: str, args: list[str], root: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=root, env=env(root), capture_output=True, text=True, timeout=timeout,
    )


def run_dirs(root: Path, kind: str = "outputs") -> list[Path]:
    return sorted(p for p in (root / kind).glob("*/*") if p.is_dir())


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def wandb_records(run_file: str | Path) -> list[dict[str, Any]]:
    """Every record of a W&B transaction log (.wandb), decoded by wandb's own reader (`wandb leet inspect`)."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    command = [str(wandb_cli), "leet", "inspect", "--json", str(Path(run_file).resolve())]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def state_dict_of(ckpt_path: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]



class RecordingOrdering(orderings.Ordering):
    """Row-major, and remembers every grid it was asked for (``RecordingOrdering.grids``)."""

    name = "recording"
    grids: list[tuple[int, int]] = []

    def permutation(self, height: int, width: int) -> torch.Tensor:
        RecordingOrdering.grids.append((height, width))
        return torch.arange(height * width)
