"""The LightningModule: a timm-built VMamba trained for classification with a chosen patch ordering.

Everything needed to rebuild the model later (model preset, ordering, data config, class names) is saved in the
checkpoint's ``hyper_parameters``, so ``eval.py ckpt_path=...`` needs nothing else.
"""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import timm
import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from patchorder.training import optim
from patchorder.training.model import create_model
from patchorder.training.recipe import EmaConfig, MixupConfig, OptimizerConfig, Recipe, SchedulerConfig, with_defaults
from patchorder.errors import NonFiniteLossError, NonFiniteWeightsError



class ClassificationModule(L.LightningModule):
    """Cross-entropy (label smoothing, or soft targets under Mixup/CutMix), top-1/top-5, AdamW + warmup-cosine,
    optional EMA of the weights (validation and test then use the EMA weights).

    The recipe arguments (optimizer, scheduler, label_smoothing, mixup, ema) are the ``module`` section of the
    training config; their defaults are :class:`patchorder.training.recipe.Recipe`'s, and a partial dict is
    completed from them."""

    def __init__(
        self,
        model: dict,
        ordering: Any,
        num_classes: int,
        class_names: list[str],
        image_size: list[int],
        in_chans: int = 3,
        batch_size: int = 64,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        label_smoothing: float = Recipe.label_smoothing,
        mixup: dict | None = None,
        ema: dict | None = None,
        data: dict | None = None,
    ) -> None:
        super().__init__()
        # Saved in the checkpoint: eval.py rebuilds the model and the data from these.
        self.save_hyperparameters()
        self.model = create_model(model, ordering, num_classes, in_chans)
        self.optimizer_cfg = with_defaults(OptimizerConfig, optimizer)
        self.scheduler_cfg = with_defaults(SchedulerConfig, scheduler)

        self.mixup = self._build_mixup(mixup, label_smoothing, num_classes)
        self.train_loss = SoftTargetCrossEntropy() if self.mixup else nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # Evaluation loss is plain cross-entropy, comparable between runs with different training recipes.
        self.eval_loss = nn.CrossEntropyLoss()

        ema = with_defaults(EmaConfig, ema)
        self.ema = None
        if ema["enabled"]:
            self.ema = ModelEmaV3(self.model, decay=ema["decay"], use_warmup=ema["warmup"])
            # Updated by copying, never by gradients: DDP must not wait for gradients of these parameters.
            self.ema.requires_grad_(False)
            # Never run while training; Lightning switches it to eval mode for validation and test.
            self.ema.module.train()

        top_k = min(5, num_classes)
        self.train_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc5 = MulticlassAccuracy(num_classes, top_k=top_k, average="micro")
        self.test_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.test_acc5 = MulticlassAccuracy(num_classes, top_k=top_k, average="micro")

    @classmethod
    def from_config(cls, cfg: Any, datamodule: L.LightningDataModule) -> "ClassificationModule":
        """The module of a training config (sections model, ordering, module, data) and its built data module."""
        from patchorder.training.config import to_plain

        return cls(
            model=to_plain(cfg.model), ordering=to_plain(cfg.ordering), num_classes=datamodule.num_classes,
            class_names=list(datamodule.class_names), image_size=list(datamodule.image_size),
            in_chans=getattr(datamodule, "in_chans", 3), batch_size=int(cfg.data.batch_size),
            **to_plain(cfg.module), data=to_plain(cfg.data),
        )

    @staticmethod
    def _build_mixup(cfg: dict | None, label_smoothing: float, num_classes: int) -> Mixup | None:
        if not cfg or not (cfg.get("mixup_alpha", 0) > 0 or cfg.get("cutmix_alpha", 0) > 0):
            return None
        return Mixup(**with_defaults(MixupConfig, cfg), label_smoothing=label_smoothing, num_classes=num_classes)

    # --- forward / steps -------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def eval_model(self) -> nn.Module:
        """The weights validation and test use: the EMA copy when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        targets = labels
        if self.mixup is not None:
            images, targets = self.mixup(images, labels)
        logits = self.model(images)
        loss = self.train_loss(logits, targets)
        self._stop_if_not_finite(loss, batch_idx)
        # Under Mixup the accuracy is measured against the unmixed labels.
        self.train_acc1(logits.detach(), labels)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/acc1", self.train_acc1, on_step=False, on_epoch=True, prog_bar=True)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def _stop_if_not_finite(self, loss: torch.Tensor, batch_idx: int) -> None:
        bad = not bool(torch.isfinite(loss.detach()))
        if self.trainer.world_size > 1:  # every rank must stop together, or the others hang in all-reduce
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            checkpoint = getattr(self.trainer.checkpoint_callback, "last_model_path", None) or \
                getattr(self.trainer.checkpoint_callback, "best_model_path", None) or None
            raise NonFiniteLossError(self.global_step, self.current_epoch, batch_idx, float(loss.detach()), checkpoint)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Once per optimizer step, and before any callback's on_train_batch_end: a checkpoint written there
        # (ModelCheckpoint) then holds the EMA of exactly the weights it holds.
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.eval_model()(images)
        self.val_acc1(logits, labels)
        self.val_acc5(logits, labels)
        self.log("val/loss", self.eval_loss(logits, labels), on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("val/acc1", self.val_acc1, on_epoch=True, prog_bar=True)
        self.log("val/acc5", self.val_acc5, on_epoch=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.eval_model()(images)
        self.test_acc1(logits, labels)
        self.test_acc5(logits, labels)
        self.log("test/loss", self.eval_loss(logits, labels), on_epoch=True, sync_dist=True)
        self.log("test/acc1", self.test_acc1, on_epoch=True)
        self.log("test/acc5", self.test_acc5, on_epoch=True)

    # --- optimisation ----------------------------------------------------------------------------------
    def learning_rate(self) -> float:
        """The peak learning rate; with ``lr_batch_size`` set, scaled linearly by the global batch size."""
        lr = float(self.optimizer_cfg["lr"])
        reference = self.optimizer_cfg.get("lr_batch_size")
        if reference:
            accumulate = getattr(self.trainer, "accumulate_grad_batches", 1) if self._trainer else 1
            world = self.trainer.world_size if self._trainer else 1
            lr *= self.hparams.batch_size * world * accumulate / float(reference)
        return lr

    def configure_optimizers(self) -> dict:
        lr = self.learning_rate()
        optimizer = optim.build_optimizer(
            self.model, lr, self.optimizer_cfg["weight_decay"], self.optimizer_cfg["betas"], self.optimizer_cfg["eps"]
        )
        trainer = self.trainer
        lengths = optim.schedule_lengths(
            len(trainer.datamodule.train_dataloader()), trainer.limit_train_batches, trainer.accumulate_grad_batches,
            trainer.max_epochs, trainer.max_steps, self.scheduler_cfg["warmup_epochs"],
        )
        scheduler = optim.build_scheduler(
            optimizer, lengths, lr, self.scheduler_cfg["warmup_lr_ratio"], self.scheduler_cfg["min_lr_ratio"]
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric: Any) -> None:
        scheduler.step_update(num_updates=self.global_step)

    # --- checkpoints -----------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Refusing here aborts the write, so last.ckpt keeps the previous (good) state.
        bad = [name for name, value in checkpoint["state_dict"].items()
               if torch.is_floating_point(value) and not bool(torch.isfinite(value).all())]
        if bad:
            raise NonFiniteWeightsError(
                f"refusing to write a checkpoint at step {self.global_step}: {len(bad)} tensors hold NaN/Inf "
                f"(first: {bad[0]}); the previous checkpoint is kept. Lower the learning rate or check the data."
            )


def finite_or_none(value: Any) -> float | None:
    """A float for results.json, None for missing or non-finite values."""
    if value is None:
        return None
    value = float(value.item() if hasattr(value, "item") else value)
    return value if math.isfinite(value) else None
