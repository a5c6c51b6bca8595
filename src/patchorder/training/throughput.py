"""Training throughput: images per second over the training epochs, validation time left out."""
from __future__ import annotations

import time
from typing import Any

import lightning as L


class TrainThroughput(L.Callback):
    """Counts training images and the wall time of training epochs minus the validation inside them.

    ``images_per_sec`` is for all processes together (this rank's images x world size), data loading included.
    """

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._epoch_start: float | None = None
        self._validation_start: float | None = None
        self._validation_seconds = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self._validation_seconds = 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._epoch_start is None:  # resumed in the middle of an epoch: on_train_epoch_start was skipped
            self.on_train_epoch_start(trainer, pl_module)
        self.images += len(batch[0])

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation_start is not None and self._epoch_start is not None:
            self._validation_seconds += time.perf_counter() - self._validation_start
        self._validation_start = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close_epoch()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close_epoch()  # max_steps can end training in the middle of an epoch

    def _close_epoch(self) -> None:
        if self._epoch_start is not None:
            self.seconds += time.perf_counter() - self._epoch_start - self._validation_seconds
        self._epoch_start = None
        self._validation_seconds = 0.0

    def images_per_sec(self, world_size: int = 1) -> float | None:
        return self.images * world_size / self.seconds if self.seconds > 0 else None
