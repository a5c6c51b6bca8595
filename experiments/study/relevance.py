"""Whole-model views of each trained run, computed by the report from its checkpoint: the effective receptive
field of every stage before training (the untrained model: the same config built under the same seed) and after,
and the deletion/insertion AUC of rollout, attribution, input-gradient and random maps
(patchorder.attention.relevance_views) on the probe images of the validation split.

Done here rather than in the eval sweep because "before" needs a model no sweep trains. Cost per run: about
1,300-2,000 forward passes of one image (8 images: rollout, attribution, 4 maps x 17 x 2 curve points, ERFs),
a few seconds for the long_range model (2 stages, 64 px) at its training speed; the data module is built once
per data config. Also the core of experiments/faithfulness/compare.py, which runs it on any checkpoints.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

# Report settings (experiments/conf/study.yaml, report.relevance): images of the probe batch, points per curve.
DEFAULTS = {"enabled": True, "num_images": 8, "steps": 16}
MAPS = ("rollout", "attribution", "input_gradient", "random")


def load_models(ckpt_path: str | Path, seed: int | None = None, datamodules: dict | None = None):
    """(trained network, untrained network or None, data module, hyper_parameters) of a patchorder checkpoint.

    The trained network is the one validation used (EMA weights when the run kept them), eval.py's way
    (weights_only=True, only patchorder's / orderings' ``_target_``s). The untrained one is the module rebuilt
    from the same hyper_parameters after ``seed_everything(seed)``, as train.py seeds before building it
    (None: not built). ``datamodules``: a cache of built data modules by data config (runs of a study share one;
    generating the data costs more than the rest)."""
    import json

    import lightning as L
    from omegaconf import OmegaConf

    from patchorder.training import builders
    from patchorder.training.checkpoints import check_trusted_targets, hyper_parameters, read_checkpoint
    from patchorder.training.evaluate import load_module
    from patchorder.training.module import ClassificationModule

    checkpoint = read_checkpoint(ckpt_path)
    hparams = hyper_parameters(checkpoint, ckpt_path)
    check_trusted_targets(hparams, set())
    use_ema = bool((hparams.get("ema") or {}).get("enabled"))
    trained = load_module(checkpoint, hparams, hparams["ordering"], use_ema).eval_model()
    untrained = None
    if seed is not None:
        L.seed_everything(int(seed), verbose=False)
        untrained = ClassificationModule(**hparams).model  # an EMA copy starts as these weights
    key = json.dumps(hparams["data"], sort_keys=True, default=str)
    cache = {} if datamodules is None else datamodules
    if key not in cache:
        cache[key] = builders.build_datamodule(OmegaConf.create(hparams["data"]), resumable=False)
    datamodule = cache[key]
    return trained.eval(), None if untrained is None else untrained.eval(), datamodule, hparams


def winners(aucs: dict[str, tuple[float, float]]) -> tuple[str, str]:
    """Of {map: (deletion AUC, insertion AUC)}: the map that deletes fastest (lowest) and the one that inserts
    fastest (highest); on a tie the first listed."""
    return min(aucs, key=lambda m: aucs[m][0]), max(aucs, key=lambda m: aucs[m][1])


def checkpoint_relevance(ckpt_path: str | Path, seed: int | None, num_images: int = 8, steps: int | None = 16,
                         datamodules: dict | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(summary, ERF maps) of one checkpoint on ``num_images`` probe images of the validation split.

    summary: ``faithfulness`` (one row per map: mean deletion / insertion AUC over the images), ``best_deletion``
    (lowest deletion AUC), ``best_insertion`` (highest insertion AUC), ``erf`` (per stage: sum and the share of
    pixels holding 50% / 90% of the mass, ``before`` and ``after`` training), ``seconds``. ERF maps:
    ``erf_after_stage{k}`` and, with a seed, ``erf_before_stage{k}`` (H, W) float32.
    """
    from patchorder.artifacts.probe import probe
    from patchorder.attention.erf import effective_receptive_field
    from patchorder.attention.relevance import erf_summary, relevance_views
    from patchorder.training.config import ordering_label

    started = time.perf_counter()
    trained, untrained, datamodule, hparams = load_models(ckpt_path, seed, datamodules)
    images, _labels = probe(datamodule, num_images, "relevance", "report.relevance.num_images")
    arrays, views = relevance_views(trained, images, steps=steps, seed=0 if seed is None else int(seed))
    maps = {key: value for key, value in arrays.items() if key.startswith("erf_stage")}
    erf_rows = []
    for row in views["erf"]:
        stage = row["stage"]
        entry = {"stage": stage, "after": erf_summary(maps[f"erf_stage{stage}"]), "before": None}
        if untrained is not None:
            before = effective_receptive_field(untrained, images, stage=stage).numpy()
            maps[f"erf_before_stage{stage}"] = before
            entry["before"] = erf_summary(before)
        erf_rows.append(entry)
    maps = {key.replace("erf_stage", "erf_after_stage"): value for key, value in maps.items()}
    table = views["faithfulness"]
    best_deletion, best_insertion = winners({r["map"]: (r["deletion_auc"], r["insertion_auc"]) for r in table})
    summary = {
        "checkpoint": str(ckpt_path), "ordering_label": ordering_label(hparams["ordering"]),
        "images": views["images"], "steps": steps, "split": "val", "faithfulness": table,
        "best_deletion": best_deletion, "best_insertion": best_insertion,
        "erf": erf_rows, "seconds": round(time.perf_counter() - started, 3),
    }
    return summary, maps


def check_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """report.relevance: enabled (bool), num_images (>= 1), steps (>= 1, or null: one point per stage-0 patch)."""
    from study.settings import StudyError

    settings = {**DEFAULTS, **(settings or {})}
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise StudyError(f"report.relevance has unknown keys {unknown}; known: {', '.join(DEFAULTS)}")
    if not isinstance(settings["enabled"], bool):
        raise StudyError(f"report.relevance.enabled={settings['enabled']!r} must be true or false")
    for key in ("num_images", "steps"):
        value = settings[key]
        if key == "steps" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise StudyError(f"report.relevance.{key}={value!r} must be an integer >= 1"
                             + (" (or null: one point per stage-0 patch)" if key == "steps" else ""))
    return settings


def study_relevance(runs: list, checkpoint: str, settings: dict[str, Any], maps_dir: Path,
                    name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows, problems): each completed run's :func:`checkpoint_relevance` summary (with ordering and seed), its ERF
    maps written to ``maps_dir``/<name>_<run>.npz; a run whose checkpoint is missing or fails is a problem."""
    rows, problems, datamodules = [], [], {}
    for run in (r for r in runs if r.ok):
        path = run.checkpoint(checkpoint)
        if path is None:
            problems.append({"run": run.name, "ordering": run.ordering, "seed": run.seed,
                             "error": f"no {checkpoint} (or last) checkpoint file"})
            continue
        try:
            summary, maps = checkpoint_relevance(path, run.seed, settings["num_images"], settings["steps"],
                                                 datamodules)
        except Exception as error:  # one bad run must not stop the report; it is listed with its error
            problems.append({"run": run.name, "ordering": run.ordering, "seed": run.seed,
                             "error": f"{type(error).__name__}: {error}"})
            continue
        maps_dir.mkdir(parents=True, exist_ok=True)
        npz = maps_dir / f"{name}_{run.name}.npz"
        np.savez_compressed(npz, **maps)
        rows.append({"ordering": run.ordering, "seed": run.seed, "run": run.name, **summary, "maps": npz})
    return rows, problems
