"""Numbers of a study: accuracy over seeds, the cross table, and attention metrics / similarities computed with
patchorder.attention (metrics_table, stage_summary, block_similarity_matrix, compare_exports) on the exports
the runs wrote (<run dir>/attention/attention_final.npz: the final weights on the fixed probe batch)."""
from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from typing import Any, Iterable

import numpy as np

from patchorder.attention import AttentionExport, block_similarity_matrix, compare_exports, load, metrics_table
from patchorder.attention import scalar_metrics, stage_summary

from study.collect import Evaluation, Run
from study.relevance import winners

ACCURACY_KEYS = ("test_acc1", "test_acc5", "best_val_acc1")


def spread(values: Iterable[float | None]) -> dict[str, Any]:
    """mean, std (sample, n-1; 0 for one value), min, max and n of the values that exist."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(present), "std": statistics.stdev(present) if len(present) > 1 else 0.0,
            "min": min(present), "max": max(present), "n": len(present)}


def accuracy_table(runs: list[Run], orderings: list[str]) -> dict[str, dict[str, Any]]:
    """Per ordering: spread over seeds of test top-1 / top-5 and best validation top-1 (completed runs)."""
    table = {}
    for ordering in orderings:
        done = [r.accuracy() for r in runs if r.ordering == ordering and r.ok]
        table[ordering] = {key: spread(a[key] for a in done) for key in ACCURACY_KEYS}
    return table


def cross_table(cells: list[Evaluation], orderings: list[str]) -> dict[str, Any]:
    """rows: training ordering, columns: test ordering; each cell the spread over seeds of eval top-1."""
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for cell in cells:
        if cell.status == "completed" and cell.train_ordering and cell.metrics.get("acc1") is not None:
            values[(cell.train_ordering, cell.test_ordering)].append(cell.metrics["acc1"])
    return {"rows": orderings, "columns": orderings,
            "acc1": {a: {b: spread(values[(a, b)]) for b in orderings} for a in orderings}}


def diagonal_check(runs: list[Run], cells: list[Evaluation]) -> dict[str, Any]:
    """The cross table's diagonal re-evaluates each run's own checkpoint with its own ordering: it must equal the
    run's test top-1 (when both used the best checkpoint). Largest absolute difference over the runs."""
    test = {(r.ordering, r.seed): r.accuracy()["test_acc1"] for r in runs if r.ok}
    weights = {(r.ordering, r.seed): (r.results.get("test") or {}).get("weights") for r in runs if r.ok}
    pairs = [(test[(c.train_ordering, c.seed)], c.metrics["acc1"]) for c in cells
             if c.status == "completed" and c.train_ordering == c.test_ordering
             and test.get((c.train_ordering, c.seed)) is not None and c.metrics.get("acc1") is not None]
    return {"pairs": len(pairs), "max_abs_difference": max((abs(a - b) for a, b in pairs), default=None),
            "train_test_weights": sorted({str(w) for w in weights.values()})}


# --- attention ---------------------------------------------------------------------------------------------
def load_exports(runs: list[Run]) -> tuple[dict[tuple[str, int], AttentionExport], list[dict[str, str]]]:
    """Exports of the completed runs, keyed (ordering, seed), and the runs whose export is missing or unreadable."""
    exports, problems = {}, []
    for run in (r for r in runs if r.ok):
        path = run.attention_npz()
        if path is None:
            problems.append({"run": run.name, "error": "no attention/attention_final.npz (attention callback off?)"})
            continue
        try:
            exports[(run.ordering, run.seed)] = load(path)
        except (OSError, ValueError, KeyError) as error:
            problems.append({"run": run.name, "error": f"{path.name}: {error}"})
    return exports, problems


def run_metrics(exports: dict[tuple[str, int], AttentionExport]) -> list[dict[str, Any]]:
    """metrics_table of every export, one row per run and block, with the run's ordering config and seed added
    (``train_ordering``, ``seed``; the row's own ``ordering`` is the label the export recorded)."""
    return [{**row, "train_ordering": ordering, "seed": seed}
            for (ordering, seed), export in exports.items() for row in metrics_table(export)]


def stage_metrics(block_rows: list[dict[str, Any]], orderings: list[str]) -> dict[str, Any]:
    """Per ordering and stage: spread over seeds of each run's stage mean (stage_summary of its block rows), for
    every scalar metric of the registry (patchorder.attention.metrics.METRICS)."""
    per_run: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for row in block_rows:
        per_run[(row["train_ordering"], row["seed"])].append(row)
    summaries = [(key, s) for key, rows in per_run.items() for s in stage_summary(rows)]
    stages = sorted({s["stage"] for _, s in summaries})
    table = {}
    for ordering in orderings:
        table[ordering] = {}
        for stage in stages:
            members = [s for (o, _), s in summaries if o == ordering and s["stage"] == stage]
            table[ordering][str(stage)] = {m.name: spread(s.get(m.name) for s in members) for m in scalar_metrics()}
    grids = {str(s["stage"]): s["grid"] for _, s in summaries}
    return {"stages": stages, "grids": grids, "by_ordering": table}


def within_stage_similarity(exports: dict[tuple[str, int], AttentionExport],
                            orderings: list[str]) -> dict[str, Any]:
    """Do blocks of a stage attend alike? Mean cosine between different blocks' image-mean attention
    (block_similarity_matrix), per run, then spread over seeds per ordering; stages with one block are left out."""
    per: dict[tuple[str, int], list[float]] = defaultdict(list)
    for (ordering, _), export in exports.items():
        for stage in export.stages():
            keys, matrix = block_similarity_matrix(export, stage)
            if len(keys) > 1:
                off = matrix[~np.eye(len(keys), dtype=bool)]
                per[(ordering, stage)].append(float(np.nanmean(off)))
    stages = sorted({stage for _, stage in per})
    return {"stages": stages,
            "by_ordering": {o: {str(s): spread(per.get((o, s), [])) for s in stages} for o in orderings}}


def same_probe(a: AttentionExport, b: AttentionExport) -> bool:
    return a.images.shape == b.images.shape and bool(np.array_equal(a.images, b.images))


def ordering_similarity(exports: dict[tuple[str, int], AttentionExport], orderings: list[str],
                        seeds: list[int]) -> dict[str, Any]:
    """Same block, same probe images, different orderings (compare_exports): cosine of the image-mean attention.

    Pairs: different orderings of the same seed, and the same ordering over two seeds (how much training noise
    alone changes attention, the yardstick for the first). Pairs whose probe images differ are skipped and listed.
    """
    block_rows, skipped = [], []
    pairs = [((a, s), (b, s)) for s in seeds for a, b in itertools.combinations(orderings, 2)]
    pairs += [((o, s), (o, t)) for o in orderings for s, t in itertools.combinations(seeds, 2)]
    for key_a, key_b in pairs:
        if key_a not in exports or key_b not in exports:
            continue
        if not same_probe(exports[key_a], exports[key_b]):
            skipped.append({"a": list(key_a), "b": list(key_b), "reason": "different probe images"})
            continue
        for row in compare_exports(exports[key_a], exports[key_b]):
            block_rows.append({"ordering_a": key_a[0], "seed_a": key_a[1], "ordering_b": key_b[0],
                               "seed_b": key_b[1], "key": row["key"], "stage": row["stage"], "block": row["block"],
                               "cosine": row["cosine"], "pearson": row["pearson"]})
    stages = sorted({r["stage"] for r in block_rows})
    matrix: dict[str, dict[str, dict[str, Any]]] = {}
    for stage in stages:
        matrix[str(stage)] = {}
        for a in orderings:
            matrix[str(stage)][a] = {}
            for b in orderings:
                values = [r["cosine"] for r in block_rows if r["stage"] == stage and
                          {r["ordering_a"], r["ordering_b"]} == {a, b} and (a != b or r["seed_a"] != r["seed_b"])]
                matrix[str(stage)][a][b] = spread(values)
    return {"stages": stages, "matrix": matrix, "blocks": block_rows, "skipped": skipped}


def probe_check(exports: dict[tuple[str, int], AttentionExport]) -> dict[str, Any]:
    keys = list(exports)
    identical = all(same_probe(exports[keys[0]], exports[k]) for k in keys[1:]) if keys else None
    first = exports[keys[0]] if keys else None
    return {"identical_across_runs": identical, "num_images": int(len(first.images)) if first else None,
            "labels": list(first.labels) if first else None}


def mean_stage_attention(exports: dict[tuple[str, int], AttentionExport], ordering: str,
                         stage: int) -> np.ndarray | None:
    """(L, L) attention of one ordering's stage, averaged over images, the stage's blocks and the seeds."""
    matrices = [b.mean_attention() for (o, _), e in exports.items() if o == ordering for b in e.blocks
                if b.stage == stage]
    return np.mean(matrices, axis=0) if matrices else None


def relevance_table(rows: list[dict[str, Any]], orderings: list[str]) -> dict[str, Any]:
    """Per ordering, over its seeds (study.relevance rows): each map's deletion / insertion AUC (spread), the map
    that wins each (lowest mean deletion AUC, highest mean insertion AUC), and each stage's ERF numbers before and
    after training (spread of sum, area_50, area_90)."""
    table = {}
    for ordering in orderings:
        mine = [r for r in rows if r["ordering"] == ordering]
        if not mine:
            table[ordering] = None
            continue
        names = [row["map"] for row in mine[0]["faithfulness"]]
        faith = []
        for name in names:
            cells = [next(x for x in r["faithfulness"] if x["map"] == name) for r in mine]
            faith.append({"map": name, "deletion_auc": spread(c["deletion_auc"] for c in cells),
                          "insertion_auc": spread(c["insertion_auc"] for c in cells)})
        erf = []
        for stage in sorted({e["stage"] for r in mine for e in r["erf"]}):
            entries = [e for r in mine for e in r["erf"] if e["stage"] == stage]
            erf.append({"stage": stage, **{when: {key: spread((e[when] or {}).get(key) for e in entries)
                                                  for key in ("sum", "area_50", "area_90")}
                                           for when in ("before", "after")}})
        best_deletion, best_insertion = winners({f["map"]: (f["deletion_auc"]["mean"], f["insertion_auc"]["mean"])
                                                 for f in faith})
        table[ordering] = {"seeds": [r["seed"] for r in mine], "faithfulness": faith,
                           "best_deletion": best_deletion, "best_insertion": best_insertion, "erf": erf}
    return table


def mean_erf_maps(rows: list[dict[str, Any]], ordering: str) -> dict[tuple[str, int], np.ndarray]:
    """(when, stage) -> the mean over the ordering's seeds of each ERF map divided by its maximum (the maps'
    scales differ between seeds; their shapes are what the figure compares)."""
    stacks: dict[tuple[str, int], list[np.ndarray]] = defaultdict(list)
    for row in (r for r in rows if r["ordering"] == ordering):
        with np.load(row["maps"]) as maps:
            for key in maps.files:  # erf_before_stage0, erf_after_stage1, ...
                when, stage = key[len("erf_"):].split("_stage")
                top = float(maps[key].max())
                stacks[(when, int(stage))].append(maps[key] / top if top > 0 else maps[key])
    return {key: np.mean(values, axis=0) for key, values in stacks.items()}
