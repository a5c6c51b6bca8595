"""The sweep summary files: numbers are stored as numbers (summary.csv is read back with float()), eval.py's
loss and split have their own columns, and the terminal table shows the loss."""
from __future__ import annotations

import csv
import json

from patchorder.training import sweep


def write_run(folder, name, results):
    run = folder / name
    run.mkdir()
    (run / "results.json").write_text(json.dumps(results))


def test_eval_sweep_summary_keeps_numbers_numeric(tmp_path, capsys):
    write_run(tmp_path, "0_row_major", {"job_num": 0, "task": "eval", "ordering": "row_major", "status": "completed",
                                        "split": "test", "metrics": {"acc1": 0.95125, "acc5": 1.0, "loss": 0.183}})
    write_run(tmp_path, "1_spiral", {"job_num": 1, "task": "eval", "ordering": "spiral", "status": "completed",
                                     "split": "test", "metrics": {"acc1": 0.5, "acc5": 0.75, "loss": 1.5}})
    rows = sweep.collect(tmp_path)
    _, csv_path = sweep.write_summary(tmp_path, rows)
    with csv_path.open() as handle:
        read = list(csv.DictReader(handle))
    assert [(r["ordering"], r["eval split"], float(r["eval acc1"]), float(r["eval loss"])) for r in read] == [
        ("row_major", "test", 0.95125, 0.183), ("spiral", "test", 0.5, 1.5)]
    assert json.loads((tmp_path / "summary.json").read_text())[0]["eval acc1"] == 0.95125
    sweep.print_summary(tmp_path, rows)
    header = next(line for line in capsys.readouterr().out.splitlines() if "ordering" in line)
    assert "eval loss" in header and "eval split" in header
