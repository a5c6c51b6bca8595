"""The probe batch and its attention: the network validation uses, the probe images, the selection checked
before any work, and :func:`probe_export` (extraction, display images, scan usage)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from patchorder.artifacts import pictures
from patchorder.artifacts.compute import progress_bar
from patchorder.artifacts.options import AttentionOptions
from patchorder.attention import AttentionExport, extract_attention
from patchorder.attention.scan_usage import scan_usage
from patchorder.errors import ConfigError


def eval_network(pl_module: nn.Module) -> nn.Module:
    """The weights validation uses (the EMA copy when the module keeps one), else ``pl_module.model``."""
    if hasattr(pl_module, "eval_model"):
        return pl_module.eval_model()
    return getattr(pl_module, "model", pl_module)


def probe(datamodule: Any, n: int, who: str, setting: str) -> tuple:
    """``datamodule.probe_batch(n)`` with an error that names the setting to change."""
    try:
        return datamodule.probe_batch(n)
    except ValueError as error:
        raise ConfigError(f"{who}: {error}; lower {setting}") from None


def check_selection(model: nn.Module, options: AttentionOptions, image_size: Sequence[int]) -> None:
    """Fail early (before training) when stages, blocks or query patches do not exist in ``model``."""
    from patchorder.models.ss2d import SS2D

    present = sorted({(op.stage, op.block) for op in model.modules() if isinstance(op, SS2D)})
    if not present:
        raise ConfigError(f"{type(model).__name__} has no SS2D (VMamba) block: there is no attention to log")
    stages = sorted({s for s, _ in present})
    missing = [s for s in options.stages or [] if s not in stages]
    if missing:
        raise ConfigError(f"attention stages {missing} do not exist: the model has stages {stages}")
    chosen = [(s, b) for s, b in present if options.stages is None or s in options.stages]
    missing = [b for b in options.blocks or [] if b not in {b for _, b in chosen}]
    if missing:
        raise ConfigError(f"attention blocks {missing} exist in none of the chosen stages; the model has "
                          f"(stage, block) {present}")
    if hasattr(model, "stage_grids"):
        grid0 = model.stage_grids(int(image_size[0]), int(image_size[1]))[0]
        try:
            pictures.resolve_queries(options.query_patches, grid0)
        except ValueError as error:
            raise ConfigError(str(error)) from None



def _selected_blocks(model: nn.Module, options: AttentionOptions) -> int:
    from patchorder.models.ss2d import SS2D

    return sum(1 for op in model.modules() if isinstance(op, SS2D)
               and (options.stages is None or op.stage in options.stages)
               and (options.blocks is None or op.block in options.blocks))


def probe_export(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, datamodule: Any,
                 options: AttentionOptions) -> AttentionExport:
    """The attention of ``model`` on the probe batch (eval mode, no grad; the model's mode is restored)."""
    class_names = getattr(datamodule, "class_names", None)
    with progress_bar(_selected_blocks(model, options), "attention: blocks") as bar:
        export = extract_attention(model, images, stages=options.stages, blocks=options.blocks, merge=options.merge,
                                   reduce=options.reduce, labels=labels.tolist(), class_names=class_names,
                                   progress=lambda key: (bar.set_postfix_str(key, refresh=False), bar.update()))
    if hasattr(datamodule, "to_display"):  # the data's own normalisation, not the model's default
        export.images = np.asarray(datamodule.to_display(images.cpu()))
    if options.swap_ordering is not None:
        export.extra["scan_usage"] = scan_usage(model, images, swap=options.swap_ordering)
    return export
