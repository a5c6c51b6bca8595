"""AdamW with VMamba's weight-decay exclusions, and a per-step linear-warmup + cosine schedule (timm's)."""
from __future__ import annotations

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


def schedule_lengths(total_steps: int, max_epochs: int | None, warmup_epochs: float) -> ScheduleLengths:
    steps_per_epoch = total_steps / max_epochs if max_epochs and max_epochs > 0 else total_steps
    warmup = int(round(warmup_epochs * steps_per_epoch))
    return ScheduleLengths(total_steps=max(1, int(total_steps)), warmup_steps=min(warmup, max(0, int(total_steps) - 1)))


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
