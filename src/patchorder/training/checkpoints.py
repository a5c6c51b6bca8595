"""Finding checkpoints: ``ckpt_path=last`` (newest run of the same configuration) and reading what a checkpoint
was trained with."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from patchorder.errors import ConfigError
from patchorder.training.results import RESULTS_FILE, read_results

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"


def find_last_checkpoint(
    search_roots: list[str | Path], config_fingerprint: str, exclude: str | Path | None = None
) -> Path:
    """The newest ``checkpoints/last.ckpt`` of a run under ``search_roots`` with the same config fingerprint.

    Runs are recognised by their results.json (written when a run starts, so killed runs count too).
    """
    roots = [Path(r) for r in search_roots]
    exclude = Path(exclude).resolve() if exclude else None
    candidates = []
    for results_path in (p for root in roots if root.is_dir() for p in root.glob(f"**/{RESULTS_FILE}")):
        run_dir = results_path.parent
        last = run_dir / CHECKPOINT_DIR / LAST
        if exclude is not None and run_dir.resolve() == exclude:
            continue
        if not last.is_file():
            continue
        try:
            if read_results(results_path).get("config_fingerprint") != config_fingerprint:
                continue
        except (OSError, ValueError):
            continue
        candidates.append(last)
    if not candidates:
        raise ConfigError(
            f"ckpt_path=last: no earlier run of this configuration (fingerprint {config_fingerprint}) with "
            f"{CHECKPOINT_DIR}/{LAST} under {', '.join(map(str, roots))}. Model, ordering, data, module, seed and trainer.max_epochs/"
            f"max_steps must match the run you want to resume; or give the file: ckpt_path=<path>/last.ckpt"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime)


def load_hyper_parameters(ckpt_path: str | Path) -> dict[str, Any]:
    """The ``hyper_parameters`` a patchorder checkpoint was saved with (model, ordering, data, class names...)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path} does not exist; pass the .ckpt of a training run, e.g. "
            f"ckpt_path=outputs/<date>/<time>_<ordering>/checkpoints/last.ckpt"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:
        raise ConfigError(f"ckpt_path={ckpt_path} is not a readable checkpoint: {error}") from error
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    needed = {"model", "ordering", "num_classes", "class_names", "data"}
    if not hparams or not needed <= set(hparams):
        raise ConfigError(
            f"ckpt_path={ckpt_path} was not written by patchorder's train.py (its hyper_parameters lack "
            f"{sorted(needed - set(hparams or {}))}); evaluate a checkpoint from outputs/.../checkpoints/"
        )
    return dict(hparams)
