"""Building the VMamba of a run from its model and ordering config."""
from __future__ import annotations

from typing import Any

import timm
from torch import nn


def create_model(model_cfg: dict, ordering_cfg: Any, num_classes: int, in_chans: int = 3) -> nn.Module:
    """timm.create_model for a model config {name, scan_scheme, drop_path_rate, kwargs} and an ordering config
    (one for every stage, or ``{stages: [...]}`` with one per stage)."""
    import patchorder.models  # noqa: F401  registers the VMamba presets with timm
    from patchorder.training.config import build_ordering

    kwargs = dict(model_cfg.get("kwargs") or {})
    if model_cfg.get("scan_scheme") is not None:
        kwargs["scan_scheme"] = model_cfg["scan_scheme"]
    if model_cfg.get("drop_path_rate") is not None:
        kwargs["drop_path_rate"] = model_cfg["drop_path_rate"]
    return timm.create_model(
        model_cfg["name"], ordering=build_ordering(ordering_cfg), num_classes=num_classes, in_chans=in_chans, **kwargs
    )
