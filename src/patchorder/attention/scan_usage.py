"""How much a VMamba uses its selective scans, and how much its output depends on the patch ordering.

Two questions come before any reading of orderings or attention pictures: does the scan carry part of the task
(a model that solves it with its convolutions alone gives every ordering the same result), and does the output
move when the patches are visited in another order. Per SS2D block, on a probe batch:

- ``scan_share``: ``||mix|| / (||mix|| + ||skip||)`` where ``skip`` is the cross-merged D-skip term ``D * u``
  and ``mix = y - skip`` the cross-merged rest of the scan output, i.e. what the scan mixed in from other
  patches (norms over batch, channels and patches, before out_norm). 0: the block's scan mixes nothing.
- ``swap_change``: ``||op'(x) - op(x)|| / ||op(x)||`` for the block's own input ``x``, with ``op'`` the same block
  scanning with the ``swap`` ordering. 0 for a swap to the same ordering and for an ablated scan.

For the whole model: ``logit_change`` (the same relative change of the logits when every block is swapped) and
``prediction_agreement`` (fraction of images whose top-1 class stays).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

import orderings
from patchorder.models import SS2D, SSMRecord, VMamba, capture_ssm
from patchorder.models.ss2d import cross_merge

DEFAULT_SWAP = "random"
MODEL_COLUMNS = ("scan_share_mean", "swap_change_mean", "logit_change", "prediction_agreement")


def _relative(new: torch.Tensor, old: torch.Tensor) -> float:
    return float((new.double() - old.double()).norm() / old.double().norm().clamp_min(1e-30))


def scan_share(record: SSMRecord) -> float:
    """Share of a captured block's (cross-merged) scan output that the scan mixed in, against its D skip."""
    batch, channels, length = record.u.shape
    K = record.num_routes
    skip = record.u.double() * record.D.double()[None, :, None]
    mix = record.y.double() - skip
    inverse = torch.argsort(record.routes, dim=1)
    skip_norm = cross_merge(skip.view(batch, K, channels // K, length), inverse).norm()
    mix_norm = cross_merge(mix.view(batch, K, channels // K, length), inverse).norm()
    return float(mix_norm / (mix_norm + skip_norm).clamp_min(1e-30))


def _vmamba(model: nn.Module) -> VMamba:
    for module in model.modules():
        if isinstance(module, VMamba):
            return module
    raise ValueError(f"scan usage needs a VMamba; {type(model).__name__} contains none")


def scan_usage(model: nn.Module, images: torch.Tensor, swap: Any = DEFAULT_SWAP) -> dict[str, Any]:
    """Scan share and ordering-swap sensitivity of every SS2D block of ``model`` on ``images`` (eval, no grad).

    ``swap`` is any ordering spec (name, ``Ordering``, one per stage); the model is left as it was.
    """
    vmamba = _vmamba(model)
    ops = vmamba.ss2d_blocks()
    trained = [op.ordering for op in ops]
    inputs: dict[SS2D, torch.Tensor] = {}
    hooks = [op.register_forward_hook(lambda op, args, out: inputs.__setitem__(op, args[0].detach())) for op in ops]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            with capture_ssm(vmamba) as records:
                logits = vmamba(images)
            shares = {(r.stage, r.block): scan_share(r) for r in records}
            for hook in hooks:
                hook.remove()
            hooks = []
            blocks = []
            for op, ordering in zip(ops, trained):
                reference = op(inputs[op])
                op.set_ordering(_stage_spec(swap, op.stage, len(vmamba.depths)))
                change = _relative(op(inputs[op]), reference)
                op.set_ordering(ordering)
                blocks.append({"stage": op.stage, "block": op.block, "scan_share": shares[(op.stage, op.block)],
                               "swap_change": change})
            vmamba.set_ordering(swap)
            swapped = vmamba(images)
    finally:
        for hook in hooks:
            hook.remove()
        for op, ordering in zip(ops, trained):
            op.set_ordering(ordering)
        model.train(was_training)
    return {
        "swap": _label(swap),
        "blocks": blocks,
        "scan_share_mean": sum(b["scan_share"] for b in blocks) / len(blocks),
        "swap_change_mean": sum(b["swap_change"] for b in blocks) / len(blocks),
        "logit_change": _relative(swapped, logits),
        "prediction_agreement": float((swapped.argmax(1) == logits.argmax(1)).double().mean()),
    }


def _stage_spec(swap: Any, stage: int, num_stages: int) -> Any:
    if isinstance(swap, (list, tuple)):
        if len(swap) != num_stages:
            raise ValueError(f"swap lists {len(swap)} orderings but the model has {num_stages} stages")
        return swap[stage]
    return swap


def _label(swap: Any) -> str:
    if isinstance(swap, (list, tuple)):
        return ",".join(_label(s) for s in swap)
    return orderings.resolve(swap).label
