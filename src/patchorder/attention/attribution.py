"""Class-specific attribution: the hidden attention weighted by gradients of the target logit (Mamba-Attr style).

Following Chefer et al.'s transformer attribution as HiddenMambaAttn applies it to Mamba (arXiv 2403.01590), each
block contributes  Abar = mean over channels c of relu(dlogit/dalpha_c * alpha_c)  in patch space. Here it is
exact and needs no gradient through the attention: a block's scan output is y_c = alpha_c u_c (+ D u_c), with
alpha_c the routes' attention summed (the cross-merge), so dlogit/dalpha_c[q, k] = g_c[q] u_c[k] with g = dlogit/dy
at the cross-merged output, and

    Abar[q, k] = mean_c relu(g_c[q] * alpha_c[q, k] * u_c[k]),

the positive part of each key's contribution to the logit through query q. Normalisation: gradients have an
arbitrary scale, so each block's Abar is divided by its mean row sum (its rows then sum to 1 on average, which
keeps how much more some queries matter to the logit than others); then, as in the rollout,
R_b = residual * I + (1 - residual) * Abar_b, carried through the downsampling and read from the last block
back to the stage-0 grid. The maps are finally divided by their sum, so each sums to 1 like the rollout's.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from patchorder.attention.hidden import block_attention
from patchorder.attention.rollout import RelevanceMaps, check_residual, propagate

# Working memory for one chunk of per-channel matrices (channels x L x L floats of one image).
_CHUNK_BYTES = 256 << 20


def check_targets(target, logits: torch.Tensor) -> torch.Tensor:
    """None -> the predicted classes; an int or a sequence of one class per image -> a LongTensor (N,)."""
    n, classes = logits.shape
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"target must be one class or one per image ({n}), got {t.numel()} values")
    if (t < 0).any() or (t >= classes).any():
        raise ValueError(f"target classes must be in [0, {classes}), got {t.tolist()}")
    return t.clone()


def raster(seq: torch.Tensor, route: torch.Tensor) -> torch.Tensor:
    """(N, d, L) in the sequence order of ``route`` -> raster order."""
    return seq[..., torch.argsort(route)]


def _slice(record, image: int, c0: int, c1: int):
    """The record restricted to one image and channels c0:c1 of every route (route-major layout kept)."""
    K, d = record.num_routes, record.channels_per_route

    def channels(x):  # (b, K*d, ...) -> (1, K*(c1-c0), ...)
        x = x[image:image + 1]
        return x.reshape(1, K, d, *x.shape[2:])[:, :, c0:c1].reshape(1, K * (c1 - c0), *x.shape[2:])

    return dataclasses.replace(
        record, u=channels(record.u), delta=channels(record.delta), y=channels(record.y),
        A=record.A.reshape(K, d, -1)[:, c0:c1].reshape(K * (c1 - c0), -1), D=record.D.reshape(K, d)[:, c0:c1].reshape(-1),
        B=record.B[image:image + 1], C=record.C[image:image + 1],
    )


def gradient_weighted_attention(record, grad: torch.Tensor) -> torch.Tensor:
    """(N, L, L): mean_c relu(g_c[q] alpha_c[q, k] u_c[k]) for one captured block.

    ``grad`` (N, d, L): d logit / d (cross-merged scan output), raster order.
    """
    d, L = record.channels_per_route, record.routes.shape[1]
    batch = record.delta.shape[0]
    u = raster(record.u[:, :d], record.routes[0])  # every route scans the same features: route 0 mapped back
    chunk = max(1, min(d, _CHUNK_BYTES // (L * L * 4)))
    out = torch.zeros(batch, L, L, device=grad.device)
    for image in range(batch):
        for c0 in range(0, d, chunk):
            c1 = min(d, c0 + chunk)
            alpha = block_attention(_slice(record, image, c0, c1), merge="sum", reduce="none")[0]  # (c, L, L)
            alpha.mul_(grad[image, c0:c1, :, None].to(alpha.dtype)).mul_(u[image, c0:c1, None, :].to(alpha.dtype))
            out[image] += alpha.clamp_min_(0).sum(0).to(out.dtype)
    return out / d


def attribution(model: nn.Module, images: torch.Tensor, target=None, residual: float = 0.5) -> RelevanceMaps:
    """Gradient-weighted attention rollout for class ``target`` (None: each image's predicted class).

    One eval-mode forward and backward pass of ``model`` (no parameter gradients are stored); maps (float32,
    CPU) on the stage-0 grid, each summing to 1, as :class:`RelevanceMaps` (``pooled`` is the class map).
    """
    from patchorder.models import SS2D, capture_ssm

    residual = check_residual(residual)
    ops = [m for m in model.modules() if isinstance(m, SS2D)]
    merged: list[torch.Tensor] = []
    hooks = [op.out_norm.register_forward_pre_hook(lambda _m, args: merged.append(args[0])) for op in ops]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), capture_ssm(model) as records:
            logits = model(images.to(device))
            classes = check_targets(target, logits)
            score = logits.gather(1, classes[:, None]).sum()
            grads = torch.autograd.grad(score, merged, allow_unused=True)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if len(grads) != len(records):
        raise RuntimeError(f"attribution: {len(records)} captured blocks but {len(grads)} merged scan outputs")
    # (N, H, W, d) -> (N, d, L); a block the logit does not depend on gets a zero gradient.
    grads = [torch.zeros_like(y) if g is None else g for g, y in zip(grads, merged)]
    by_record = {id(r): g.detach().flatten(1, 2).transpose(1, 2) for r, g in zip(records, grads)}
    del merged, grads, logits

    def operator(record):
        weighted = gradient_weighted_attention(record, by_record.pop(id(record)))
        scale = weighted.sum(-1).mean(-1)[:, None, None]
        return torch.where(scale > 0, weighted / scale.clamp_min(torch.finfo(weighted.dtype).tiny), 0.0)

    maps = propagate(records, operator, residual)
    total = maps.per_patch.sum((-2, -1), keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    per_patch = (maps.per_patch / total).float().cpu()
    pooled = maps.pooled / maps.pooled.sum((-2, -1), keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return RelevanceMaps(pooled.float().cpu(), per_patch, maps.grid, maps.final_grid)
