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

RELEVANCE_SUFFIX = "_relevance"  # <tag>_relevance.npz / .json beside the attention export <tag>.npz


def mass_fraction_area(erf: np.ndarray, fraction: float = 0.5) -> float:
    """Share of pixels needed to hold ``fraction`` of the ERF's mass (largest first): small = concentrated."""
    values = np.sort(erf.ravel())[::-1]
    total = values.sum()
    if total <= 0:
        return 0.0
    return float((np.searchsorted(np.cumsum(values), fraction * total) + 1) / values.size)


def erf_summary(erf: np.ndarray) -> dict[str, float]:
    """An ERF map's total and the share of its pixels holding 50% / 90% of the mass."""
    return {"sum": float(erf.sum()), "area_50": mass_fraction_area(erf, 0.5), "area_90": mass_fraction_area(erf, 0.9)}


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
        erf_rows.append({"stage": stage, **erf_summary(erf)})
    table = faithfulness_table(curves)
    summary = {"faithfulness": table, "best_deletion": table[0]["map"], "erf": erf_rows, "steps": steps,
               "images": int(len(images)), "baseline": "dataset mean (0 in normalised input space)"}
    return arrays, summary


def write_relevance(model: nn.Module, images: torch.Tensor, out_dir: str | Path, tag: str, labels=None,
                    display: np.ndarray | None = None, steps: int | None = 16,
                    summary_out: dict | None = None) -> dict[str, str]:
    """Write <tag>_relevance.npz (maps, curves, ERFs, display images, labels) and <tag>_relevance.json.

    ``summary_out``, when given, receives the summary (and the maps, under "maps") for logging."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays, summary = relevance_views(model, images, steps=steps)
    if display is not None:
        arrays["images"] = np.asarray(display)
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    npz = out_dir / f"{tag}{RELEVANCE_SUFFIX}.npz"
    np.savez_compressed(npz, **arrays)
    js = out_dir / f"{tag}{RELEVANCE_SUFFIX}.json"
    js.write_text(json.dumps(summary, indent=2))
    if summary_out is not None:
        summary_out.update(summary, maps={k[4:]: v for k, v in arrays.items() if k.startswith("map_")})
    return {"relevance_npz": str(npz), "relevance_json": str(js)}


def overlay(image: np.ndarray, relevance: np.ndarray, cmap: str = "inferno", alpha: float = 0.6) -> np.ndarray:
    """uint8 (H, W, 3) picture: ``relevance`` (h, w; linear scale, divided by its maximum) colour-mapped, enlarged
    to the image (each cell a block of pixels) and blended over it with weight ``alpha``."""
    from matplotlib import colormaps

    H, W = image.shape[:2]
    h, w = relevance.shape
    if H % h or W % w:
        raise ValueError(f"relevance grid {h}x{w} does not tile the {H}x{W} image")
    top = float(relevance.max())
    unit = relevance / top if top > 0 else np.zeros_like(relevance)
    colours = colormaps[cmap](np.clip(unit, 0, 1))[..., :3]
    colours = colours.repeat(H // h, 0).repeat(W // w, 1)
    blended = (1 - alpha) * image.astype(np.float64) / 255 + alpha * colours
    return (blended * 255).round().clip(0, 255).astype(np.uint8)


def scalars(summary: dict[str, Any], prefix: str = "attention") -> dict[str, float]:
    """Loggable numbers of a :func:`relevance_views` summary: AUCs per map and the ERF areas per stage."""
    out = {}
    for row in summary["faithfulness"]:
        for key in ("deletion_auc", "insertion_auc"):
            out[f"{prefix}/faithfulness/{row['map']}/{key}"] = row[key]
    for row in summary["erf"]:
        for key in ("area_50", "area_90"):
            out[f"{prefix}/erf/stage{row['stage']}/{key}"] = row[key]
    return out
