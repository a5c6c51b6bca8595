"""The data a report embeds: what each view needs from one or two exports, within a file-size budget.

Always stored, for every block: the image-mean attention of the merged block (sum over routes when the export
keeps routes apart), block and patch embeddings (every method asked for), the block's metrics, its routes and
the probe images. Then, while the file stays under ``max_bytes``, the optional views, cheapest tier first and
smallest matrices first inside a tier: per-image merged matrices, per-route means, per-route per-image matrices.
What does not fit is listed in ``omitted`` and the page says so where the user would look for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from orderings import route_names
from patchorder.attention.embedding import METHODS, EmbeddingCache, block_embeddings, patch_embeddings
from patchorder.attention.export import LOG8_FLOOR, AttentionExport, BlockAttention
from patchorder.attention.faithfulness import auc
from patchorder.attention.metrics import compare_exports, metrics_table, scalar_metrics
from patchorder.explore.packing import Packer, encode_matrix, quantise_log8, uncompressed_cost

# What the heatmap's numbers are, per channel reduction (patchorder.attention.kernel), in one line each.
REDUCE_MEANINGS = {
    "mean_abs": "mean over the block's channels of |alpha[query, key]|, the weight with which the key patch's input "
                "enters the query patch's output in the selective scan (no unit; rows are not normalised)",
    "mean": "mean over the block's channels of the signed alpha[query, key] (no unit; channels of opposite sign cancel)",
}


@dataclass
class Options:
    methods: tuple[str, ...] = METHODS
    seed: int = 0
    encoding: str = "auto"  # "auto": log8 for non-negative blocks, f16 for signed ones; or force "f16"
    floor: float = 1e-4  # log8: smallest value kept, relative to its row's maximum
    max_bytes: int = 15_000_000
    max_layout_points: int = 1024  # t-SNE / UMAP of patches only for blocks with at most this many (cost)
    metrics: list | None = None  # metrics_table rows of a single export, when already computed
    # Work already done on the export, reused instead of done again (write_attention_artifacts passes both):
    codes: dict | None = None  # block key -> (codes, scales): its log8_codes (patchorder.attention.export)
    embedding_cache: EmbeddingCache | None = None  # the embeddings' projections (render_attention's)


@dataclass
class _Candidate:
    """An optional view waiting for room in the budget."""

    tier: int
    size: int  # number of stored values, to try small ones first
    view: dict
    slot: str  # "mean" or "images"
    values: np.ndarray
    encoding: str
    floor: float
    description: str
    codes: tuple[np.ndarray, np.ndarray] | None = None  # quantise_log8(values, floor), when known already


def check_compatible(exports: Sequence[AttentionExport], labels: Sequence[str], what: str) -> None:
    """Exports shown together must agree on blocks, grids and probe images, or linked selection means nothing."""
    first = exports[0]
    layout = [(b.key, tuple(b.grid)) for b in first.blocks]
    for export, label in zip(exports[1:], labels[1:]):
        other = [(b.key, tuple(b.grid)) for b in export.blocks]
        if other != layout:
            raise ValueError(
                f"cannot show {label} with {labels[0]} as {what}: their blocks/grids differ "
                f"({other} vs {layout}); export the same blocks of the same architecture")
        if export.images.shape != first.images.shape:
            raise ValueError(
                f"cannot show {label} with {labels[0]} as {what}: probe images differ in shape "
                f"({export.images.shape} vs {first.images.shape}); export both with the same probe batch")


def _encoding_for(block: BlockAttention, options: Options) -> str:
    if options.encoding == "f16":
        return "f16"
    if options.encoding not in ("auto", "log8"):
        raise ValueError(f"unknown encoding {options.encoding!r}; use 'auto', 'log8' or 'f16'")
    signed = block.attn.size > 0 and float(block.attn.min()) < 0
    if signed and options.encoding == "log8":
        raise ValueError(f"block {block.key} has negative attention values: log8 cannot store them; use 'auto'")
    return "f16" if signed else "log8"


def _known_codes(block: BlockAttention, options: Options, encoding: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The export's own log8 (codes, scales) of ``block.attn`` (``Options.codes``) when they are what quantising it
    again gives: same floor and shape, and the values are theirs (the row maxima are the scales and the first row
    of every matrix quantises to its codes; ``stored`` made the values from the codes). Otherwise None."""
    known = (options.codes or {}).get(block.key)
    if known is None or encoding != "log8" or options.floor != LOG8_FLOOR:
        return None
    codes, scales = known
    attn = block.attn
    if codes.shape != attn.shape or scales.shape != attn.shape[:-1] or attn.size == 0:
        return None
    if not np.array_equal(attn.max(axis=-1), scales):
        return None
    if not np.array_equal(quantise_log8(attn[..., 0, :], options.floor)[0], codes[..., 0, :]):
        return None
    return codes, scales


def _block_payload(packer: Packer, export: AttentionExport, block: BlockAttention, options: Options,
                   metrics: list, candidates: list[_Candidate], where: str) -> dict:
    encoding = _encoding_for(block, options)
    merged = block.merged_attention()  # a sum of routes when they are kept apart; the page says so
    name = f"{block.key} ({where})" if where else block.key
    height, width = block.grid
    names = route_names(export.scheme, int(block.routes.shape[0]))
    known = _known_codes(block, options, encoding)  # per-image matrices as the export quantised them
    views = {"merged": {"mean": encode_matrix(packer, merged.mean(axis=0), encoding, options.floor), "images": None}}
    candidates.append(_Candidate(1, merged.size, views["merged"], "images", merged, encoding, options.floor,
                                 f"{name}: per-image matrices (merged)", known if block.merged else None))
    if not block.merged:
        for k, route in enumerate(names):
            view = views[str(k)] = {"mean": None, "images": None}
            per_route = block.attn[:, k]
            candidates.append(_Candidate(2, per_route[0].size, view, "mean", per_route.mean(axis=0), encoding,
                                         options.floor, f"{name}: image-mean of route {route}"))
            candidates.append(_Candidate(3, per_route.size, view, "images", per_route, encoding, options.floor,
                                         f"{name}: per-image matrices of route {route}",
                                         None if known is None else (known[0][:, k], known[1][:, k])))
    L = height * width
    nonlinear = L <= options.max_layout_points
    layouts = patch_embeddings(export, block.stage, block.block,
                               [m for m in options.methods if nonlinear or m == "pca"], options.seed,
                               options.embedding_cache)
    notes = {m: e.note for m, e in layouts.items() if e.note}
    for method in options.methods:
        if method not in layouts:
            notes[method] = (f"{method} of this block's {L} patches was not computed (the report computes t-SNE / "
                             f"UMAP up to {options.max_layout_points} patches); rebuild with python -m "
                             f"patchorder.explore --max-layout-points {L}, or choose PCA")
    return {
        "stage": block.stage, "block": block.block, "key": block.key, "grid": [height, width],
        "routes": packer.add(block.routes, "i32"), "route_names": names, "encoding": encoding,
        "views": views, "summed_routes": not block.merged,
        "patch_embedding": {m: packer.add(e.coords, "f32") for m, e in layouts.items()},
        "patch_embedding_notes": notes,
        "metrics": metrics,
    }


def _stage_embeddings(packer: Packer, export: AttentionExport, options: Options) -> dict:
    stages = {}
    for stage in export.stages():
        layouts = block_embeddings(export, stage, options.methods, options.seed, options.embedding_cache)
        first = next(iter(layouts.values()))
        stages[str(stage)] = {
            "points": [[p["block"], p["image"]] for p in first.points],
            "coords": {m: packer.add(e.coords, "f32") for m, e in layouts.items()},
            "notes": {m: e.note for m, e in layouts.items() if e.note},
        }
    return stages


def metric_rows(export: AttentionExport, other: AttentionExport | None = None,
                table: list | None = None) -> dict[str, list]:
    """Per block key: [[label, value], ...] of every scalar metric (from ``table``, metrics_table rows already
    computed, when given), plus the similarity to the compared export."""
    rows = {}
    for row in metrics_table(export) if table is None else table:
        rows[row["key"]] = [[metric.label, row[metric.name]] for metric in scalar_metrics()]
    if other is not None:
        for row in compare_exports(export, other):
            rows[row["key"]] += [["cosine to other side", row["cosine"]], ["Pearson to other side", row["pearson"]]]
    return rows


def _variant_payload(packer: Packer, export: AttentionExport, options: Options, candidates: list[_Candidate],
                     where: str, other: AttentionExport | None) -> dict:
    metrics = metric_rows(export, other, options.metrics)
    return {
        "reduce": export.reduce, "merge": export.merge,
        "blocks": [_block_payload(packer, export, b, options, metrics[b.key], candidates, where)
                   for b in export.blocks],
        "block_embeddings": _stage_embeddings(packer, export, options),
    }


def relevance_payload(packer: Packer, arrays: dict | None, export: AttentionExport, label: str) -> dict | None:
    """The whole-model views of one side (arrays of a <tag>_relevance.npz, see patchorder.attention.relevance):
    each map (N, h, w) over the stage-0 grid, each stage's ERF (H, W) over the input pixels, and per map the
    mean deletion / insertion AUC over the images. Always stored (small: N h w values per map)."""
    if arrays is None:
        return None
    source = arrays.get("__source__", "relevance file")
    names = [key[len("map_"):] for key in arrays if key.startswith("map_")]
    n = int(export.images.shape[0])
    maps = {name: np.asarray(arrays[f"map_{name}"], dtype=np.float32) for name in names}
    for name, values in maps.items():
        if values.ndim != 3 or values.shape[0] != n or values.shape != maps[names[0]].shape:
            raise ValueError(f"{label}: {source} map {name!r} has shape {values.shape}; expected ({n}, h, w) like "
                             f"every map, one per probe image of the export")
    shown = arrays.get("images")
    if shown is not None and (shown.shape != export.images.shape or not np.array_equal(shown, export.images)):
        # a stale file from an earlier run: left out, and the page says why (a report is never refused for it)
        return {"problem": f"{source} was computed on other probe images than this export, so its maps are not "
                           "shown; write both in one run (eval.py attention.export=true attention.attribution=true)"}
    stages = sorted(int(key[len("erf_stage"):]) for key in arrays if key.startswith("erf_stage"))
    erf = []
    for stage in stages:
        values = np.asarray(arrays[f"erf_stage{stage}"], dtype=np.float32)
        if values.ndim != 2:
            raise ValueError(f"{label}: {source} erf_stage{stage} has shape {values.shape}; expected (H, W)")
        erf.append({"stage": stage, "h": int(values.shape[0]), "w": int(values.shape[1]),
                    "values": packer.add(values, "f32"), "sum": float(values.sum())})
    faithfulness = []
    fractions = arrays.get("fractions")
    for name in names:
        if fractions is None or f"deletion_{name}" not in arrays or f"insertion_{name}" not in arrays:
            continue
        row = {"map": name}
        for curve in ("deletion", "insertion"):
            values = np.asarray(arrays[f"{curve}_{name}"], dtype=np.float64)
            row[f"{curve}_auc"] = float(auc(np.asarray(fractions, dtype=np.float64), values).mean())
        faithfulness.append(row)
    grid = list(maps[names[0]].shape[1:]) if names else None
    return {"source": str(source), "names": names, "grid": grid,
            "maps": {name: packer.add(values, "f32") for name, values in maps.items()},
            "erf": erf, "faithfulness": faithfulness}


def _side_payload(packer: Packer, exports: Sequence[AttentionExport], label: str, options: Options,
                  candidates: list[_Candidate], where: str, others: Sequence[AttentionExport] = (),
                  relevance: dict | None = None) -> dict:
    first = exports[0]
    reduces = [e.reduce for e in exports]
    if len(set(reduces)) != len(reduces):
        raise ValueError(f"{label}: several exports share a reduction ({reduces}); give one export per reduction")
    images = np.asarray(first.images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{label}: probe images must be uint8 (N, H, W, 3), got shape {images.shape}")
    return {
        "label": label, "model": first.model, "ordering": first.ordering, "scheme": first.scheme,
        "images": {"n": int(images.shape[0]), "h": int(images.shape[1]), "w": int(images.shape[2]),
                   "pixels": packer.add(images, "u8")},
        "image_names": first.image_names(),
        "stages": first.stages(),
        "relevance": relevance_payload(packer, relevance, first, label),
        "variants": [_variant_payload(packer, e, options, candidates,
                                      ", ".join(x for x in (where, e.reduce if len(exports) > 1 else "") if x),
                                      _same_reduce(e, others))
                     for e in exports],
    }


def _same_reduce(export: AttentionExport, others: Sequence[AttentionExport]) -> AttentionExport | None:
    return next((o for o in others if o.reduce == export.reduce), None)


def build_payload(sides: Sequence[tuple[Sequence[AttentionExport], str]], options: Options,
                  fixed_bytes: int, relevance: Sequence[dict | None] | None = None) -> tuple[dict, Packer]:
    """JSON payload + packed arrays for one or two sides, each a list of exports (one per reduction) and a label.

    ``relevance``: per side, the arrays of its <tag>_relevance.npz (explore.source.load_relevance) or None.
    ``fixed_bytes`` is what the page costs without data (template, script, style), counted against the budget.
    """
    for exports, label in sides:
        if not exports:
            raise ValueError(f"{label}: no exports given")
        for export in exports:
            if not export.blocks:
                raise ValueError(f"{label}: the export holds no blocks; export at least one block's attention")
        check_compatible(exports, [label] * len(exports), "another reduction")
    if len(sides) == 2:
        check_compatible([sides[0][0][0], sides[1][0][0]], [sides[0][1], sides[1][1]], "a comparison")
    packer = Packer()
    candidates: list[_Candidate] = []
    names = ["left", "right"] if len(sides) == 2 else [""]
    payload = {
        "version": 1,
        "sides": [_side_payload(packer, exports, label, options, candidates, where,
                                others=sides[1 - i][0] if len(sides) == 2 else (),
                                relevance=(relevance or [None] * len(sides))[i])
                  for i, ((exports, label), where) in enumerate(zip(sides, names))],
    }
    omitted, omitted_bytes = _fill_budget(packer, candidates, options.max_bytes - fixed_bytes - _json_size(payload))
    payload["omitted"] = omitted
    payload["omitted_bytes"] = omitted_bytes  # what keeping them would add to the file, at most
    payload["budget_bytes"] = options.max_bytes
    whole = fixed_bytes + _json_size(payload) + packer.encoded_size() + omitted_bytes
    payload["needed_mb"] = int(np.ceil(whole / 1e6))  # a --max-mb that keeps every view
    return payload, packer


def _json_size(payload: dict) -> int:
    import json

    return len(json.dumps(payload))


def _fill_budget(packer: Packer, candidates: list[_Candidate], room: int) -> tuple[list[str], int]:
    """Add optional views cheapest tier first, smallest first, while the file stays within ``room`` bytes.

    Returns what was left out and how many bytes it would have added (at most: a view that could not fit at any
    size, once the required views fill the budget, is not compressed and counts with its uncompressed size).
    """
    omitted, omitted_bytes = [], 0
    used = packer.encoded_size()
    json_per_view = 120  # the JSON reference of one stored view, generously
    for candidate in sorted(candidates, key=lambda c: (c.tier, c.size)):
        if used + json_per_view > room:  # no room left at all: deflating the view would only measure it
            omitted.append(candidate.description)
            omitted_bytes += uncompressed_cost(candidate.values, candidate.encoding) + json_per_view
            continue
        mark = len(packer.entries)
        ref = encode_matrix(packer, candidate.values, candidate.encoding, candidate.floor, candidate.codes)
        added = sum(packer.cost(i) for i in range(mark, len(packer.entries))) + json_per_view
        if used + added > room:
            packer.truncate(mark)
            omitted.append(candidate.description)
            omitted_bytes += added
            continue
        used += added
        candidate.view[candidate.slot] = ref
    return omitted, omitted_bytes
