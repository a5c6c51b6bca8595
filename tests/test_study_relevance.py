"""The study's ERF and faithfulness section (experiments/study/relevance.py, analysis.relevance_table, the report):
a real tiny training run compiled as a one-run study. Oracles: the "after" numbers against eval.py
``attention.attribution=true`` on the same checkpoint (another pipeline, run as a user runs it), the "before" ERF
against the ERF of the very weights train.py started from (saved by a callback during training), the per-ordering
table against a hand computation on synthetic rows."""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from train_support import REPO, TINY, read_json, run_script

sys.path.insert(0, str(REPO / "experiments"))

from study import analysis  # noqa: E402
from study.relevance import check_settings  # noqa: E402
from study.settings import Group, Plan, StudyError, check_report  # noqa: E402

SEED = 3
IMAGES, STEPS = 3, 8
MAPS = ("rollout", "attribution", "input_gradient", "random")


class SaveInitialWeights(L.Callback):
    """Saves the model's weights as training starts: what "before training" must be."""

    def __init__(self, path: str):
        self.path = path

    def on_fit_start(self, trainer, pl_module):
        torch.save(pl_module.model.state_dict(), self.path)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from study.report import compile_study

    root = tmp_path_factory.mktemp("relevance_study")
    study_dir = root / "study"
    run = run_script("train.py", [*TINY, "trainer.max_epochs=1", "test=false", "logger=csv", "cpu_threads=1",
                                  f"seed={SEED}", f"paths.output_dir={study_dir / 'train_digits' / f'0_row_major_s{SEED}'}",
                                  "+callbacks.init._target_=test_study_relevance.SaveInitialWeights",
                                  f"+callbacks.init.path={root / 'init.pt'}"], root, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    report = check_report({"explorer_methods": ["pca"], "relevance": {"num_images": IMAGES, "steps": STEPS}},
                          ["row_major"])
    plan = Plan(study_dir=study_dir, preset=None, orderings=["row_major"], seeds=[SEED],
                groups=[Group("digits", [], "train_digits", "eval_digits", "")],
                ordering_labels={"row_major": "row_major"}, eval_overrides=[], launcher_overrides=[], parallel=1,
                cross_eval=False, checkpoint="last", report=report)
    torch.set_num_threads(1)
    document = compile_study(plan)
    return root, study_dir, document["groups"]["digits"]


def test_after_training_numbers_match_eval_py(compiled, tmp_path):
    root, study_dir, group = compiled
    (row,) = group["relevance"]["runs"]
    ckpt = study_dir / row["checkpoint"]
    assert ckpt.name == "last.ckpt" and (row["ordering"], row["seed"], row["images"]) == ("row_major", SEED, IMAGES)
    run = run_script("eval.py", [f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path}", "split=val",
                                 "trainer.limit_test_batches=1", "attention.attribution=true",
                                 f"attention.num_images={IMAGES}", f"attention.attribution_steps={STEPS}",
                                 "cpu_threads=1"], tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    paths = read_json(tmp_path / "results.json")["attention"]
    reference = json.loads(open(paths["relevance_json"]).read())
    mine = {r["map"]: r for r in row["faithfulness"]}
    assert set(mine) == set(MAPS)
    for ref in reference["faithfulness"]:
        if ref["map"] == "random":  # the study draws each run's random map with its seed, eval.py with 0
            continue
        for key in ("deletion_auc", "insertion_auc"):
            np.testing.assert_allclose(mine[ref["map"]][key], ref[key], rtol=1e-5, atol=1e-7)
    data = np.load(paths["relevance_npz"])
    with np.load(study_dir / row["maps"]) as maps:
        stages = sorted(int(k.split("stage")[1]) for k in maps.files if k.startswith("erf_after"))
        assert stages == [e["stage"] for e in row["erf"]] == list(range(4))
        for stage in stages:
            np.testing.assert_allclose(maps[f"erf_after_stage{stage}"], data[f"erf_stage{stage}"], rtol=1e-4,
                                       atol=1e-6)
    assert row["best_deletion"] == min(row["faithfulness"], key=lambda r: r["deletion_auc"])["map"]
    assert row["best_insertion"] == max(row["faithfulness"], key=lambda r: r["insertion_auc"])["map"]


def test_before_training_is_the_initial_weights(compiled):
    from patchorder.attention import effective_receptive_field
    from study.relevance import load_models

    root, study_dir, group = compiled
    (row,) = group["relevance"]["runs"]
    trained, _, datamodule, _ = load_models(study_dir / row["checkpoint"])
    initial = load_models(study_dir / row["checkpoint"])[0]  # same architecture, then the saved start weights
    initial.load_state_dict(torch.load(root / "init.pt", weights_only=True))
    images, _ = datamodule.probe_batch(IMAGES)
    with np.load(study_dir / row["maps"]) as maps:
        for entry in row["erf"]:
            stage = entry["stage"]
            before = effective_receptive_field(initial, images, stage=stage).numpy()
            np.testing.assert_allclose(maps[f"erf_before_stage{stage}"], before, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(entry["before"]["sum"], before.sum(), rtol=1e-4)
            after = effective_receptive_field(trained, images, stage=stage).numpy()
            assert not np.allclose(after, before, rtol=1e-3)  # training changed the model


def test_report_shows_erf_figures_and_faithfulness_table(compiled):
    _, study_dir, group = compiled
    entry = group["relevance"]["by_ordering"]["row_major"]
    (row,) = group["relevance"]["runs"]
    assert (study_dir / group["figures"]["erf_row_major"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (study_dir / "study.md").read_text()
    assert f"]({group['figures']['erf_row_major']})" in markdown
    for ref in row["faithfulness"]:
        cell = next(f for f in entry["faithfulness"] if f["map"] == ref["map"])
        assert cell["deletion_auc"]["mean"] == ref["deletion_auc"] and cell["deletion_auc"]["n"] == 1
        assert f"| {ref['map']} | {ref['deletion_auc']:.4f} | {ref['insertion_auc']:.4f} | 1 |" in markdown
    assert f"Wins: deletion **{row['best_deletion']}**, insertion **{row['best_insertion']}**." in markdown
    assert not [f for f in group["failures"] if f["kind"] == "relevance"]


def synthetic_row(ordering, seed, aucs, erf_area):
    return {"ordering": ordering, "seed": seed,
            "faithfulness": [{"map": m, "deletion_auc": d, "insertion_auc": i} for m, (d, i) in aucs.items()],
            "erf": [{"stage": 0, "before": {"sum": 1.0, "area_50": erf_area[0], "area_90": 0.5},
                     "after": {"sum": 2.0, "area_50": erf_area[1], "area_90": 0.6}}]}


def test_relevance_table_means_over_seeds_and_winners():
    # rollout wins deletion on seed 0 only; attribution's mean is lower (0.25 vs 0.275)
    rows = [synthetic_row("a", 0, {"rollout": (0.20, 0.5), "attribution": (0.30, 0.7), "random": (0.5, 0.5)},
                          (0.1, 0.2)),
            synthetic_row("a", 1, {"rollout": (0.35, 0.6), "attribution": (0.20, 0.3), "random": (0.6, 0.4)},
                          (0.3, 0.4)),
            synthetic_row("b", 0, {"rollout": (0.1, 0.9), "attribution": (0.2, 0.8), "random": (0.5, 0.5)},
                          (0.5, 0.5))]
    table = analysis.relevance_table(rows, ["a", "b", "c"])
    a = table["a"]
    cells = {f["map"]: f for f in a["faithfulness"]}
    assert cells["rollout"]["deletion_auc"]["mean"] == pytest.approx(0.275)
    assert cells["attribution"]["deletion_auc"]["mean"] == pytest.approx(0.25)
    assert cells["attribution"]["deletion_auc"]["std"] == pytest.approx(statistics.stdev([0.3, 0.2]))
    assert (a["best_deletion"], a["best_insertion"]) == ("attribution", "rollout")  # insertion 0.55 > 0.5
    assert a["erf"][0]["before"]["area_50"]["mean"] == pytest.approx(0.2)
    assert a["erf"][0]["after"]["area_50"]["mean"] == pytest.approx(0.3)
    assert (table["b"]["best_deletion"], table["b"]["best_insertion"]) == ("rollout", "rollout")
    assert table["c"] is None and a["seeds"] == [0, 1]


def test_bad_relevance_settings_are_refused():
    assert check_settings(None) == {"enabled": True, "num_images": 8, "steps": 16}
    assert check_settings({"steps": None})["steps"] is None
    for bad, word in (({"num_images": 0}, "num_images"), ({"steps": 1.5}, "steps"), ({"images": 3}, "unknown"),
                      ({"enabled": "yes"}, "enabled")):
        with pytest.raises(StudyError, match=word):
            check_settings(bad)


def test_compare_script_prints_the_same_aucs_and_winners(compiled, tmp_path):
    """experiments/faithfulness/compare.py on the run directory: the study's numbers (the random map aside: the
    script draws it with seed 0), the per-ordering means and winners, as JSON and printed."""
    _, study_dir, group = compiled
    (row,) = group["relevance"]["runs"]
    out = tmp_path / "faith.json"
    proc = run_script("experiments/faithfulness/compare.py", [str(study_dir / "train_digits" / row["run"]),
                                                              "--images", str(IMAGES), "--steps", str(STEPS),
                                                              "--json", str(out)], tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    document = read_json(out)
    (mine,) = document["per_checkpoint"]
    # a run directory stands for its best checkpoint; one epoch: the same weights as last.ckpt, which the study read
    assert Path(mine["checkpoint"]).name.startswith("best-epoch000")
    study = {r["map"]: r for r in row["faithfulness"]}
    for entry in mine["faithfulness"]:
        if entry["map"] != "random":
            np.testing.assert_allclose(entry["deletion_auc"], study[entry["map"]]["deletion_auc"], rtol=1e-5)
            np.testing.assert_allclose(entry["insertion_auc"], study[entry["map"]]["insertion_auc"], rtol=1e-5)
    summary = document["per_ordering"]["row_major"]
    maps = summary["maps"]
    assert summary["best_deletion"] == min(maps, key=lambda m: maps[m]["deletion_auc"])
    assert summary["best_insertion"] == max(maps, key=lambda m: maps[m]["insertion_auc"])
    for name, cell in maps.items():
        line = next(x for x in proc.stdout.splitlines() if x.split()[:2] == ["row_major", name])
        assert f"{cell['deletion_auc']:.4f}" in line and f"{cell['insertion_auc']:.4f}" in line
        assert ("wins deletion" in line) == (name == summary["best_deletion"])


def test_compare_script_refuses_a_folder_without_checkpoints(tmp_path):
    proc = run_script("experiments/faithfulness/compare.py", [str(tmp_path)], tmp_path, timeout=300)
    assert proc.returncode != 0 and "neither a .ckpt file nor a run directory" in proc.stderr
