"""Switches on a model's SS2D blocks for the length of a ``with`` block: recording what each selective scan
computed (:func:`capture_ssm`), and the scan ablation (:func:`scan_ablation`)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import nn

from patchorder.models.records import SSMRecord
from patchorder.models.ss2d import SS2D


@contextmanager
def capture_ssm(
    model: nn.Module, stages: Iterable[int] | None = None, blocks: Iterable[int] | None = None
) -> Iterator[list[SSMRecord]]:
    """``with capture_ssm(model) as records: model(x)`` appends one :class:`SSMRecord` per SS2D block and forward.

    ``stages`` / ``blocks`` (indices from 0; ``blocks`` counts within each stage) limit which blocks record, to
    bound memory. Records hold detached tensors on the model's device. Outside the ``with`` block nothing is
    recorded: each SS2D only checks one attribute, no hook is installed and no tensor is kept.
    """
    ops = [m for m in model.modules() if isinstance(m, SS2D)]
    if not ops:
        raise ValueError(f"capture_ssm: {type(model).__name__} has no SS2D block to record")
    stage_set = None if stages is None else {int(s) for s in stages}
    block_set = None if blocks is None else {int(b) for b in blocks}
    chosen = [
        op for op in ops
        if (stage_set is None or op.stage in stage_set) and (block_set is None or op.block in block_set)
    ]
    if not chosen:
        present = sorted({(op.stage, op.block) for op in ops})
        raise ValueError(
            f"capture_ssm: no SS2D block matches stages={sorted(stage_set) if stage_set is not None else None}, "
            f"blocks={sorted(block_set) if block_set is not None else None}; the model has (stage, block) {present}"
        )
    if any(op.capture_sink is not None for op in chosen):
        raise RuntimeError("capture_ssm: these blocks are already being captured; nested captures are not supported")
    records: list[SSMRecord] = []
    for op in chosen:
        op.capture_sink = records
    try:
        yield records
    finally:
        for op in chosen:
            op.capture_sink = None


@contextmanager
def scan_ablation(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """``with scan_ablation(model): model(x)`` runs every SS2D with its selective scan replaced by the D skip.

    Each scan then returns ``D * u``: the block keeps its projections, conv, norm and gate-free output path, but
    no patch sees any other patch through the scan. Comparing accuracy with and without it says how much of a
    result depends on the scan at all. ``enabled=False`` is a no-op (convenient for optional ablations).
    """
    ops = [m for m in model.modules() if isinstance(m, SS2D)]
    if not ops:
        raise ValueError(f"scan_ablation: {type(model).__name__} has no SS2D block to ablate")
    previous = [op.scan_ablated for op in ops]
    for op in ops:
        op.scan_ablated = bool(enabled) or op.scan_ablated
    try:
        yield model
    finally:
        for op, was in zip(ops, previous):
            op.scan_ablated = was
