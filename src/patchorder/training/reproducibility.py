"""A callback that makes an interrupted-then-resumed run train exactly like an uninterrupted one.

Three things besides the weights and optimizer (which Lightning saves) decide what happens next:
- the data position in the epoch: kept in the training loader's state (see :mod:`data_order`);
- the random number generators used by training steps (DropPath, Mixup/CutMix): saved in the checkpoint and
  restored right before the first training step after a resume;
- validation must not shift those generators, or the sanity check of a resumed run (and any change of the
  validation schedule) would change the training that follows: validation runs on saved-and-restored RNGs.
"""
from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch

from patchorder.training.data_order import ResumableLoader


def capture_rng() -> dict[str, Any]:
    """Generator states as tensors and plain lists, so checkpoints still load with torch.load(weights_only=True)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ReproducibleTraining(L.Callback):
    """Keeps RNG state and the data position in checkpoints; keeps validation out of the training RNG stream."""

    def __init__(self) -> None:
        self._pending_rng: dict[str, Any] | None = None
        self._rng_before_validation: dict[str, Any] | None = None

    # Saved in the checkpoint under callbacks["ReproducibleTraining"]. ModelCheckpoint always runs after other
    # callbacks, so at save time the generators are exactly where the next training step will find them.
    def state_dict(self) -> dict[str, Any]:
        return {"rng": capture_rng()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_rng = state_dict.get("rng")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        if isinstance(loader, ResumableLoader):
            loader.batches_per_epoch = int(trainer.num_training_batches)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not called when a run resumes in the middle of an epoch, so the restored count survives.
        loader = trainer.train_dataloader
        if isinstance(loader, ResumableLoader):
            loader.batches_done = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._pending_rng is not None:
            restore_rng(self._pending_rng)
            self._pending_rng = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loader = trainer.train_dataloader
        if isinstance(loader, ResumableLoader):
            loader.batches_done = batch_idx + 1

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rng_before_validation = capture_rng()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._rng_before_validation is not None:
            restore_rng(self._rng_before_validation)
            self._rng_before_validation = None
