"""Effective receptive field (Luo et al. 2016; as RepLKNet and VMamba's analysis compute it)."""
from __future__ import annotations

import torch
from torch import nn


def find_vmamba(model: nn.Module):
    """The VMamba inside ``model`` (itself, or e.g. the ``model`` of a LightningModule)."""
    from patchorder.models import VMamba

    found = next((m for m in model.modules() if isinstance(m, VMamba)), None)
    if found is None:
        raise ValueError(f"{type(model).__name__} contains no patchorder VMamba; the effective receptive field "
                         f"reads a stage's output, so pass a VMamba (or a module holding one)")
    return found


def stage_index(vmamba, stage: int) -> int:
    count = len(vmamba.layers)
    if not -count <= stage < count:
        raise ValueError(f"stage={stage} but the model has {count} stages (0..{count - 1}, or -1 for the last)")
    return stage % count


def stage_output(vmamba, images: torch.Tensor, stage: int) -> torch.Tensor:
    """(N, C, h, w): the output of stage ``stage``'s blocks, before its downsampling (channels first)."""
    vmamba.check_input(images)
    x = vmamba.patch_embed(images)
    for layer in vmamba.layers[:stage]:
        x = layer(x)
    return vmamba.layers[stage].blocks(x).permute(0, 3, 1, 2)


def effective_receptive_field(model: nn.Module, images: torch.Tensor, stage: int = -1) -> torch.Tensor:
    """The (H, W) map  sum over images and input channels of relu(dS/dx),  S = sum over channels of
    relu(out[:, :, h // 2, w // 2]), ``out`` the output of ``stage``'s blocks before its downsampling (grid h x w).

    Summed, not averaged or normalised (plot it log-scaled). Eval mode; no parameter gradients are stored.
    Returns float32 on the CPU.
    """
    vmamba = find_vmamba(model)
    stage = stage_index(vmamba, stage)
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    device = next(vmamba.parameters()).device
    x = images.detach().to(device).requires_grad_(True)
    was_training = vmamba.training
    vmamba.eval()
    try:
        with torch.enable_grad():
            out = stage_output(vmamba, x, stage)
            h, w = out.shape[-2:]
            score = out[:, :, h // 2, w // 2].relu().sum()
            (grad,) = torch.autograd.grad(score, x)
    finally:
        vmamba.train(was_training)
    return grad.relu().sum((0, 1)).float().cpu()
