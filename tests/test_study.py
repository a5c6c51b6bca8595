"""The ordering study (experiments/ordering_study.py) end to end on a miniature study (vmamba_micro, 32 px digits,
a few batches): row_major and diagonal train, spiral fails on purpose. The report's numbers are checked against
the runs' own files: accuracies against each results.json, cross-table cells against each eval results.json
(and its diagonal against the run's own test), curves against the CSV log, attention metrics against
metrics_table / stage_summary / compare_exports of the saved .npz. Then ``--compile-only`` on a moved copy
with one run deleted: the run is listed as missing and the report still compiles. Each trained model is also
evaluated with its scans ablated (checked against those eval results.json), and study.md opens with the verdict
(one seed here: no interval, no "mean ± std")."""
from __future__ import annotations

import csv
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from train_support import REPO, env, read_json

from patchorder.attention import compare_exports, load, metrics_table, stage_summary

SCRIPT = REPO / "experiments" / "ordering_study.py"
ORDERINGS = ["row_major", "diagonal", "spiral"]
TRAINED = ["row_major", "diagonal"]  # spiral fails (FailForOrdering below)
MINI = [
    "data=digits", f"orderings=[{','.join(ORDERINGS)}]", "seeds=[0]",
    "data.image_size=32", "data.batch_size=32", "trainer.max_epochs=2", "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
    "logger=csv", "callbacks.embedding=null", "callbacks.model_summary=null", "callbacks.attention.num_images=4",
    "+callbacks.fail._target_=test_study.FailForOrdering", "+callbacks.fail.ordering=spiral",
]
FAILURE = "injected failure for ordering spiral"

pytestmark = pytest.mark.slow


class FailForOrdering(L.Callback):
    """Fails the training run of one ordering (the way a crashing run fails), leaves the others alone."""

    def __init__(self, ordering: str):
        self.ordering = ordering

    def on_fit_start(self, trainer, pl_module):
        if pl_module.hparams["ordering"]["name"] == self.ordering:
            raise RuntimeError(f"injected failure for ordering {self.ordering}")


def run_study(args: list[str], root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=root, env=env(root), capture_output=True,
                          text=True, timeout=1200)  # 3 sweeps + report; shared CPUs


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    proc = run_study([f"study_dir={root / 'mini'}", *MINI], root)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return root / "mini"


def group_of(study_dir: Path) -> dict:
    return read_json(study_dir / "study.json")["groups"]["digits"]


def run_dir(study_dir: Path, ordering: str) -> Path:
    (path,) = (study_dir / "train_digits").glob(f"*_{ordering}_s0")
    return path


def eval_results(study_dir: Path) -> dict[tuple[str, str], dict]:
    """(training run directory name, test ordering) -> eval results.json, read directly."""
    out = {}
    for path in (study_dir / "eval_digits").glob("*/results.json"):
        results = read_json(path)
        out[(Path(results["ckpt_path"]).parent.parent.name, results["ordering"])] = results
    return out


def test_accuracy_matches_each_runs_results(study):
    group = group_of(study)
    rows = {r["ordering"]: r for r in group["runs"]}
    assert [r["ordering"] for r in group["runs"]] == ORDERINGS
    assert (group["completed"], group["expected"]) == (2, 3)
    for ordering in TRAINED:
        results = read_json(run_dir(study, ordering) / "results.json")
        row = rows[ordering]
        assert row["status"] == "completed"
        assert row["test_acc1"] == results["test"]["test/acc1"]
        assert row["test_acc5"] == results["test"]["test/acc5"]
        assert row["best_val_acc1"] == results["best"]["val/acc1"]
        cell = group["accuracy"][ordering]["test_acc1"]  # one seed: mean = min = max = the value, std 0
        assert (cell["mean"], cell["min"], cell["max"], cell["std"], cell["n"]) == \
            (row["test_acc1"], row["test_acc1"], row["test_acc1"], 0.0, 1)


def test_curves_match_the_csv_log(study):
    rows = {r["ordering"]: r for r in group_of(study)["runs"]}
    for ordering in TRAINED:
        with open(run_dir(study, ordering) / "csv" / "metrics.csv", newline="") as handle:
            log = list(csv.DictReader(handle))
        val = {int(r["epoch"]): float(r["val/acc1"]) for r in log if r.get("val/acc1")}
        losses: dict[int, list[float]] = {}
        for r in log:
            if r.get("train/loss"):
                losses.setdefault(int(r["epoch"]), []).append(float(r["train/loss"]))
        curves = rows[ordering]["curves"]
        assert curves["val_epochs"] == [0, 1] and curves["val_acc1"] == [val[0], val[1]]
        assert curves["loss_epochs"] == sorted(losses)
        assert curves["train_loss"] == pytest.approx([statistics.fmean(losses[e]) for e in sorted(losses)], abs=1e-12)


def test_cross_table_cells_are_the_eval_results(study):
    group = group_of(study)
    evals = eval_results(study)
    assert len(evals) == len(TRAINED) * len(ORDERINGS)  # the failed run has no checkpoint to evaluate
    for train in TRAINED:
        name = run_dir(study, train).name
        for test in ORDERINGS:
            expected = evals[(name, test)]
            assert expected["status"] == "completed" and expected["trained_ordering"] == train
            cell = group["cross"]["acc1"][train][test]
            assert (cell["mean"], cell["n"]) == (expected["metrics"]["acc1"], 1)
        own_test = read_json(run_dir(study, train) / "results.json")["test"]
        assert own_test["weights"] == "best"  # the cross table evaluates the best checkpoint too
        assert evals[(name, train)]["metrics"]["acc1"] == pytest.approx(own_test["test/acc1"], abs=1e-6)
    assert all(group["cross"]["acc1"]["spiral"][test]["n"] == 0 for test in ORDERINGS)
    assert group["diagonal_check"]["pairs"] == 2 and group["diagonal_check"]["max_abs_difference"] < 1e-6


def test_attention_numbers_are_metrics_of_the_npz(study):
    attention = group_of(study)["attention"]
    exports = {o: load(run_dir(study, o) / "attention" / "attention_final.npz") for o in TRAINED}
    for ordering, export in exports.items():
        mine = [{k: v for k, v in r.items() if k not in ("train_ordering", "seed")} for r in attention["blocks"]
                if r["train_ordering"] == ordering]
        oracle = json.loads(json.dumps(metrics_table(export)))  # same JSON round trip as study.json
        assert mine == oracle
        for summary in stage_summary(oracle):
            cell = attention["stages"]["by_ordering"][ordering][str(summary["stage"])]
            for metric in ("distance", "neighbour_mass_r1", "coherence"):
                assert cell[metric]["mean"] == summary[metric]
    compared = compare_exports(exports["row_major"], exports["diagonal"])
    rows = {r["key"]: r for r in attention["ordering_similarity"]["blocks"]}
    assert {r["key"] for r in compared} == set(rows)
    for row in compared:
        assert rows[row["key"]]["cosine"] == pytest.approx(row["cosine"], abs=1e-12)
    stage0 = [r["cosine"] for r in compared if r["stage"] == 0]
    assert attention["ordering_similarity"]["matrix"]["0"]["row_major"]["diagonal"]["mean"] == \
        pytest.approx(np.mean(stage0), abs=1e-12)
    assert attention["probe"]["identical_across_runs"] is True and attention["probe"]["num_images"] == 4


def ablation_results(study_dir: Path) -> dict[str, dict]:
    """training run directory name -> its scan-ablation eval results.json, read directly."""
    out = {}
    for path in (study_dir / "ablation_digits").glob("*/results.json"):
        results = read_json(path)
        out[Path(results["ckpt_path"]).parent.parent.name] = results
    return out


def test_scan_ablation_is_evaluated_and_collected(study):
    group = group_of(study)
    ablated = ablation_results(study)
    assert sorted(ablated) == sorted(run_dir(study, o).name for o in TRAINED)  # the failed run has no checkpoint
    rows = {r["train_ordering"]: r for r in group["ablation_cells"]}
    assert sorted(rows) == sorted(TRAINED)
    for ordering in TRAINED:
        results = ablated[run_dir(study, ordering).name]
        assert results["status"] == "completed" and results["ablation"] == "scan"
        assert results["ordering"] == results["trained_ordering"] == ordering  # on the trained ordering
        assert results["ordering_overridden"] is False
        assert (rows[ordering]["status"], rows[ordering]["acc1"]) == ("completed", results["metrics"]["acc1"])


def test_verdict_opens_the_report(study):
    group = group_of(study)
    verdict = group["verdict"]
    evals, ablated = eval_results(study), ablation_results(study)
    drops = [evals[(run_dir(study, o).name, o)]["metrics"]["acc1"] - ablated[run_dir(study, o).name]["metrics"]["acc1"]
             for o in TRAINED]  # one seed: the seed's mean over the orderings, no interval
    drop = verdict["questions"]["scan"]["ablation_drop"]
    assert drop["mean"] == pytest.approx(statistics.fmean(drops), abs=1e-12)
    assert (drop["n"], drop["low"], drop["p"]) == (1, None, None)
    assert verdict["one_seed"] is True and verdict["missing_runs"] == ["spiral seed 0 (failed)"]
    assert all(q["answer"] == "cannot tell" for name, q in verdict["questions"].items() if name != "scan")
    usage = {r["train_ordering"]: r for r in group["attention"]["scan_usage"]}
    for ordering in TRAINED:  # the scan usage each run's export recorded
        recorded = load(run_dir(study, ordering) / "attention" / "attention_final.npz").extra["scan_usage"]
        assert usage[ordering]["scan_share_mean"] == pytest.approx(recorded["scan_share_mean"], abs=1e-12)
    markdown = (study / "study.md").read_text()
    assert markdown.index("## Verdict") < markdown.index("### digits") < markdown.index("## digits")
    assert "**One seed: no confidence interval and no test can be given" in markdown
    assert "±" not in markdown  # one seed: no "mean ± std" anywhere
    assert read_json(study / "study.json")["groups"]["digits"]["verdict"] == verdict


def test_report_files_and_failures(study):
    group = group_of(study)
    markdown = (study / "study.md").read_text()
    for name, path in group["figures"].items():
        assert (study / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({path})" in markdown
    assert set(group["figures"]) == {"curves", "accuracy", "cross", "attention_metrics", "similarity", "paths",
                                     "attention_maps", "embeddings", "erf_row_major", "erf_diagonal"}  # spiral failed
    assert [(e["ordering"], (study / e["path"]).is_file()) for e in group["explorers"]["runs"]] == \
        [("row_major", True), ("diagonal", True)]
    compare = group["explorers"]["compare"]
    assert (compare["a"], compare["b"]) == ("row_major", "diagonal") and (study / compare["path"]).is_file()
    (failure,) = group["failures"]
    assert (failure["kind"], failure["ordering"], failure["status"]) == ("training", "spiral", "failed")
    assert FAILURE in failure["error"]
    assert FAILURE in markdown
    acc = group["accuracy"]["row_major"]["test_acc1"]["mean"]
    assert f"| row_major | {acc:.4f} |" in markdown
    cell = group["cross"]["acc1"]["diagonal"]["row_major"]["mean"]
    assert f"{cell:.4f} (n=1)" in markdown


def test_compile_only_lists_a_deleted_run_as_missing(study, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(study, moved)  # a moved study: results.json paths point at the old place
    for leftover in ("study.md", "study.json", "figures", "explorers"):
        path = moved / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(run_dir(moved, "diagonal"))
    proc = run_study(["--compile-only", str(moved)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    group = group_of(moved)
    rows = {r["ordering"]: r for r in group["runs"]}
    assert rows["diagonal"]["status"] == "missing" and rows["diagonal"]["error"].startswith("no results.json")
    kept = read_json(run_dir(moved, "row_major") / "results.json")
    assert rows["row_major"]["test_acc1"] == kept["test"]["test/acc1"]
    kinds = sorted((f["kind"], f["status"]) for f in group["failures"])
    # the deleted run, the failed run, the deleted run's three evaluations and its scan ablation (their checkpoint
    # is gone)
    assert kinds == [("cross evaluation", "completed")] * 3 + [("scan ablation", "completed"), ("training", "failed"),
                                                               ("training", "missing")]
    markdown = (moved / "study.md").read_text()
    assert "| training | diagonal_s0 | missing | no results.json" in markdown
    assert (moved / group["figures"]["cross"]).is_file()


@pytest.mark.long
def test_submitit_local_launcher(tmp_path):
    """The same command through hydra-submitit-launcher's local executor (the path SLURM jobs take)."""
    args = [f"study_dir={tmp_path / 'sub'}", *MINI[:1], "orderings=[row_major]", *MINI[2:-2], "cross_eval=false",
            "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]
    proc = run_study(args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    study_dir = tmp_path / "sub"
    assert (study_dir / "train_digits" / ".submitit").is_dir()  # the job went through submitit
    (row,) = group_of(study_dir)["runs"]
    results = read_json(run_dir(study_dir, "row_major") / "results.json")
    assert row["status"] == "completed" and row["test_acc1"] == results["test"]["test/acc1"]
    assert not (study_dir / "eval_digits").exists() and group_of(study_dir)["cross"] is None
    (ablation,) = group_of(study_dir)["ablation_cells"]  # the scan ablation went through submitit too
    assert ablation["status"] == "completed" and (study_dir / "ablation_digits" / ".submitit").is_dir()

