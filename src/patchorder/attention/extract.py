"""One forward pass with capture on -> every requested block's patch-space attention as an AttentionExport."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from patchorder.attention.export import AttentionExport, BlockAttention
from patchorder.attention.hidden import block_attention
from patchorder.attention.kernel import DEFAULT_CHUNK_MB, MERGES, REDUCES

# An export holds channel-reduced matrices: per-channel ones ("none") would not fit in a file.
EXPORT_REDUCES = tuple(r for r in REDUCES if r != "none")


def _pretrained_cfg(model: nn.Module) -> dict:
    """The timm pretrained_cfg of the model, or of the first submodule that has one (e.g. inside a LightningModule)."""
    for module in model.modules():
        cfg = getattr(module, "pretrained_cfg", None)
        if isinstance(cfg, dict) and cfg:
            return cfg
    return {}


def images_to_uint8(images: torch.Tensor, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None) -> np.ndarray:
    """(N, 3, H, W) normalised tensors -> uint8 (N, H, W, 3) for display.

    With ``mean``/``std`` (the model's normalisation) the images are de-normalised and clipped to [0, 1];
    without them each image is min-max scaled, since its value range is unknown.
    """
    x = images.detach().float().cpu()
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if mean is not None and std is not None:
        x = x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    else:
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _geometry(model: nn.Module, image_size: Sequence[int]) -> dict[str, Any]:
    """Every stage's grid, as the model says it (models without ``stage_grids`` record none)."""
    if not hasattr(model, "stage_grids"):
        return {}
    return {"stage_grids": [list(grid) for grid in model.stage_grids(int(image_size[0]), int(image_size[1]))]}


def extract_attention(
    model: nn.Module,
    images: torch.Tensor,
    stages: Iterable[int] | None = None,
    blocks: Iterable[int] | None = None,
    merge: str = "sum",
    reduce: str = "mean_abs",
    labels: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    chunk_mb: float = DEFAULT_CHUNK_MB,
    progress: Callable[[str], None] | None = None,
) -> AttentionExport:
    """Run ``model`` once on ``images`` (eval mode, no grad) and return the attention of every captured block.

    ``stages`` / ``blocks`` select blocks as ``capture_ssm`` does (``blocks`` counts within each stage).
    ``merge`` "sum" stores the cross-merged operator (N, L, L); "none" each route (N, K, L, L).
    ``reduce`` is the channel reduction, "mean_abs" or "mean"; per-channel matrices do not fit an export,
    get them from :func:`block_attention` with ``reduce="none"``.
    ``progress``: called with each block's key once its attention is computed (e.g. to advance a progress bar).
    """
    from patchorder.models import capture_ssm  # the model package imports timm; only needed here

    if merge not in MERGES:
        raise ValueError(f"unknown merge {merge!r}; choose one of {', '.join(map(repr, MERGES))}")
    if reduce not in EXPORT_REDUCES:
        raise ValueError(
            f"extract_attention stores channel-reduced matrices: reduce must be one of {EXPORT_REDUCES}, got "
            f"{reduce!r}; for per-channel attention call block_attention(record, reduce='none') inside capture_ssm"
        )
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"labels has {len(labels)} entries but there are {len(images)} images")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture_ssm(model, stages=stages, blocks=blocks) as records:
            model(images.to(device))
    finally:
        model.train(was_training)

    if not records:  # e.g. a wrapper whose forward never reaches the chosen blocks
        raise ValueError(f"extract_attention: the forward pass of {type(model).__name__} ran none of the selected "
                         f"SS2D blocks (stages={stages}, blocks={blocks}), so there is no attention to export")
    scheme = records[0].scheme
    exported = []
    while records:  # free each record's tensors as soon as its attention is computed
        record = records.pop(0)
        attn = block_attention(record, merge=merge, reduce=reduce, chunk_mb=chunk_mb)
        exported.append(BlockAttention(
            stage=record.stage, block=record.block, grid=tuple(record.grid), ordering=record.ordering,
            attn=attn.float().cpu().numpy(), routes=record.routes.cpu().numpy(),
        ))
        if progress is not None:
            progress(exported[-1].key)

    cfg = _pretrained_cfg(model)
    orderings_used = list(dict.fromkeys(b.ordering for b in exported))
    return AttentionExport(
        blocks=exported,
        images=images_to_uint8(images, cfg.get("mean"), cfg.get("std")),
        model=cfg.get("architecture", type(model).__name__),
        ordering=",".join(orderings_used),
        scheme=scheme,
        reduce=reduce,
        merge=merge,
        labels=[int(v) for v in labels] if labels is not None else [],
        class_names=list(class_names) if class_names is not None else None,
        extra={"image_size": list(images.shape[-2:]), **_geometry(model, images.shape[-2:])},
    )
