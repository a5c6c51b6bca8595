"""The training recipe of :class:`~patchorder.training.module.ClassificationModule`: its one source of defaults.

The dataclasses below are a Hydra structured config: :func:`store` puts :class:`Recipe` into the ConfigStore as
``module/default`` (conf/train.yaml selects it; the Hydra plugin in hydra_plugins/ calls :func:`store`), so
``python train.py --cfg job`` shows every value, ``module.optimizer.lr=...`` overrides one, and a value of the
wrong type or an unknown key is refused before anything runs. A module built in Python without a recipe gets the
same defaults. Experiments (conf/experiment/) override what their recipe changes.

Kept free of torch and Lightning: Hydra imports it while it builds the config search path.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, List, Optional, Union

GROUP = "module"


@dataclass
class OptimizerConfig:
    """AdamW; weight decay is not applied to norms, biases, A_logs and Ds (model.no_weight_decay())."""

    lr: float = 1e-3
    # Linear scaling rule: with a number here the peak lr is lr * global_batch / lr_batch_size.
    lr_batch_size: Optional[int] = None
    weight_decay: float = 0.05
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class SchedulerConfig:
    """Per optimizer step: linear warmup from lr * warmup_lr_ratio, then cosine down to lr * min_lr_ratio."""

    warmup_epochs: Union[int, float] = 1  # an int stays an int: the fingerprint of a run hashes what was written
    warmup_lr_ratio: float = 1e-3
    min_lr_ratio: float = 1e-2


@dataclass
class MixupConfig:
    """timm Mixup/CutMix settings; ``module.mixup`` is off (null) unless an alpha is > 0 (needs data.drop_last_train)."""

    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    prob: float = 1.0
    switch_prob: float = 0.5
    mode: str = "batch"


@dataclass
class EmaConfig:
    """Validate and test with an exponential moving average of the weights."""

    enabled: bool = False
    decay: float = 0.9999
    warmup: bool = False


@dataclass
class Recipe:
    """The ``module`` section of the training config: the keyword arguments of ClassificationModule's recipe."""

    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    label_smoothing: float = 0.1
    # What the user wrote (e.g. {mixup_alpha: 0.8}); MixupConfig fills in the rest when the module is built.
    # Any, not Optional[Dict]: OmegaConf cannot add a key under a typed null (+module.mixup.mixup_alpha=0.8).
    mixup: Any = None
    ema: EmaConfig = field(default_factory=EmaConfig)


def with_defaults(settings: type, given: dict[str, Any] | None) -> dict[str, Any]:
    """The dataclass ``settings``' defaults updated by ``given`` (a plain dict, possibly partial, or None)."""
    return {**asdict(settings()), **(given or {})}


def store() -> None:
    """Register :class:`Recipe` as Hydra's ``module/default`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group=GROUP, name="default", node=Recipe, provider="patchorder")
