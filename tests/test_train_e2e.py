"""train.py and eval.py run for real as subprocesses (vmamba_micro on 32 px digits, a few batches, W&B offline):
results.json, checkpoints, CSV and the W&B transaction log agree with each other and with eval.py."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from train_support import TINY, read_csv_rows, read_json, run_dirs, run_script, wandb_records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    proc = run_script("train.py", [*TINY, "seed=7", "trainer.limit_test_batches=2"], root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = run_dirs(root)
    return root, run_dir, read_json(run_dir / "results.json"), proc.stdout


def test_run_directory_and_results(trained):
    root, run_dir, results, stdout = trained
    assert run_dir.name.endswith("_row_major") and run_dir.parent.parent == root / "outputs"
    assert results["status"] == "completed" and results["task"] == "train"
    assert (results["ordering"], results["model"], results["seed"], results["experiment"]) == \
        ("row_major", "vmamba_micro", 7, "quick")
    assert (results["epochs"], results["global_step"], results["train_batches_per_epoch"]) == (2, 6, 3)
    assert results["train_images"] == 6 * 32 and results["train_images_per_sec"] > 0
    assert results["wall_time_s"] > 0 and results["data"]["counts"] == {"train": 1257, "val": 270, "test": 270}
    assert results["data"]["class_names"] == [str(d) for d in range(10)]
    # The config as run, saved twice: Hydra's (with overrides) and the resolved one.
    assert (run_dir / ".hydra" / "overrides.yaml").is_file() and "seed: 7" in (run_dir / "config.yaml").read_text()
    for key in ("results.json", "checkpoints", "csv"):
        assert key in stdout  # the closing table tells where everything is


def test_metrics_agree_with_the_csv(trained):
    _, _, results, _ = trained
    rows = read_csv_rows(Path(results["csv"]))
    val = [float(r["val/acc1"]) for r in rows if r.get("val/acc1")]
    assert len(val) == 2  # one validation per epoch
    assert results["final"]["val/acc1"] == pytest.approx(val[-1], rel=1e-6)
    assert results["best"]["val/acc1"] == pytest.approx(max(val), rel=1e-6)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert 0 <= results["test"]["test/acc1"] <= results["test"]["test/acc5"] <= 1


def test_checkpoints_last_and_best(trained):
    _, run_dir, results, _ = trained
    last, best = Path(results["checkpoints"]["last"]), Path(results["checkpoints"]["best"])
    assert last == run_dir / "checkpoints" / "last.ckpt" and last.is_file() and best.is_file()
    assert f"acc1{results['best']['val/acc1']:.4f}" in best.name


def test_wandb_offline_run_read_back(trained):
    _, run_dir, results, _ = trained
    run_file = Path(results["wandb"]["run_file"])
    assert results["wandb"]["mode"] == "offline" and run_file.parent.parent == run_dir / "wandb"
    records = wandb_records(run_file)
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["display_name"] == "row_major-vmamba_micro-s7" and run["run_group"] == "quick"
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    logged = {k for item in history for k in item}
    assert {"train/loss", "train/acc1", "val/loss", "val/acc1", "val/acc5", "lr", "trainer/global_step"} <= logged
    # Every validation result in W&B equals the CSV row of the same step.
    csv_val = {int(r["step"]): float(r["val/acc1"]) for r in read_csv_rows(Path(results["csv"])) if r.get("val/acc1")}
    wandb_val = {item["trainer/global_step"]: item["val/acc1"] for item in history if "val/acc1" in item}
    assert wandb_val.keys() == csv_val.keys() and len(wandb_val) == 2
    for step, value in wandb_val.items():
        assert value == pytest.approx(csv_val[step], rel=1e-7)
    csv_loss = {int(r["step"]): float(r["train/loss"]) for r in read_csv_rows(Path(results["csv"]))
                if r.get("train/loss")}
    wandb_loss = {item["trainer/global_step"]: item["train/loss"] for item in history if "train/loss" in item}
    assert wandb_loss == pytest.approx(csv_loss, rel=1e-7)


def test_eval_sweep_over_orderings(trained, tmp_path):
    """One eval.py multirun: the trained ordering reproduces the checkpoint's validation accuracy, another
    ordering is recorded beside the trained one, and the sweep ends with a summary."""
    _, _, results, _ = trained
    proc = run_script("eval.py", ["-m", f"ckpt_path={results['checkpoints']['best']}", "split=val",
                                  "ordering=row_major,spiral"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sweep_dir,) = run_dirs(tmp_path, "multirun")
    same, other = (read_json(sweep_dir / name / "results.json") for name in ("0_row_major", "1_spiral"))
    assert same["status"] == other["status"] == "completed" and same["num_images"] == other["num_images"] == 270
    assert (same["ordering"], same["trained_ordering"], same["ordering_overridden"]) == \
        ("row_major", "row_major", False)
    assert same["metrics"]["acc1"] == pytest.approx(results["best"]["val/acc1"], abs=1e-7)
    assert (other["ordering"], other["trained_ordering"], other["ordering_overridden"]) == \
        ("spiral", "row_major", True)
    assert 0 <= other["metrics"]["acc1"] <= other["metrics"]["acc5"] <= 1
    summary = read_json(sweep_dir / "summary.json")
    assert [(row["ordering"], row["eval split"], row["eval acc1"], row["eval loss"]) for row in summary] == [
        ("row_major", "val", same["metrics"]["acc1"], same["metrics"]["loss"]),
        ("spiral", "val", other["metrics"]["acc1"], other["metrics"]["loss"])]
    assert all(isinstance(row["eval loss"], float) for row in summary)
