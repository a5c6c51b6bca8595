"""EmbeddingLogger: pooled image features (the model's pre-logits) of a fixed validation sample, with labels and
predictions, at the end of fit (and every N epochs if set). Rank 0 only.

Files under <run dir>/embeddings/: ``features_final.npz`` (features, labels, predictions, class_names) and
``features_final.csv``; with a WandbLogger also the table ``embeddings/features`` with one column per feature
dimension (f0, f1, ...), which W&B's 2D projection panel (PCA, UMAP, t-SNE) lays out.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
import numpy as np
import torch
from torch import nn

from patchorder.artifacts.probe import eval_network, probe
from patchorder.callbacks import common
from patchorder.callbacks.wandb_media import STEP_KEY
from patchorder.errors import ConfigError

PREFIX = "embeddings"
LABEL_COLUMNS = ["sample", "label", "class_name", "prediction", "predicted_class", "correct"]


def pooled_features(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D), logits (N, C)) from timm's forward_features + forward_head(pre_logits=True), in eval
    mode under no_grad (the model's mode is restored)."""
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        raise ConfigError(f"EmbeddingLogger needs a timm-style model with forward_features and forward_head; "
                          f"{type(model).__name__} has not")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    features, logits = [], []
    try:
        with torch.no_grad():
            for chunk in images.split(batch_size):
                pre = model.forward_head(model.forward_features(chunk.to(device)), pre_logits=True)
                features.append(pre.float().cpu())
                logits.append(model.get_classifier()(pre).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(features).numpy(), torch.cat(logits).numpy()


class EmbeddingLogger(L.Callback):
    """Log the pooled features of ``num_samples`` validation images (spread over classes, the same every time).

    Args:
        num_samples: images in the sample; the whole validation split when it is smaller (with a warning).
        every_n_epochs: also log after every N-th epoch (0 or None: only at the end of fit).
        batch_size: images per forward pass.
        dirpath: where the files go; None: <run dir>/embeddings.
    """

    def __init__(self, num_samples: int = 256, every_n_epochs: int | None = 0, batch_size: int = 64,
                 dirpath: str | Path | None = None) -> None:
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ConfigError(f"num_samples={num_samples!r} must be a positive integer")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be a positive integer")
        self.num_samples, self.batch_size, self.dirpath = num_samples, batch_size, dirpath
        self.every_n_epochs = common.every_n(every_n_epochs, "every_n_epochs")
        self.written: list[dict[str, Any]] = []
        self._sample: tuple | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        datamodule = common.datamodule_of(trainer, "EmbeddingLogger")
        available = len(datamodule.val_dataloader().dataset)
        count = min(self.num_samples, available)
        if count < self.num_samples:  # a default that fits most data: say so rather than fail a small split
            rank_zero_warn(f"EmbeddingLogger: the validation split has {available} images, fewer than num_samples="
                           f"{self.num_samples}; embedding all {available}")
        self._sample = probe(datamodule, count, "EmbeddingLogger", "callbacks.embedding.num_samples")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.log_features(trainer, pl_module, f"features_epoch{trainer.current_epoch:03d}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.log_features(trainer, pl_module, "features_final")

    def log_features(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str) -> dict[str, Any]:
        """Compute, write and log now (rank 0 only: the hooks check); training's random streams are untouched."""
        with common.logging_work():
            return self._log_features(trainer, pl_module, tag)

    def _log_features(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str) -> dict[str, Any]:
        started = time.perf_counter()
        images, labels = self._sample
        features, logits = pooled_features(eval_network(pl_module), images, self.batch_size)
        labels = labels.numpy()
        predictions = logits.argmax(axis=1)
        class_names = [str(c) for c in getattr(trainer.datamodule, "class_names", None) or range(logits.shape[1])]
        columns, rows = feature_table(features, labels, predictions, class_names)
        out_dir = common.output_dir(trainer, self.dirpath, PREFIX)
        out_dir.mkdir(parents=True, exist_ok=True)
        npz = out_dir / f"{tag}.npz"
        np.savez_compressed(npz, features=features, labels=labels, predictions=predictions,
                            class_names=np.array(class_names))
        table_csv = out_dir / f"{tag}.csv"
        with open(table_csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows(rows)
        accuracy = float((predictions == labels).mean())
        for logger in common.other_loggers(trainer):
            logger.log_metrics({f"{PREFIX}/sample_acc1": accuracy}, step=trainer.global_step)
        run = common.wandb_run(trainer)
        if run is not None:
            import wandb

            run.log({f"{PREFIX}/features": wandb.Table(columns=columns, data=rows),
                     f"{PREFIX}/sample_acc1": accuracy, STEP_KEY: trainer.global_step})
        record = {"tag": tag, "npz": npz, "csv": table_csv, "num_samples": len(labels),
                  "dim": features.shape[1], "seconds": time.perf_counter() - started}
        self.written.append(record)
        return record


def feature_table(features: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                  class_names: list[str]) -> tuple[list[str], list[list]]:
    """Columns (sample, label, class_name, prediction, predicted_class, correct, f0 .. f{D-1}) and rows."""
    columns = LABEL_COLUMNS + [f"f{d}" for d in range(features.shape[1])]
    rows = [[i, int(y), class_names[y], int(p), class_names[p], bool(y == p), *map(float, f)]
            for i, (y, p, f) in enumerate(zip(labels, predictions, features))]
    return columns, rows
