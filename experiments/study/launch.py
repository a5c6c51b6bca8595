"""Running a study's sweeps: per data config one ``train.py -m`` over orderings x seeds, then one ``eval.py -m`` over
the trained checkpoints x orderings (the cross table) and one over the checkpoints with ``ablation=scan`` (each
model on its trained ordering with every scan replaced by its D skip).

Both are subprocesses of the project's own entry points with the sweep directory fixed, so they go through
Hydra's launcher: the basic launcher runs the jobs one after the other, ``hydra/launcher=submitit_local`` or
``hydra/launcher=slurm`` (submitit_slurm) send them to submitit / SLURM, and the command returns once they are
done. A subprocess also isolates the study from its jobs: a crash, an out-of-memory kill or Hydra's global state
in a job cannot take the study down, and a job that fails records its error in its own results.json
(train.py and eval.py keep a multirun going past a failing job).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from study.collect import training_runs
from study.settings import REPO, Group, Plan

# Run directories <job>_<ordering>_s<seed>: quoted, so Hydra keeps the interpolations for each job to resolve.
TRAIN_SUBDIR = "'${hydra.job.num}_${ordering_label:${ordering}}_s${seed}'"
LOG_DIR = "logs"


def quote(value: str | Path) -> str:
    """A Hydra override value as a quoted string (paths may hold spaces, commas or '=').

    Hydra's quoted strings keep backslashes as they are, except before a quote: there a quote is escaped with
    a backslash and the backslashes before it (or before the closing quote) are doubled.
    """
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", str(value))
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return f"'{text}'"


def train_command(plan: Plan, group: Group) -> list[str]:
    return [
        sys.executable, str(REPO / "train.py"), "-m", *group.train_overrides, *plan.launcher_overrides,
        f"data={group.name}", "ordering=" + ",".join(plan.orderings), "seed=" + ",".join(map(str, plan.seeds)),
        f"hydra.sweep.dir={quote(plan.path(group.train_dir))}", f"hydra.sweep.subdir={TRAIN_SUBDIR}",
    ]


def eval_command(plan: Plan, group: Group, checkpoints: list[Path]) -> list[str]:
    return [
        # eval_overrides after the launcher's: they may change its settings for the evaluations (e.g. one GPU)
        sys.executable, str(REPO / "eval.py"), "-m", *plan.launcher_overrides, *plan.eval_overrides,
        "ckpt_path=" + ",".join(quote(c) for c in checkpoints), "ordering=" + ",".join(plan.orderings),
        f"hydra.sweep.dir={quote(plan.path(group.eval_dir))}",
    ]


def ablation_command(plan: Plan, group: Group, checkpoints: list[Path]) -> list[str]:
    """Each checkpoint once, on its trained ordering (no ordering override), with every scan ablated."""
    return [
        sys.executable, str(REPO / "eval.py"), "-m", *plan.launcher_overrides, *plan.eval_overrides,
        "ckpt_path=" + ",".join(quote(c) for c in checkpoints), "ablation=scan",
        f"hydra.sweep.dir={quote(plan.path(group.ablation_dir))}",
    ]


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_logged(command: list[str], log_path: Path) -> dict[str, Any]:
    """Run ``command`` with its output in ``log_path``; returns the command, exit status and seconds."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(log_path, "w") as log:
        log.write(" ".join(command) + "\n\n")
        log.flush()
        env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
        returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    return {"command": command, "returncode": returncode, "seconds": round(time.time() - started, 1),
            "log": str(log_path.relative_to(log_path.parents[1]))}


def log_tail(log_path: Path, lines: int = 12) -> str:
    return "\n".join("    " + line for line in log_path.read_text(errors="replace").splitlines()[-lines:])


def run_group(plan: Plan, group: Group) -> dict[str, Any]:
    """Train, then cross-evaluate and scan-ablate, one data config's runs. Failures are reported and recorded,
    never raised."""
    steps: dict[str, Any] = {}
    jobs = len(plan.orderings) * len(plan.seeds)
    log = plan.path(LOG_DIR) / f"{group.name}_train.log"
    say(f"[{group.name}] training {jobs} run(s): {', '.join(plan.orderings)} x seeds {plan.seeds} (log: {log})")
    steps["train"] = run_logged(train_command(plan, group), log)
    runs = training_runs(plan, group)
    done = [r for r in runs if r.ok]
    say(f"[{group.name}] training finished in {steps['train']['seconds']:.0f} s: {len(done)} of {jobs} completed"
        + ("" if steps["train"]["returncode"] == 0 else
           f"; train.py exited with {steps['train']['returncode']}, the end of its log:\n{log_tail(log)}"))
    checkpoints = [c for c in (r.checkpoint(plan.checkpoint) for r in done) if c is not None]
    evaluations = [("eval", "cross table", f"{len(checkpoints)} checkpoint(s) x {len(plan.orderings)} ordering(s)",
                    eval_command, plan.cross_eval),
                   ("ablation", "scan ablation", f"{len(checkpoints)} checkpoint(s), every scan ablated",
                    ablation_command, plan.scan_ablation)]
    for step, title, what, command, wanted in evaluations:
        if not wanted:
            continue
        if not checkpoints:
            say(f"[{group.name}] no checkpoint for the {title}")
            continue
        log = plan.path(LOG_DIR) / f"{group.name}_{step}.log"
        say(f"[{group.name}] {title}: {what} (log: {log})")
        steps[step] = run_logged(command(plan, group, checkpoints), log)
        say(f"[{group.name}] {title} finished in {steps[step]['seconds']:.0f} s"
            + ("" if steps[step]["returncode"] == 0 else
               f"; eval.py exited with {steps[step]['returncode']}, the end of its log:\n{log_tail(log)}"))
    return steps


def run_sweeps(plan: Plan) -> dict[str, Any]:
    """Every data config's train + eval, ``plan.parallel`` of them at once; returns the per-step records."""
    with ThreadPoolExecutor(max_workers=min(plan.parallel, len(plan.groups))) as pool:
        futures = {group.name: pool.submit(run_group, plan, group) for group in plan.groups}
        return {name: future.result() for name, future in futures.items()}
