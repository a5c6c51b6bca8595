"""Attention rollout (Abnar & Zuidema, 2020) across every block and stage of a VMamba, on the stage-0 patch grid.

Each SS2D block mixes patches only through its scan; everything else in a VSS block (in/out projections, norms,
the MLP, the D skip) works per patch. So a block's patch-space operator is taken as

    R_b = residual * I + (1 - residual) * A_b / rowsum(A_b)

with ``A_b`` the block's merged hidden attention (``block_attention(record, merge="sum", reduce="mean_abs")``:
routes summed per channel, then the mean over channels of |alpha|), and the identity standing for the residual
path (and the per-patch D skip). Rows of R_b sum to 1 (a query whose attention row is all zero keeps only
itself), so every relevance map below sums to 1. ``residual=0.5`` is Abnar & Zuidema's choice.

Between stages the 3x3 stride-2 downsampling is carried by mapping each coarse patch to the finer patches it
covers, with equal weight (1 / factor^2). The relevance of stage-0 patch k for final-stage patch q is then
``(U_0 R_0 ... R_last)[q, k]`` read from the last block backwards; the pooled output (what the head sees, a mean
over the final grid) gets the mean of those rows. Everything comes from the records of one forward pass
(``capture_ssm``); the depthwise 3x3 conv before each scan is local mixing that the rollout leaves out.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from patchorder.attention.hidden import block_attention
from patchorder.attention.kernel import DEFAULT_CHUNK_MB


@dataclass
class RelevanceMaps:
    """Relevance of every stage-0 patch, per image: for the pooled output and for each final-stage patch.

    per_patch (N, h * w, H, W): row q (raster index on the final h x w grid) is final patch q's map on the
    stage-0 H x W grid; pooled (N, H, W) is their mean, the map for the pooled features the head reads.
    """

    pooled: torch.Tensor
    per_patch: torch.Tensor
    grid: tuple[int, int]
    final_grid: tuple[int, int]

    def patch(self, row: int, col: int) -> torch.Tensor:
        """(N, H, W): the map of final-stage patch (row, col)."""
        h, w = self.final_grid
        if not (0 <= row < h and 0 <= col < w):
            raise ValueError(f"final-stage patch ({row}, {col}) is outside the final grid {h}x{w}")
        return self.per_patch[:, row * w + col]


def check_residual(residual: float) -> float:
    if not 0.0 <= float(residual) < 1.0:
        raise ValueError(f"residual must be in [0, 1) (the identity's weight in each block's operator), got {residual}")
    return float(residual)


def eval_mode_capture(model: nn.Module, images: torch.Tensor, stages=None):
    """Records of every SS2D block of one eval-mode, no-grad forward pass of ``model`` on ``images``."""
    from patchorder.models import capture_ssm  # imports timm; only needed here

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture_ssm(model, stages=stages) as records:
            logits = model(images.to(device))
    finally:
        model.train(was_training)
    return records, logits


def coarse_to_fine(rows: torch.Tensor, coarse: Sequence[int], fine: Sequence[int]) -> torch.Tensor:
    """(..., h*w) relevance over a coarse grid -> (..., H*W): each coarse patch split equally over the fine
    patches it covers (H = f h, W = f w)."""
    (h, w), (H, W) = coarse, fine
    if H % h or W % w:
        raise ValueError(f"grid {H}x{W} is not an integer refinement of the next stage's grid {h}x{w}")
    fy, fx = H // h, W // w
    out = rows.reshape(*rows.shape[:-1], h, w).repeat_interleave(fy, -2).repeat_interleave(fx, -1)
    return (out / (fy * fx)).reshape(*rows.shape[:-1], H * W)


def row_normalised(attn: torch.Tensor) -> torch.Tensor:
    """(N, L, L) non-negative -> rows summing to 1; an all-zero row becomes that query's identity row."""
    sums = attn.sum(-1, keepdim=True)
    eye = torch.eye(attn.shape[-1], dtype=attn.dtype, device=attn.device)
    return torch.where(sums > 0, attn / sums.clamp_min(torch.finfo(attn.dtype).tiny), eye)


def propagate(records: list, operator: Callable, residual: float) -> RelevanceMaps:
    """Carry every final-stage patch's one-hot row back through ``residual I + (1 - residual) operator(record)``
    for the records from last to first, refining at every grid change. ``records`` (forward order) is emptied
    as it goes, so each block's tensors are freed once used."""
    if not records:
        raise ValueError("no captured block: the model has no SS2D block on these images")
    final_grid = tuple(records[-1].grid)
    batch = records[-1].delta.shape[0]
    L = final_grid[0] * final_grid[1]
    delta = records[-1].delta  # float64 records (a float64 model) give float64 maps
    rows = torch.eye(L, dtype=delta.dtype, device=delta.device).expand(batch, L, L).clone()  # (N, final patches, patches of current grid)
    grid = final_grid
    while records:
        record = records.pop()
        if tuple(record.grid) != grid:
            rows = coarse_to_fine(rows, grid, record.grid)
            grid = tuple(record.grid)
        mixed = torch.bmm(rows, operator(record).to(rows.dtype))
        rows = residual * rows + (1.0 - residual) * mixed if residual else mixed
    per_patch = rows.reshape(batch, L, *grid)
    return RelevanceMaps(pooled=per_patch.mean(1), per_patch=per_patch, grid=grid, final_grid=final_grid)


def rollout(model: nn.Module, images: torch.Tensor, residual: float = 0.5,
            chunk_mb: float = DEFAULT_CHUNK_MB) -> RelevanceMaps:
    """Attention rollout of ``model`` on ``images`` (N, C, H, W) over every captured block (see the module doc).

    One eval-mode forward pass with capture on; returns float32 maps on the stage-0 grid, on the CPU.
    """
    residual = check_residual(residual)
    records, _ = eval_mode_capture(model, images)

    def operator(record):
        return row_normalised(block_attention(record, merge="sum", reduce="mean_abs", chunk_mb=chunk_mb))

    maps = propagate(records, operator, residual)
    return RelevanceMaps(maps.pooled.float().cpu(), maps.per_patch.float().cpu(), maps.grid, maps.final_grid)
