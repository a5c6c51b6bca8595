"""Reading a study's run directories: each training run's results.json and CSV log, each cross-evaluation's
results.json. Nothing here needs a network or W&B; paths recorded in results.json are re-rooted on the run
directory, so a study directory can be moved or copied before it is compiled."""
from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchorder.training.results import RESULTS_FILE, read_results

from study.settings import Group, Plan

RUN_DIR = re.compile(r"^\d+_(?P<ordering>.+)_s(?P<seed>-?\d+)$")  # <job>_<ordering label>_s<seed>
NO_RESULTS = "no results.json"


@dataclass
class Run:
    """One expected training run (ordering x seed) and what its directory says about it."""

    ordering: str  # config name
    seed: int
    status: str  # completed | failed | interrupted | running | missing
    dir: Path | None = None
    error: str | None = None
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def name(self) -> str:
        return self.dir.name if self.dir is not None else f"{self.ordering}_s{self.seed}"

    def rebased(self, recorded: str | None) -> Path | None:
        """A path results.json recorded, moved to where the run directory is now."""
        if not recorded or self.dir is None:
            return None
        path, home = Path(recorded), self.results.get("output_dir")
        if home:
            try:
                return self.dir / path.relative_to(home)
            except ValueError:
                pass
        return path

    def checkpoint(self, which: str) -> Path | None:
        checkpoints = self.results.get("checkpoints") or {}
        for name in (which, "last"):  # the best checkpoint, else the last one
            path = self.rebased(checkpoints.get(name))
            if path is not None and path.is_file():
                return path
        return None

    def csv_path(self) -> Path | None:
        path = self.rebased(self.results.get("csv"))
        return path if path is not None and path.is_file() else None

    def attention_npz(self) -> Path | None:
        path = self.dir / "attention" / "attention_final.npz" if self.dir is not None else None
        return path if path is not None and path.is_file() else None

    def explorer(self) -> Path | None:
        path = self.dir / "attention" / "attention_final.html" if self.dir is not None else None
        return path if path is not None and path.is_file() else None

    def accuracy(self) -> dict[str, float | None]:
        test, best, final = (self.results.get(k) or {} for k in ("test", "best", "final"))
        return {"test_acc1": test.get("test/acc1"), "test_acc5": test.get("test/acc5"),
                "best_val_acc1": best.get("val/acc1"), "final_val_acc1": final.get("val/acc1")}


def _describe_failure(results: dict[str, Any]) -> str:
    status = results.get("status")
    if status == "running":
        return "results.json says running: the job stopped without finishing (killed?) or is still running"
    error = (results.get("error") or "").strip()
    return error.splitlines()[0][:500] if error else f"status {status} without an error message"


def training_runs(plan: Plan, group: Group) -> list[Run]:
    """One Run per ordering x seed of the plan, in plan order; runs without results.json are 'missing'."""
    sweep_dir = plan.path(group.train_dir)
    by_label = {label: name for name, label in plan.ordering_labels.items()}
    found: dict[tuple[str, int], Run] = {}
    for run_dir in sorted(sweep_dir.iterdir() if sweep_dir.is_dir() else [], key=lambda p: p.name):
        if not run_dir.is_dir():
            continue
        path = run_dir / RESULTS_FILE
        if path.is_file():
            results = read_results(path)
            key = (by_label.get(results.get("ordering")), results.get("seed"))
            status = results.get("status") or "missing"
            error = None if status == "completed" else _describe_failure(results)
        else:
            match = RUN_DIR.match(run_dir.name)
            if not match:
                continue
            results, status = {}, "missing"
            key = (by_label.get(match["ordering"]), int(match["seed"]))
            error = f"{NO_RESULTS} in {run_dir.name}: the job did not start or was killed before writing it"
        if key[0] is not None:
            found[key] = Run(key[0], key[1], status, run_dir, error, results)
    runs = []
    for ordering in plan.orderings:
        for seed in plan.seeds:
            runs.append(found.get((ordering, seed)) or Run(
                ordering, seed, "missing", error=f"{NO_RESULTS}: no run directory (deleted, or the sweep stopped "
                                                 "before this job)"))
    return runs


# --- training curves ---------------------------------------------------------------------------------------
def _number(text: str | None) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def curves(csv_path: Path) -> dict[str, list]:
    """Per epoch: val/acc1 (the epoch's validation row) and train/loss (mean of the epoch's logged steps).

    A resumed run may log an epoch twice; its last validation row counts.
    """
    val: dict[int, float] = {}
    losses: dict[int, list[float]] = defaultdict(list)
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            epoch = _number(row.get("epoch"))
            if epoch is None:
                continue
            acc = _number(row.get("val/acc1"))
            if acc is not None:
                val[int(epoch)] = acc
            loss = _number(row.get("train/loss"))
            if loss is not None:
                losses[int(epoch)].append(loss)
    return {
        "val_epochs": sorted(val), "val_acc1": [val[e] for e in sorted(val)],
        "loss_epochs": sorted(losses), "train_loss": [sum(losses[e]) / len(losses[e]) for e in sorted(losses)],
    }


# --- cross evaluation --------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    train_ordering: str | None  # config names; None when the checkpoint's run is unknown
    seed: int | None
    test_ordering: str | None
    status: str
    dir: Path | None
    metrics: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None
    checkpoint: str | None = None
    ablation: str | None = None  # "scan": every scan replaced by its D skip (eval.py ablation=scan)


def _read_evaluations(sweep_dir: Path, plan: Plan, runs: list[Run]) -> list[tuple[Run | None, Evaluation]]:
    """Every eval results.json of a sweep, with the training run its checkpoint belongs to (None: not in the plan)."""
    by_label = {label: name for name, label in plan.ordering_labels.items()}
    run_by_dir = {run.dir.name: run for run in runs if run.dir is not None}
    out = []
    for path in sorted(sweep_dir.glob(f"*/{RESULTS_FILE}")) if sweep_dir.is_dir() else []:
        results = read_results(path)
        ckpt = Path(results.get("ckpt_path") or "")
        run = run_by_dir.get(ckpt.parent.parent.name) if results.get("ckpt_path") else None
        status = results.get("status") or "missing"
        evaluation = Evaluation(
            train_ordering=run.ordering if run else None, seed=run.seed if run else None,
            test_ordering=by_label.get(results.get("ordering")), status=status, dir=path.parent,
            metrics={k: (results.get("metrics") or {}).get(k) for k in ("acc1", "acc5", "loss")},
            error=None if status == "completed" else _describe_failure(results),
            checkpoint=ckpt.name if results.get("ckpt_path") else None, ablation=results.get("ablation"))
        if run is None and results.get("ckpt_path"):
            evaluation.error = (f"evaluates {ckpt.parent.parent.name}/{ckpt.name}, a training run that is not in the "
                                "study (deleted?)" + (f"; {evaluation.error}" if evaluation.error else ""))
        out.append((run, evaluation))
    return out


def evaluations(plan: Plan, group: Group, runs: list[Run]) -> list[Evaluation]:
    """Every expected cell (completed run x test ordering), found in the eval sweep or marked missing, plus any
    evaluation whose checkpoint belongs to no run of the plan (listed, never dropped)."""
    found: dict[tuple[str, int, str], Evaluation] = {}
    strays = []
    for run, evaluation in _read_evaluations(plan.path(group.eval_dir), plan, runs):
        if run is None or evaluation.test_ordering is None:
            strays.append(evaluation)
        else:
            found[(run.ordering, run.seed, evaluation.test_ordering)] = evaluation
    cells = []
    for run in (r for r in runs if r.ok):
        for test_ordering in plan.orderings:
            cells.append(found.get((run.ordering, run.seed, test_ordering)) or Evaluation(
                run.ordering, run.seed, test_ordering, "missing", None,
                error=f"{NO_RESULTS}: no evaluation of {run.name} under {test_ordering}"))
    return cells + strays


def ablations(plan: Plan, group: Group, runs: list[Run]) -> list[Evaluation]:
    """Each completed run's scan-ablation evaluation (eval.py ablation=scan on its trained ordering), found in the
    ablation sweep or marked missing, plus evaluations that belong to no run or are not a scan ablation on the
    trained ordering (listed, never dropped)."""
    found: dict[tuple[str, int], Evaluation] = {}
    strays = []
    sweep_dir = plan.path(group.ablation_dir) if group.ablation_dir else None
    for run, evaluation in _read_evaluations(sweep_dir, plan, runs) if sweep_dir is not None else []:
        if run is not None and evaluation.status == "completed" and (
                evaluation.ablation != "scan" or evaluation.test_ordering != run.ordering):
            evaluation.error = (f"not a scan ablation of its run on the trained ordering (ablation "
                                f"{evaluation.ablation}, ordering {evaluation.test_ordering})")
            run = None
        if run is None:
            strays.append(evaluation)
        else:
            found[(run.ordering, run.seed)] = evaluation
    expected = [found.get((run.ordering, run.seed)) or Evaluation(
        run.ordering, run.seed, run.ordering, "missing", None, ablation="scan",
        error=f"{NO_RESULTS}: no scan-ablation evaluation of {run.name}") for run in runs if run.ok]
    return expected + strays
