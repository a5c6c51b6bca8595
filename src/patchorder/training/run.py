"""The training job behind train.py: pre-flight checks, build, fit, test (results.json, the interrupt policy and
the closing summary are training/task.py's, shared with eval.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from patchorder.callbacks import AttentionLogger
from patchorder.data.image_files import still_corrupt
from patchorder.errors import ConfigError, CorruptImageError
from patchorder.training import builders, console, hydra_info
from patchorder.training.checkpoints import (CHECKPOINT_DIR, LAST, RunFingerprint, differences, find_last_checkpoint,
                                             fingerprint_of, hyper_parameters, read_checkpoint)
from patchorder.training.config import fingerprint, ordering_label, to_plain, validate_train_config
from patchorder.training.module import ClassificationModule, finite_or_none
from patchorder.training.reproducibility import ReproducibleTraining
from patchorder.training.results import RESULTS_FILE, read_results
from patchorder.training.task import Job, run_job, task_main
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


def resolve_ckpt_path(cfg: DictConfig, config_fingerprint: str) -> str | None:
    """The checkpoint to resume: ckpt_path as given, the newest matching run for "last", or, with no ckpt_path,
    this run directory's own last.ckpt when it exists (a SLURM job requeued by submitit restarts in its old
    directory and continues where it stopped) and was written by this same configuration."""
    ckpt_path = cfg.get("ckpt_path")
    own_last = Path(cfg.paths.output_dir) / CHECKPOINT_DIR / LAST
    if not ckpt_path and own_last.is_file():
        found = fingerprint_of(read_checkpoint(own_last, option="the run folder's own checkpoint"))
        if found != config_fingerprint:
            raise ConfigError(
                f"the run folder {cfg.paths.output_dir} already holds {CHECKPOINT_DIR}/{LAST} of another "
                f"configuration (fingerprint {found} != {config_fingerprint}), which this run would silently resume. "
                f"Use a new folder (leave hydra.run.dir at its default), or resume that run with its own config "
                f"(ckpt_path={own_last} and the overrides in {Path(cfg.paths.output_dir) / '.hydra/overrides.yaml'})"
            )
        return str(own_last.resolve())
    if ckpt_path != "last":
        return str(Path(ckpt_path).expanduser().resolve()) if ckpt_path else None
    log_dir = Path(cfg.paths.log_dir)
    found = find_last_checkpoint(
        [log_dir / "outputs", log_dir / "multirun"], config_fingerprint, exclude=cfg.paths.output_dir
    )
    return str(found)


def check_resume_checkpoint(ckpt_path: str, cfg: DictConfig) -> None:
    """Pre-flight: the checkpoint loads safely, was written by patchorder, and trained this model and ordering."""
    hparams = hyper_parameters(read_checkpoint(ckpt_path), ckpt_path)
    differ = differences(hparams, {"model": to_plain(cfg.model), "ordering": to_plain(cfg.ordering)})
    if differ:
        raise ConfigError(f"ckpt_path={ckpt_path} trained another model or ordering than this config: "
                          f"{'; '.join(differ)}. Resume with the config it was trained with, or start from scratch")


def check_corrupt_images_fixed(ckpt_path: str) -> None:
    """A run that stopped at a corrupt image is resumed only once that file was replaced or deleted."""
    results_path = Path(ckpt_path).parent.parent / RESULTS_FILE
    if not results_path.is_file():
        return
    try:
        error = read_results(results_path).get("error") or ""
    except (OSError, ValueError):
        return
    bad = still_corrupt(error) if "CorruptImageError" in error else []
    if bad:
        raise CorruptImageError(f"the run being resumed stopped at images that still cannot be decoded: "
                                f"{', '.join(bad)}. Replace or delete them, then resume again")


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
        "scan_usage": final_scan_usage(trainer),
    }


def final_scan_usage(trainer: L.Trainer) -> dict[str, Any] | None:
    """The scan usage (patchorder.attention.scan_usage) the attention callback measured last, if it ran."""
    for callback in trainer.callbacks:
        if isinstance(callback, AttentionLogger) and callback.written:
            return callback.written[-1].rendered.scan_usage or None
    return None


def csv_path(loggers: list) -> str | None:
    csv_logger = builders.csv_logger(loggers)
    return str(Path(csv_logger.log_dir) / "metrics.csv") if csv_logger is not None else None


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job described by ``cfg``; returns (and writes) its results."""
    return run_job(cfg, "train", _train, summary_rows, "Run")


def _train(job: Job) -> None:
    cfg, results = job.cfg, job.results
    results.update(start_results(cfg))
    validate_train_config(cfg, hydra_info.overrides())
    results["config_fingerprint"] = fingerprint(cfg)
    results["resumed_from"] = resolve_ckpt_path(cfg, results["config_fingerprint"])
    if results["resumed_from"]:
        check_resume_checkpoint(results["resumed_from"], cfg)
        check_corrupt_images_fixed(results["resumed_from"])
    if job.is_zero:
        job.write_results()  # marks the run (for ckpt_path=last) even if it is killed later
        console.print_config_tree(cfg)
        console.save_config(cfg, job.output_dir)

    L.seed_everything(cfg.seed, workers=True)
    datamodule = builders.build_datamodule(cfg.data)
    module = ClassificationModule.from_config(cfg, datamodule)
    results["stage_grids"] = module.model.stage_grids(*datamodule.image_size)
    throughput = TrainThroughput()
    callbacks = [ReproducibleTraining(), RunFingerprint(results["config_fingerprint"]), throughput,
                 *builders.build_callbacks(cfg.get("callbacks"))]
    loggers = builders.build_loggers(cfg)
    trainer = job.trainer = builders.build_trainer(cfg, callbacks, loggers)
    job.on_failure = lambda: _record_progress(trainer, loggers, results)
    for logger in loggers:
        logger.log_hyperparams({"config": to_plain(cfg)})

    trainer.fit(module, datamodule=datamodule, ckpt_path=results["resumed_from"], weights_only=True)
    if trainer.is_global_zero:  # other ranks only take part in the collective steps (test) below
        results.update(fit_results(trainer, throughput, loggers))
        results["data"] = datamodule.describe()
    if cfg.get("test"):
        has_best = bool(getattr(trainer.checkpoint_callback, "best_model_path", None))
        trainer.test(module, datamodule=datamodule, ckpt_path="best" if has_best else None, verbose=False,
                     weights_only=True)
        results["test"] = {k: v for k, v in metrics_of(trainer).items() if k.startswith("test/")}
        results["test"]["weights"] = "best" if has_best else "last"


def _record_progress(trainer: L.Trainer, loggers: list, results: dict[str, Any]) -> None:
    """How far a failed or interrupted run got."""
    results.setdefault("epochs", trainer.current_epoch)
    results.setdefault("global_step", trainer.global_step)
    checkpoint = trainer.checkpoint_callback
    results.setdefault("checkpoints", {"last": getattr(checkpoint, "last_model_path", None) or None,
                                       "best": getattr(checkpoint, "best_model_path", None) or None})
    if trainer.is_global_zero:
        results.setdefault("csv", csv_path(loggers))


def summary_rows(results: dict[str, Any]) -> dict[str, Any]:
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
    }
    if wandb.get("mode") == "offline" and wandb.get("run_dir"):
        rows["W&B upload later"] = f"wandb sync {wandb['run_dir']}"
    return rows


def main(cfg: DictConfig) -> float | None:
    """train.py's task function."""
    results = task_main(train, cfg)
    return (results.get("best") or {}).get("val/acc1")
