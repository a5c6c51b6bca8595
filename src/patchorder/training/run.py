"""The training job behind train.py: validate, build, fit, test, write results.json.

In a Hydra multirun a failing job records its error in its results.json and returns, so the sweep goes on; a
single run re-raises after recording.
"""
from __future__ import annotations

import contextlib
import time
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from patchorder.data.base import DataConfigError
from patchorder.training import builders, console, hydra_info
from patchorder.training.checkpoints import CHECKPOINT_DIR, LAST, find_last_checkpoint
from patchorder.training.config import fingerprint, ordering_label, to_plain, validate_train_config
from patchorder.training.errors import ConfigError, NonFiniteLossError, NonFiniteWeightsError
from patchorder.training.module import finite_or_none
from patchorder.training.reproducibility import ReproducibleTraining
from patchorder.training.results import write_results
from patchorder.training.throughput import TrainThroughput

METRIC_PREFIXES = ("train/", "val/", "test/", "lr")


def metrics_of(trainer: L.Trainer) -> dict[str, float | None]:
    return {k: finite_or_none(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(METRIC_PREFIXES)}


def start_results(cfg: DictConfig) -> dict[str, Any]:
    return {
        "status": "running",
        "task": "train",
        "ordering": ordering_label(cfg.get("ordering")),
        "ordering_config": to_plain(cfg.get("ordering")),
        "model": cfg.model.name if cfg.get("model") else None,
        "experiment": cfg.get("experiment_name"),
        "seed": cfg.get("seed"),
        "job_num": hydra_info.job_num(),
        "overrides": hydra_info.overrides(),
        "output_dir": str(Path(cfg.paths.output_dir).resolve()),
    }


def resolve_ckpt_path(cfg: DictConfig, results: dict[str, Any]) -> str | None:
    """The checkpoint to resume: ckpt_path as given, the newest matching run for "last", or, with no ckpt_path,
    this run directory's own last.ckpt when it exists (a SLURM job requeued by submitit restarts in its old
    directory and continues where it stopped)."""
    ckpt_path = cfg.get("ckpt_path")
    own_last = Path(cfg.paths.output_dir) / CHECKPOINT_DIR / LAST
    if not ckpt_path and own_last.is_file():
        return str(own_last.resolve())
    if ckpt_path != "last":
        return str(Path(ckpt_path).expanduser().resolve()) if ckpt_path else None
    log_dir = Path(cfg.paths.log_dir)
    found = find_last_checkpoint(
        [log_dir / "outputs", log_dir / "multirun"], results["config_fingerprint"], exclude=cfg.paths.output_dir
    )
    return str(found)


def fit_results(trainer: L.Trainer, throughput: TrainThroughput, loggers: list) -> dict[str, Any]:
    checkpoint: ModelCheckpoint | None = trainer.checkpoint_callback
    wandb_logger = builders.wandb_logger(loggers)
    wandb_run = wandb_logger.experiment if wandb_logger is not None else None
    best = {}
    if checkpoint is not None and checkpoint.monitor:
        best[checkpoint.monitor] = finite_or_none(checkpoint.best_model_score)
    return {
        "final": metrics_of(trainer),
        "best": best,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "train_batches_per_epoch": trainer.num_training_batches,
        "world_size": trainer.world_size,
        "strategy": type(trainer.strategy).__name__,
        "process_group_backend": getattr(trainer.strategy, "process_group_backend", None),
        "train_images": throughput.images * trainer.world_size,
        "train_images_per_sec": throughput.images_per_sec(trainer.world_size),
        "checkpoints": {
            "dir": checkpoint.dirpath if checkpoint else None,
            "last": checkpoint.last_model_path or None if checkpoint else None,
            "best": checkpoint.best_model_path or None if checkpoint else None,
        },
        "wandb": {
            "run_dir": str(wandb_run.settings.sync_dir) if wandb_run is not None else None,
            "run_file": str(wandb_run.settings.sync_file) if wandb_run is not None else None,
            "mode": str(wandb_run.settings.mode) if wandb_run is not None else None,
        } if wandb_logger is not None else None,
        "csv": csv_path(loggers),
        "attention": attention_outputs(trainer),
    }


def attention_outputs(trainer: L.Trainer) -> dict[str, str | None] | None:
    """Where the AttentionLogger wrote its latest export and explorer (None without that callback)."""
    from patchorder.callbacks import AttentionLogger

    logger = next((c for c in trainer.callbacks if isinstance(c, AttentionLogger)), None)
    if logger is None or not logger.written:
        return None
    paths = logger.written[-1].paths
    return {"npz": str(paths["npz"]), "report": str(paths["report"]) if paths.get("report") else None}


def csv_path(loggers: list) -> str | None:
    csv_logger = builders.csv_logger(loggers)
    return str(Path(csv_logger.log_dir) / "metrics.csv") if csv_logger is not None else None


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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job described by ``cfg``; returns (and writes) its results."""
    with cpu_threads(cfg.get("cpu_threads")):
        return _train(cfg)


def _train(cfg: DictConfig) -> dict[str, Any]:
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    is_zero = hydra_info.launching_rank() == 0
    results = start_results(cfg)
    trainer: L.Trainer | None = None
    loggers: list = []
    console.single_console_log()
    try:
        validate_train_config(cfg)
        results["config_fingerprint"] = fingerprint(cfg)
        results["resumed_from"] = resolve_ckpt_path(cfg, results)
        if is_zero:
            write_results(output_dir, results)  # marks the run (for ckpt_path=last) even if it is killed later
            console.print_config_tree(cfg)
            console.save_config(cfg, output_dir)

        L.seed_everything(cfg.seed, workers=True)
        datamodule = builders.build_datamodule(cfg.data)
        module = builders.build_module(cfg, datamodule)
        throughput = TrainThroughput()
        callbacks = [ReproducibleTraining(), throughput, *builders.build_callbacks(cfg.get("callbacks"))]
        loggers = builders.build_loggers(cfg)
        trainer = builders.build_trainer(cfg, callbacks, loggers)
        for logger in loggers:
            logger.log_hyperparams({"config": to_plain(cfg)})

        trainer.fit(module, datamodule=datamodule, ckpt_path=results["resumed_from"])
        is_zero = trainer.is_global_zero
        if is_zero:  # other ranks only take part in the collective steps (test) below
            results.update(fit_results(trainer, throughput, loggers))
            results["data"] = datamodule.describe()
        if cfg.get("test"):
            has_best = bool(getattr(trainer.checkpoint_callback, "best_model_path", None))
            trainer.test(module, datamodule=datamodule, ckpt_path="best" if has_best else None, verbose=False)
            results["test"] = {k: v for k, v in metrics_of(trainer).items() if k.startswith("test/")}
            results["test"]["weights"] = "best" if has_best else "last"
        results["status"] = "completed"
    except BaseException as error:  # Ctrl-C too (Lightning turns it into SystemExit): the run directory says so
        interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))
        results["status"] = "interrupted" if interrupted else "failed"
        results["error"] = f"{type(error).__name__}: {error}"
        results["traceback"] = traceback.format_exc()
        if trainer is not None:
            results.setdefault("epochs", trainer.current_epoch)
            results.setdefault("global_step", trainer.global_step)
            checkpoint = trainer.checkpoint_callback
            results.setdefault("checkpoints", {"last": getattr(checkpoint, "last_model_path", None) or None,
                                               "best": getattr(checkpoint, "best_model_path", None) or None})
            if trainer.is_global_zero:
                results.setdefault("csv", csv_path(loggers))
        if interrupted or not hydra_info.is_multirun():
            raise
    finally:
        results["wall_time_s"] = round(time.time() - started, 3)
        if trainer is not None:
            is_zero = trainer.is_global_zero
        if is_zero:
            path = write_results(output_dir, results)
            _finish_wandb(failed=results["status"] != "completed")
            _print_outputs(results, path)
    return results


def _finish_wandb(failed: bool) -> None:
    """Close the W&B run, so the next job of a sweep (same process) starts its own run."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


def _print_outputs(results: dict[str, Any], results_path: Path) -> None:
    final, checkpoints, wandb = results.get("final") or {}, results.get("checkpoints") or {}, results.get("wandb") or {}
    rows = {
        "status": results["status"],
        "error": results.get("error"),
        "ordering": results.get("ordering"),
        "val/acc1": final.get("val/acc1"),
        "best val/acc1": (results.get("best") or {}).get("val/acc1"),
        "test/acc1": (results.get("test") or {}).get("test/acc1"),
        "train images/s": results.get("train_images_per_sec"),
        "wall time (s)": results.get("wall_time_s"),
        "checkpoint (best)": checkpoints.get("best"),
        "checkpoint (last)": checkpoints.get("last"),
        "W&B offline run": wandb.get("run_dir"),
        "CSV metrics": results.get("csv"),
        "results.json": results_path,
        "attention explorer": (results.get("attention") or {}).get("report"),
    }
    if wandb.get("mode") == "offline" and wandb.get("run_dir"):
        rows["W&B upload later"] = f"wandb sync {wandb['run_dir']}"
    console.print_outputs(f"Run {results['status']}", rows)


def main(cfg: DictConfig) -> float | None:
    """train.py's task function: errors a user caused end a single run with their message, not a traceback."""
    try:
        results = train(cfg)
    except (ConfigError, DataConfigError, NonFiniteLossError, NonFiniteWeightsError) as error:
        console.print_error(error)
        raise SystemExit(2 if isinstance(error, (ConfigError, DataConfigError)) else 1) from None
    return (results.get("best") or {}).get("val/acc1")
