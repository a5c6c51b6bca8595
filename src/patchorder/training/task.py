"""What train.py and eval.py share around their job (as lightning-hydra-template's task_wrapper): torch's thread
count, results.json (written when the job ends, whatever the ending), the interrupt policy, the closing summary,
and the exit codes of errors a user caused.

Interrupt policy: Ctrl-C (KeyboardInterrupt, which Lightning turns into SystemExit) marks the job "interrupted"
and always stops, in a sweep too. Any other error marks it "failed"; a single run then re-raises, a Hydra
multirun goes on with its next job (the sweep summary lists the failure).
"""
from __future__ import annotations

import contextlib
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig

from patchorder.errors import RUN_ERRORS, USER_ERRORS, ResultsNotWrittenError
from patchorder.training import console, hydra_info
from patchorder.training.results import write_results


@contextlib.contextmanager
def cpu_threads(threads: int | None):
    """torch's intra-op thread count for the duration of a job (unchanged when ``threads`` is null)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Job:
    """One job's state: its config, its results (what results.json will hold) and, once built, its Trainer."""

    def __init__(self, cfg: DictConfig, task: str) -> None:
        self.cfg = cfg
        self.output_dir = Path(cfg.paths.output_dir)
        self.trainer = None
        self.on_failure: Callable[[], None] | None = None  # records what a failed job got to (train: steps, ckpts)
        self.results: dict[str, Any] = {"status": "running", "task": task, "job_num": hydra_info.job_num(),
                                        "overrides": hydra_info.overrides()}

    @property
    def is_zero(self) -> bool:
        """Whether this process writes files (rank 0; before the Trainer exists, as the launcher says)."""
        return self.trainer.is_global_zero if self.trainer is not None else hydra_info.launching_rank() == 0

    def write_results(self) -> Path:
        return write_results(self.output_dir, self.results)


def run_job(cfg: DictConfig, task: str, body: Callable[[Job], None],
            summary: Callable[[dict[str, Any]], dict[str, Any]], title: str) -> dict[str, Any]:
    """Run ``body(job)``, then write results.json and print ``summary(results)`` (see the module docstring)."""
    started = time.time()
    with cpu_threads(cfg.get("cpu_threads")):
        job = Job(cfg, task)
        console.single_console_log()
        error: BaseException | None = None
        try:
            body(job)
            job.results["status"] = "completed"
        except BaseException as caught:  # recorded in results.json, re-raised below as the policy says
            error = caught
            interrupted = isinstance(caught, (KeyboardInterrupt, SystemExit))
            job.results.update(status="interrupted" if interrupted else "failed",
                               error=f"{type(caught).__name__}: {caught}", traceback=traceback.format_exc())
            if job.on_failure is not None:
                job.on_failure()
        job.results["wall_time_s"] = round(time.time() - started, 3)
        write_error = _write_and_summarise(job, summary, title)
    if error is not None and (isinstance(error, (KeyboardInterrupt, SystemExit)) or not hydra_info.is_multirun()):
        raise error
    if write_error is not None and not hydra_info.is_multirun():
        raise write_error
    return job.results


def _write_and_summarise(job: Job, summary: Callable, title: str) -> ResultsNotWrittenError | None:
    """Write results.json and print the summary. A full disk or an unwritable folder is reported together with
    the job's own error (never instead of it) and never raised here, so a sweep goes on."""
    if not job.is_zero:
        return None
    path, write_error = None, None
    try:
        path = job.write_results()
    except OSError as os_error:
        ended = f"; the job itself ended {job.results['status']}" + (
            f" with {job.results['error']}" if job.results.get("error") else "")
        write_error = ResultsNotWrittenError(f"could not write {job.output_dir}/results.json: {os_error}{ended}")
        console.print_error(write_error)
    _finish_wandb(failed=job.results["status"] != "completed")
    console.print_outputs(f"{title} {job.results['status']}", {**summary(job.results), "results.json": path})
    return write_error


def _finish_wandb(failed: bool) -> None:
    """Close the W&B run, so the next job of a sweep (same process) starts its own run."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


def task_main(job_fn: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> dict[str, Any]:
    """An entry point's task function: errors a user caused end with their message (exit code 2), errors of the
    run (NaN loss, results.json not written) with theirs (exit code 1), not with a traceback."""
    try:
        return job_fn(cfg)
    except (*USER_ERRORS, *RUN_ERRORS) as error:
        console.print_error(error)
        raise SystemExit(2 if isinstance(error, USER_ERRORS) else 1) from None
