"""AdamW with VMamba's weight-decay exclusions, and a per-step linear-warmup + cosine schedule (timm's)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch import nn


def no_weight_decay_patterns(model: nn.Module) -> set[str]:
    """fnmatch patterns of parameters kept out of weight decay, from the model's ``no_weight_decay()``.

    VMamba lists its A_logs and Ds there. A bare name such as "A_logs" also matches it inside any submodule.
    """
    names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    return names | {f"*.{name}" for name in names if "." not in name and "*" not in name}


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and the rest (norms, biases, every 1-D tensor, no_weight_decay() names)."""
    return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_weight_decay_patterns(model))


@dataclass(frozen=True)
class ScheduleLengths:
    """Optimizer steps in the whole run and in the warmup."""

    total_steps: int
    warmup_steps: int


def schedule_lengths(
    train_batches: int,
    limit_train_batches: int | float | None,
    accumulate_grad_batches: int,
    max_epochs: int | None,
    max_steps: int,
    warmup_epochs: float,
) -> ScheduleLengths:
    """Optimizer steps of a run from its training batches per epoch and the Trainer's limits.

    The same count as Lightning's ``trainer.estimated_stepping_batches``, computed from the loader's length
    instead: asking Lightning would build and start the training loader before a checkpoint's data position is
    restored, and a resumed run would then replay the epoch from its first batch.
    """
    limit = 1.0 if limit_train_batches is None else limit_train_batches
    batches = min(train_batches, int(limit)) if isinstance(limit, int) else int(train_batches * float(limit))
    per_epoch = max(1, math.ceil(batches / accumulate_grad_batches))
    total = per_epoch * max_epochs if max_epochs is not None and max_epochs >= 0 else None
    if max_steps is not None and max_steps >= 0:
        total = max_steps if total is None else min(total, max_steps)
    if total is None:
        raise ValueError("training has no end (max_epochs=-1 and max_steps=-1): set trainer.max_epochs or max_steps")
    warmup = int(round(warmup_epochs * per_epoch))
    return ScheduleLengths(total_steps=max(1, total), warmup_steps=min(warmup, max(0, total - 1)))


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    lengths: ScheduleLengths,
    lr: float,
    warmup_lr_ratio: float,
    min_lr_ratio: float,
) -> CosineLRScheduler:
    """Linear warmup from ``lr * warmup_lr_ratio`` to ``lr``, then cosine down to ``lr * min_lr_ratio``.

    Stepped per optimizer step with ``step_update(global_step)``; the cosine spans the steps after the warmup.
    """
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, lengths.total_steps - lengths.warmup_steps),
        lr_min=lr * min_lr_ratio,
        warmup_t=lengths.warmup_steps,
        warmup_lr_init=lr * warmup_lr_ratio,
        warmup_prefix=True,
        t_in_epochs=False,
    )
