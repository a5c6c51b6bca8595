"""Faithfulness of relevance maps: deletion and insertion curves (Petsiuk et al., RISE, 2018) and their AUC.

Patches are the cells of the map's grid (the stage-0 grid: one cell = stride x stride pixels). Deletion replaces
the patches with the baseline (the dataset mean), most relevant first; insertion starts from the baseline image
and restores them, most relevant first. At step s of ``steps`` the first round(s L / steps) patches of the order
are changed; the curve is the softmax probability of the target class (each image's predicted class, or given),
from s = 0 to s = steps. AUC is the trapezoidal area over the fraction of patches changed (0..1): a faithful
map deletes the prediction fast (low deletion AUC) and restores it fast (high insertion AUC).
Ties in a map are broken by raster index (stable sort), so a constant map deletes in raster order.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from patchorder.attention.attribution import check_targets


@dataclass
class FaithfulnessCurves:
    """fractions (S+1,) of patches changed; deletion, insertion (N, S+1) target probabilities; AUCs (N,)."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    target: np.ndarray

    def summary(self) -> dict[str, float]:
        """Means over images: deletion_auc (lower is better), insertion_auc (higher is better), and their gap."""
        d, i = float(self.deletion_auc.mean()), float(self.insertion_auc.mean())
        return {"deletion_auc": d, "insertion_auc": i, "insertion_minus_deletion": i - d}


def channel_mean(batches: Iterable) -> torch.Tensor:
    """Per-channel mean (C,) of the images of an iterable of ``(images, labels)`` batches or image tensors,
    e.g. a training dataloader: the 'dataset mean' baseline, in the model's (normalised) input space."""
    total, count = None, 0
    for batch in batches:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        s = images.double().sum((0, 2, 3))
        total = s if total is None else total + s
        count += images.shape[0] * images.shape[2] * images.shape[3]
    if not count:
        raise ValueError("channel_mean: no images in the given batches")
    return (total / count).float()


def auc(fractions: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Trapezoidal area under each row of ``curves`` over ``fractions``."""
    widths = np.diff(fractions)
    return ((curves[..., 1:] + curves[..., :-1]) * 0.5 * widths).sum(-1)


def _baseline_image(baseline, images: torch.Tensor) -> torch.Tensor:
    b = torch.as_tensor(baseline, dtype=images.dtype, device=images.device)
    channels = images.shape[1]
    if b.dim() == 1 and b.numel() == channels:
        b = b.view(channels, 1, 1)
    if b.dim() != 3 or b.shape[0] != channels:
        raise ValueError(f"baseline must be ({channels},) per-channel values or a ({channels}, H, W) image, "
                         f"got shape {tuple(b.shape)}")
    return b.expand(images.shape[1:])


def patch_steps(num_patches: int, steps: int | None) -> np.ndarray:
    """Number of patches changed at each of the steps + 1 points (0 ... num_patches)."""
    steps = num_patches if steps is None else int(steps)
    if not 1 <= steps <= num_patches:
        raise ValueError(f"steps must be in [1, {num_patches}] (the number of patches), got {steps}")
    return np.rint(np.arange(steps + 1) * num_patches / steps).astype(int)


def deletion_insertion(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, baseline, target=None,
                       steps: int | None = 16, batch_size: int = 64) -> FaithfulnessCurves:
    """Deletion and insertion curves of ``maps`` (N, h, w) for ``model`` on ``images`` (N, C, H, W).

    ``baseline``: what a removed patch becomes, (C,) per-channel values (e.g. :func:`channel_mean` of the
    training data) or a (C, H, W) image. ``steps``: points along each curve (None: one per patch).
    """
    if images.dim() != 4 or maps.dim() != 3 or maps.shape[0] != images.shape[0]:
        raise ValueError(f"images (N, C, H, W) and maps (N, h, w) with the same N expected, got "
                         f"{tuple(images.shape)} and {tuple(maps.shape)}")
    n, _, H, W = images.shape
    h, w = maps.shape[-2:]
    if H % h or W % w:
        raise ValueError(f"map grid {h}x{w} does not tile the {H}x{W} image")
    device = next(model.parameters()).device
    images = images.detach().to(device)
    base = _baseline_image(baseline, images)
    counts = patch_steps(h * w, steps)
    # rank[i, p]: where patch p comes in image i's order (most relevant first; ties by raster index).
    order = torch.argsort(-maps.reshape(n, -1).float(), dim=1, stable=True).to(device)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=device).expand(n, -1))

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            classes = check_targets(target, model(images))
            probs = {"deletion": [], "insertion": []}
            jobs = [(i, k) for i in range(n) for k in counts]
            for start in range(0, len(jobs), max(1, batch_size // 2)):
                chunk = jobs[start:start + max(1, batch_size // 2)]
                idx = torch.tensor([i for i, _ in chunk], device=device)
                changed = torch.stack([rank[i] < k for i, k in chunk]).view(-1, 1, h, w)
                changed = changed.repeat_interleave(H // h, 2).repeat_interleave(W // w, 3)
                deleted = torch.where(changed, base, images[idx])
                inserted = torch.where(changed, images[idx], base)
                out = model(torch.cat([deleted, inserted])).softmax(1)
                p = out.gather(1, classes[idx].repeat(2)[:, None])[:, 0]
                probs["deletion"].append(p[:len(chunk)])
                probs["insertion"].append(p[len(chunk):])
    finally:
        model.train(was_training)
    fractions = counts / (h * w)
    deletion = torch.cat(probs["deletion"]).view(n, -1).double().cpu().numpy()
    insertion = torch.cat(probs["insertion"]).view(n, -1).double().cpu().numpy()
    return FaithfulnessCurves(fractions, deletion, insertion, auc(fractions, deletion), auc(fractions, insertion),
                              classes.cpu().numpy())


def input_gradient(model: nn.Module, images: torch.Tensor, grid, target=None) -> torch.Tensor:
    """Plain input gradient (Simonyan et al.): |d logit_target / d x| summed over channels and over the pixels
    of each cell of ``grid`` (h, w): (N, h, w), float32 on the CPU."""
    h, w = grid
    device = next(model.parameters()).device
    x = images.detach().to(device).requires_grad_(True)
    H, W = x.shape[-2:]
    if H % h or W % w:
        raise ValueError(f"grid {h}x{w} does not tile the {H}x{W} image")
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(x)
            classes = check_targets(target, logits)
            (grad,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), x)
    finally:
        model.train(was_training)
    pixels = grad.abs().sum(1)
    return pixels.reshape(-1, h, H // h, w, W // w).sum((2, 4)).float().cpu()


def random_map(n: int, grid, seed: int = 0) -> torch.Tensor:
    """(N, h, w) uniform random relevance: the chance baseline for the curves."""
    return torch.rand(n, *grid, generator=torch.Generator().manual_seed(seed))


def compare_maps(model: nn.Module, images: torch.Tensor, baseline, target=None, steps: int | None = 16,
                 seed: int = 0, residual: float = 0.5) -> dict[str, FaithfulnessCurves]:
    """Deletion/insertion curves of the rollout, attribution, input-gradient and random maps, one model and batch.

    The target is each image's predicted class unless given (the same for every map)."""
    from patchorder.attention.attribution import attribution
    from patchorder.attention.rollout import rollout

    roll = rollout(model, images, residual=residual)
    maps = {
        "rollout": roll.pooled,
        "attribution": attribution(model, images, target=target, residual=residual).pooled,
        "input_gradient": input_gradient(model, images, roll.grid, target=target),
        "random": random_map(len(images), roll.grid, seed),
    }
    return {name: deletion_insertion(model, images, m, baseline, target=target, steps=steps)
            for name, m in maps.items()}


def faithfulness_table(curves: dict[str, FaithfulnessCurves]) -> list[dict]:
    """One row per map: name, mean deletion and insertion AUC (and their gap), sorted by deletion AUC."""
    rows = [{"map": name, **c.summary()} for name, c in curves.items()]
    return sorted(rows, key=lambda r: r["deletion_auc"])
