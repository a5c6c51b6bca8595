"""End of a Hydra multirun: one table of results per run (ordering), printed and saved in the sweep directory."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import rich
import rich.console
import rich.table
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from patchorder.training.results import RESULTS_FILE, read_results

# Numbers stay numbers (summary.csv is read by spreadsheets and pandas); eval.py's split is a column of its own.
COLUMNS = ("job", "task", "ordering", "ablation", "model", "status", "val/acc1", "best val/acc1", "test/acc1",
           "eval split", "eval acc1", "eval loss", "epochs", "images/s", "wall s", "dir", "error")


def summary_row(run_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    final, best, test = results.get("final") or {}, results.get("best") or {}, results.get("test") or {}
    metrics = results.get("metrics") or {}  # eval.py's results
    error = results.get("error") or ""
    return {
        "job": results.get("job_num"),
        "task": results.get("task"),
        "ordering": results.get("ordering"),
        "ablation": results.get("ablation"),
        "model": results.get("model"),
        "status": results.get("status"),
        "val/acc1": final.get("val/acc1"),
        "best val/acc1": best.get("val/acc1"),
        "test/acc1": test.get("test/acc1"),
        "eval split": results.get("split") if metrics else None,
        "eval acc1": metrics.get("acc1"),
        "eval loss": metrics.get("loss"),
        "epochs": results.get("epochs"),
        "images/s": results.get("train_images_per_sec"),
        "wall s": results.get("wall_time_s"),
        "dir": run_dir.name,
        "error": error.splitlines()[0][:200] if error else "",
    }


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Rows for every run directory in the sweep (a run that never wrote results.json is listed as missing)."""
    rows = []
    for run_dir in sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir() and not p.name.startswith(".")),
                          key=_job_order):
        path = run_dir / RESULTS_FILE
        if path.is_file():
            rows.append(summary_row(run_dir, read_results(path)))
        else:
            rows.append({**{c: None for c in COLUMNS}, "dir": run_dir.name, "status": "missing",
                         "error": f"no {RESULTS_FILE}: the job did not start or was killed before writing it"})
    return rows


def _job_order(path: Path) -> tuple[int, str]:
    head = path.name.split("_", 1)[0]
    return (int(head), path.name) if head.isdigit() else (1 << 30, path.name)


def write_summary(sweep_dir: str | Path, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    sweep_dir = Path(sweep_dir)
    json_path, csv_path = sweep_dir / "summary.json", sweep_dir / "summary.csv"
    json_path.write_text(json.dumps(rows, indent=2) + "\n")
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def print_summary(sweep_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    """The table on the terminal shows only the columns some run filled (the files keep them all)."""
    columns = [c for c in COLUMNS if any(row.get(c) not in (None, "") for row in rows)]
    table = rich.table.Table(title=f"Sweep results: {sweep_dir}", title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        style = None if row.get("status") == "completed" else "red"
        table.add_row(*(_fmt(row.get(c)) for c in columns), style=style)
    from patchorder.training.console import terminal

    console = terminal()
    (console if console.width >= 150 else rich.console.Console(width=150)).print(table)


class SweepSummary(Callback):
    """Hydra callback (conf/hydra/default.yaml): after all jobs of a multirun, summarise their results.json."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = collect(sweep_dir)
        json_path, csv_path = write_summary(sweep_dir, rows)
        print_summary(sweep_dir, rows)
        rich.print(f"Sweep summary written to {json_path} and {csv_path}")
