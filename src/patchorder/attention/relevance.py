"""Every whole-model view of one model on one batch, as arrays and a JSON summary: rollout, attribution,
input-gradient and random maps with their deletion/insertion curves, and the ERF of every stage.

The removal baseline is 0 in the model's input space: patchorder's data modules normalise by the training
split's statistics (ImageNet's for imagenet_subset), so 0 is the dataset mean there.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from patchorder.attention.erf import effective_receptive_field, find_vmamba
from patchorder.attention.faithfulness import compare_maps, faithfulness_table, relevance_maps


def mass_fraction_area(erf: np.ndarray, fraction: float = 0.5) -> float:
    """Share of pixels needed to hold ``fraction`` of the ERF's mass (largest first): small = concentrated."""
    values = np.sort(erf.ravel())[::-1]
    total = values.sum()
    if total <= 0:
        return 0.0
    return float((np.searchsorted(np.cumsum(values), fraction * total) + 1) / values.size)


def relevance_views(model: nn.Module, images: torch.Tensor, target=None, steps: int | None = 16,
                    seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, summary) for ``images``: maps (N, h, w) per method, curves (N, steps + 1), ERF (H, W) per stage."""
    baseline = torch.zeros(images.shape[1])
    maps = relevance_maps(model, images, target=target, seed=seed)
    curves = compare_maps(model, images, baseline, target=target, steps=steps, maps=maps)
    arrays: dict[str, np.ndarray] = {"fractions": next(iter(curves.values())).fractions}
    for name, c in curves.items():
        arrays[f"deletion_{name}"] = c.deletion.astype(np.float32)
        arrays[f"insertion_{name}"] = c.insertion.astype(np.float32)
    arrays["target"] = next(iter(curves.values())).target
    arrays.update({f"map_{name}": m.numpy().astype(np.float32) for name, m in maps.items()})
    erf_rows = []
    for stage in range(len(find_vmamba(model).layers)):
        erf = effective_receptive_field(model, images, stage=stage).numpy()
        arrays[f"erf_stage{stage}"] = erf
        erf_rows.append({"stage": stage, "sum": float(erf.sum()), "area_50": mass_fraction_area(erf, 0.5),
                         "area_90": mass_fraction_area(erf, 0.9)})
    table = faithfulness_table(curves)
    summary = {"faithfulness": table, "best_deletion": table[0]["map"], "erf": erf_rows, "steps": steps,
               "images": int(len(images)), "baseline": "dataset mean (0 in normalised input space)"}
    return arrays, summary


def write_relevance(model: nn.Module, images: torch.Tensor, out_dir: str | Path, tag: str, labels=None,
                    display: np.ndarray | None = None, steps: int | None = 16) -> dict[str, str]:
    """Write <tag>_relevance.npz (maps, curves, ERFs, display images, labels) and <tag>_relevance.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays, summary = relevance_views(model, images, steps=steps)
    if display is not None:
        arrays["images"] = display
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    npz = out_dir / f"{tag}_relevance.npz"
    np.savez_compressed(npz, **arrays)
    js = out_dir / f"{tag}_relevance.json"
    js.write_text(json.dumps(summary, indent=2))
    return {"relevance_npz": str(npz), "relevance_json": str(js)}
