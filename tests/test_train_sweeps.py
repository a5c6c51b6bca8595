"""Sweeps: a Hydra multirun over orderings (each run its own directory and W&B run, a failing run recorded
without stopping the others, a summary table), and the same sweep through hydra-submitit-launcher's local
executor, the path SLURM jobs take."""
from __future__ import annotations

import pytest
from train_support import TINY, read_json, run_dirs, run_script, wandb_records

pytestmark = pytest.mark.slow

SWEEP = [*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "trainer.num_sanity_val_steps=0", "test=false"]


def test_multirun_over_orderings(tmp_path):
    proc = run_script("train.py", ["-m", "ordering.name=row_major,spiral,no_such_ordering", *SWEEP], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sweep_dir,) = run_dirs(tmp_path, "multirun")
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) == \
        ["0_row_major", "1_spiral", "2_no_such_ordering"]
    runs = [read_json(sweep_dir / name / "results.json") for name in ("0_row_major", "1_spiral", "2_no_such_ordering")]
    assert [r["status"] for r in runs] == ["completed", "completed", "failed"]
    assert "no_such_ordering" in runs[2]["error"] and "hilbert" in runs[2]["error"]  # lists what exists
    for job, run in enumerate(runs[:2]):
        records = wandb_records(run["wandb"]["run_file"])
        meta = next(r["run"] for r in records if r["type"] == "run")
        assert meta["display_name"] == f"{job}-{run['ordering']}-vmamba_micro-s42"
        assert meta["run_group"] == f"quick-{sweep_dir.parent.name}_{sweep_dir.name}"  # one group per sweep
    summary = read_json(sweep_dir / "summary.json")
    assert [(row["job"], row["ordering"], row["status"]) for row in summary] == [
        (0, "row_major", "completed"), (1, "spiral", "completed"), (2, "no_such_ordering", "failed")]
    assert summary[1]["val/acc1"] == runs[1]["final"]["val/acc1"]
    assert (sweep_dir / "summary.csv").read_text().count("\n") == 4
    assert "Sweep results" in proc.stdout


@pytest.mark.long
def test_submitit_local_sweep(tmp_path):
    proc = run_script("train.py", ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                                   "ordering=row_major,diagonal", "logger=csv", *SWEEP], tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sweep_dir,) = run_dirs(tmp_path, "multirun")
    assert (sweep_dir / ".submitit").is_dir()  # the jobs went through submitit
    runs = {name: read_json(sweep_dir / name / "results.json") for name in ("0_row_major", "1_diagonal")}
    assert all(r["status"] == "completed" and r["global_step"] == 2 for r in runs.values())
    summary = read_json(sweep_dir / "summary.json")
    assert [(row["ordering"], row["status"]) for row in summary] == [("row_major", "completed"),
                                                                    ("diagonal", "completed")]
