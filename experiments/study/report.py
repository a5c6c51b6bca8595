"""Compile a study from its directory alone: study.json (every number), study.md (the same numbers as tables,
with the figures), figures/*.png and explorers/*.html. Runs that failed or are missing are listed, never hidden."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from patchorder.artifacts.compute import blas_threads_like_torch
from patchorder.training.results import jsonable

from study import analysis, figures, relevance, verdict
from study.collect import Evaluation, Run, ablations, curves, evaluations, training_runs
from study.markdown import render
from study.settings import Group, Plan, check_verdict, ordering_config

REPORT_FORMAT = "patchorder.study-report/1"
LOG_FILE = "study_log.json"


def relative(path: Path | None, study_dir: Path) -> str | None:
    return os.path.relpath(path, study_dir) if path is not None else None


def run_row(run: Run, plan: Plan) -> dict[str, Any]:
    csv_path = run.csv_path() if run.dir is not None else None
    return {
        "ordering": run.ordering, "seed": run.seed, "status": run.status, "error": run.error,
        "dir": relative(run.dir, plan.study_dir), **run.accuracy(),
        "epochs": run.results.get("epochs"), "wall_time_s": run.results.get("wall_time_s"),
        "train_images_per_sec": run.results.get("train_images_per_sec"),
        "test_weights": (run.results.get("test") or {}).get("weights"),
        "checkpoint": relative(run.checkpoint(plan.checkpoint), plan.study_dir) if run.ok else None,
        "curves": curves(csv_path) if csv_path is not None else None,
    }


def cell_row(cell: Evaluation, plan: Plan) -> dict[str, Any]:
    return {"train_ordering": cell.train_ordering, "seed": cell.seed, "test_ordering": cell.test_ordering,
            "status": cell.status, **cell.metrics, "checkpoint": cell.checkpoint,
            "dir": relative(cell.dir, plan.study_dir), "error": cell.error}


def scan_usage_rows(exports: dict) -> list[dict[str, Any]]:
    """Each export's model-level scan usage (patchorder.attention.scan_usage, measured when it was written)."""
    from patchorder.attention.scan_usage import MODEL_COLUMNS

    return [{"train_ordering": ordering, "seed": seed, **{k: usage.get(k) for k in MODEL_COLUMNS}}
            for (ordering, seed), export in exports.items()
            if (usage := export.extra.get("scan_usage") or {})]


def describe(runs: list[Run], group: Group) -> dict[str, Any]:
    """What was trained, from the first completed run's results.json."""
    first = next((r for r in runs if r.ok), None)
    if first is None:
        return {"data": group.name, "overrides": group.train_overrides}
    data = first.results.get("data") or {}
    return {"data": group.name, "model": first.results.get("model"), "experiment": first.results.get("experiment"),
            "image_size": data.get("image_size"), "num_classes": data.get("num_classes"),
            "images": data.get("counts"), "epochs": first.results.get("epochs"),
            "train_batches_per_epoch": first.results.get("train_batches_per_epoch"),
            "overrides": group.train_overrides}


def stage0_grid(exports: dict, runs: list[Run]) -> tuple[int, int] | None:
    """Stage 0's grid as the model said it: recorded in its attention export, else in the run's results.json."""
    for export in exports.values():
        if export.extra.get("stage_grids"):
            return tuple(export.extra["stage_grids"][0])
    grids = next((r.results.get("stage_grids") for r in runs if r.ok and r.results.get("stage_grids")), None)
    return tuple(grids[0]) if grids else None


def explorers(plan: Plan, group: Group, runs: list[Run]) -> dict[str, Any]:
    """Each completed run's HTML explorer (its own attention_final.html, else built here) and one side-by-side
    report of the two compared orderings on the first seed that has both."""
    from patchorder.explore import build_report

    out_dir = plan.path("explorers")
    methods = plan.report["explorer_methods"]
    per_run = []
    for run in (r for r in runs if r.ok and r.attention_npz() is not None):
        page = run.explorer() or build_report(run.attention_npz(), out_dir / f"{group.name}_{run.name}.html",
                                              methods=methods)
        per_run.append({"ordering": run.ordering, "seed": run.seed, "path": relative(page, plan.study_dir)})
    compare = None
    pair = plan.report.get("compare")
    if pair:
        found = {(r.ordering, r.seed): r for r in runs if r.ok and r.attention_npz() is not None}
        seed = next((s for s in plan.seeds if (pair[0], s) in found and (pair[1], s) in found), None)
        if seed is not None:
            page = build_report(found[(pair[0], seed)].attention_npz(),
                                out_dir / f"{group.name}_compare_{pair[0]}_vs_{pair[1]}_s{seed}.html",
                                compare=found[(pair[1], seed)].attention_npz(), methods=methods)
            compare = {"a": pair[0], "b": pair[1], "seed": seed, "path": relative(page, plan.study_dir)}
    return {"runs": per_run, "compare": compare}


def compile_group(plan: Plan, group: Group) -> dict[str, Any]:
    runs = training_runs(plan, group)
    cells = evaluations(plan, group, runs) if plan.cross_eval else []
    ablation_cells = ablations(plan, group, runs) if plan.scan_ablation else []
    orderings, dpi = plan.orderings, plan.report["figure_dpi"]
    figure_dir = plan.path("figures")
    rows = [run_row(r, plan) for r in runs]

    accuracy = analysis.accuracy_table(runs, orderings)
    cross = analysis.cross_table(cells, orderings) if plan.cross_eval else None
    exports, export_problems = analysis.load_exports(runs)
    block_rows = analysis.run_metrics(exports)
    stage_table = analysis.stage_metrics(block_rows, orderings)
    similarity = analysis.ordering_similarity(exports, orderings, plan.seeds)

    def figure_path(name: str) -> Path:
        return figure_dir / f"{group.name}_{name}.png"

    drawn: dict[str, Path | None] = {
        "curves": figures.curves([{"ordering": r["ordering"], "curves": r["curves"]} for r in rows if r["curves"]],
                                 orderings, figure_path("curves"), dpi),
        "accuracy": figures.accuracy(accuracy, {o: [r["test_acc1"] for r in rows if r["ordering"] == o and
                                                    r["test_acc1"] is not None] for o in orderings},
                                     orderings, figure_path("accuracy"), dpi),
        "cross": figures.cross(cross, figure_path("cross"), dpi) if cross else None,
        "attention_metrics": figures.attention_metrics(stage_table, orderings, figure_path("attention_metrics"), dpi),
        "similarity": figures.similarity(similarity, orderings, figure_path("similarity"), dpi),
    }
    grid = stage0_grid(exports, runs)
    if grid is not None:
        specs = {o: next(((r.results.get("ordering_config")) for r in runs if r.ordering == o and r.ok), None)
                 or ordering_config(o) for o in orderings}
        drawn["paths"] = figures.paths(specs, grid, figure_path("paths"), dpi)
    maps = {(o, s): analysis.mean_stage_attention(exports, o, s) for o in orderings for s in stage_table["stages"]}
    drawn["attention_maps"] = figures.attention_maps(maps, orderings, stage_table["stages"],
                                                     figure_path("attention_maps"), dpi)
    drawn["embeddings"], embedding_seed = _embeddings_figure(exports, plan, figure_path("embeddings"), dpi)
    relevance_doc, relevance_problems = _relevance(plan, group, runs)
    if relevance_doc is not None:
        for ordering in orderings:
            drawn[f"erf_{ordering}"] = figures.erf(analysis.mean_erf_maps(relevance_doc["runs"], ordering), ordering,
                                                   figure_path(f"erf_{ordering}"), dpi)
        for row in relevance_doc["runs"]:  # paths in study.json relative to the study directory
            row["maps"] = relative(row["maps"], plan.study_dir)
            row["checkpoint"] = relative(Path(row["checkpoint"]), plan.study_dir)

    failures = [{"kind": "training", "run": r.name, "ordering": r.ordering, "seed": r.seed, "status": r.status,
                 "error": r.error} for r in runs if not r.ok]
    failures += [{"kind": "cross evaluation", "run": f"{c.train_ordering}_s{c.seed} under {c.test_ordering}"
                  if c.train_ordering else relative(c.dir, plan.study_dir), "ordering": c.train_ordering,
                  "seed": c.seed, "status": c.status, "error": c.error} for c in cells
                 if c.status != "completed" or c.train_ordering is None]
    failures += [{"kind": "scan ablation", "run": f"{c.train_ordering}_s{c.seed}" if c.train_ordering else
                  relative(c.dir, plan.study_dir), "ordering": c.train_ordering, "seed": c.seed, "status": c.status,
                  "error": c.error} for c in ablation_cells if c.status != "completed" or c.train_ordering is None]
    failures += [{"kind": "attention", "run": p["run"], "status": "missing", "error": p["error"]}
                 for p in export_problems]
    failures += [{"kind": "relevance", "run": p["run"], "ordering": p["ordering"], "seed": p["seed"],
                  "status": "failed", "error": p["error"]} for p in relevance_problems]
    return {
        "description": describe(runs, group),
        "runs": rows,
        "completed": sum(r.ok for r in runs), "expected": len(runs),
        "accuracy": accuracy,
        "cross": cross,
        "cross_cells": [cell_row(c, plan) for c in cells],
        "ablation_cells": [cell_row(c, plan) for c in ablation_cells],
        "diagonal_check": analysis.diagonal_check(runs, cells) if plan.cross_eval else None,
        "attention": {
            "probe": analysis.probe_check(exports),
            "blocks": block_rows,
            "stages": stage_table,
            "within_stage_similarity": analysis.within_stage_similarity(exports, orderings),
            "ordering_similarity": similarity,
            "embedding_seed": embedding_seed,
            "scan_usage": scan_usage_rows(exports),
        },
        "relevance": relevance_doc,
        "figures": {name: relative(path, plan.study_dir) for name, path in drawn.items() if path is not None},
        "explorers": explorers(plan, group, runs),
        "failures": failures,
    }


def _relevance(plan: Plan, group: Group, runs: list[Run]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """ERF before/after and faithfulness of each completed run (study.relevance), and per ordering over seeds;
    (None, []) when report.relevance.enabled is false."""
    settings = relevance.check_settings(plan.report.get("relevance"))
    if not settings["enabled"]:
        return None, []
    started = time.time()
    rows, problems = relevance.study_relevance(runs, plan.checkpoint, settings, plan.path("relevance"), group.name)
    return {"settings": settings, "checkpoint": plan.checkpoint, "runs": rows, "by_ordering": analysis.relevance_table(rows, plan.orderings),
            "seconds": round(time.time() - started, 1)}, problems


def _embeddings_figure(exports: dict, plan: Plan, path: Path, dpi: int) -> tuple[Path | None, int | None]:
    """Patch embeddings (PCA) of every block, for the first seed with the most orderings exported."""
    from patchorder.attention import patch_embeddings

    seed = max(plan.seeds, key=lambda s: sum((o, s) in exports for o in plan.orderings), default=None)
    points, blocks = {}, []
    for ordering in plan.orderings:
        export = exports.get((ordering, seed))
        if export is None:
            continue
        for b in sorted(export.blocks, key=lambda b: (b.stage, b.block)):
            embedding = patch_embeddings(export, b.stage, b.block, ["pca"])["pca"]
            points[(ordering, b.key)] = {"coords": embedding.coords,
                                         "seq_pos": [p["seq_pos"] for p in embedding.points]}
            if b.key not in blocks:
                blocks.append(b.key)
    if not points:
        return None, None
    return figures.embeddings(points, plan.orderings, blocks, path, dpi, seed), seed


def read_log(study_dir: Path) -> dict[str, Any]:
    path = study_dir / LOG_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def compile_study(plan: Plan) -> dict[str, Any]:
    """Write study.json, study.md, figures and explorers for ``plan``'s directory; returns the document."""
    started = time.time()
    log = read_log(plan.study_dir)
    with blas_threads_like_torch():  # numpy / scipy BLAS: one busy-waiting thread per core otherwise
        groups = {group.name: compile_group(plan, group) for group in plan.groups}
    document = jsonable({
        "format": REPORT_FORMAT,
        "study_dir": str(plan.study_dir),
        "preset": plan.preset, "orderings": plan.orderings, "seeds": plan.seeds, "data": [g.name for g in plan.groups],
        "checkpoint": plan.checkpoint, "command": plan.command, "created": plan.created,
        "compiled": time.strftime("%Y-%m-%d %H:%M:%S"),
        "launch": log,
        "groups": groups,
    })
    for group in document["groups"].values():  # the answers, from the numbers above alone
        settings = check_verdict(plan.report.get("verdict"))  # plans older than the verdict have none
        group["verdict"] = jsonable(verdict.judge(group, plan.orderings, plan.seeds, settings))
    document["compile_seconds"] = round(time.time() - started, 1)
    (plan.study_dir / "study.json").write_text(json.dumps(document, indent=2) + "\n")
    (plan.study_dir / "study.md").write_text(render(document))
    return document
