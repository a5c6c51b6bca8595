"""The evaluation job behind eval.py: test top-1/top-5 of a checkpoint, optionally under another ordering.

The checkpoint's hyper_parameters say which model, ordering, data config and class names it was trained with;
the weights are the EMA weights when the run used EMA (as its validation did). The checkpoint is a file from a
user: it loads with weights_only=True, and the ``_target_``s it asks for are instantiated only when they are
patchorder's or orderings', given on the command line, or listed in ``trusted_targets``. results.json, the
interrupt policy and the closing summary are training/task.py's, shared with train.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from patchorder.artifacts.eval_export import export_checkpoint_attention, wants_export
from patchorder.errors import ConfigError
from patchorder.models import scan_ablation
from patchorder.training import builders, console, hydra_info
from patchorder.training.checkpoints import (check_trusted_targets, command_line_targets, hyper_parameters,
                                             read_checkpoint)
from patchorder.training.config import build_ordering, check_image_size, model_geometry, ordering_label, to_plain
from patchorder.training.module import ClassificationModule, finite_or_none
from patchorder.training.task import Job, run_job, task_main

SPLITS = ("test", "val")
ABLATIONS = (None, "scan")


def load_module(checkpoint: dict[str, Any] | str | Path, hparams: dict[str, Any], ordering: Any,
                use_ema: bool) -> ClassificationModule:
    """The trained module with ``ordering`` (possibly not the trained one); weights copied from the checkpoint
    (a loaded one, or a path: read with weights_only=True)."""
    if not isinstance(checkpoint, dict):
        checkpoint = read_checkpoint(checkpoint)
    kwargs = {**hparams, "ordering": ordering}
    if not use_ema:
        kwargs["ema"] = None
    module = ClassificationModule(**kwargs)
    state = checkpoint["state_dict"]
    if not use_ema:
        state = {k: v for k, v in state.items() if not k.startswith("ema.")}
    module.load_state_dict(state, strict=True)
    return module


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate the checkpoint ``cfg.ckpt_path``; returns (and writes) the results."""
    return run_job(cfg, "eval", _evaluate, summary_rows, "Evaluation")


def _evaluate(job: Job) -> None:
    cfg, results = job.cfg, job.results
    results.update(ckpt_path=None, split=cfg.get("split"))
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError("eval.py needs ckpt_path=<file.ckpt>, e.g. ckpt_path=outputs/<date>/<time>_<ordering>/"
                          "checkpoints/last.ckpt")
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split!r}: choose one of {', '.join(SPLITS)}")
    ablation = cfg.get("ablation")
    if ablation not in ABLATIONS:
        raise ConfigError(f"ablation={ablation!r}: choose scan (every scan replaced by its D skip) or null")
    results["ablation"] = ablation
    ckpt_path = Path(str(cfg.ckpt_path)).expanduser().resolve()
    results["ckpt_path"] = str(ckpt_path)
    checkpoint = read_checkpoint(ckpt_path)
    hparams = hyper_parameters(checkpoint, ckpt_path)
    trained_ordering = hparams["ordering"]
    ordering = to_plain(cfg.ordering) if cfg.get("ordering") is not None else trained_ordering
    # What will be instantiated from the file: everything but a trained ordering the command line replaces.
    used = {k: v for k, v in hparams.items() if not (k == "ordering" and cfg.get("ordering") is not None)}
    trusted = command_line_targets(hydra_info.overrides()) | set(to_plain(cfg.get("trusted_targets")) or [])
    check_trusted_targets(used, trusted)
    data_cfg = OmegaConf.merge(OmegaConf.create(hparams["data"]), cfg.get("data_override") or {})
    model = model_geometry(OmegaConf.create(hparams["model"]))
    build_ordering(ordering, model.stage_grids(*check_image_size(data_cfg, model)))  # a clear error now
    use_ema = bool(cfg.use_ema) and bool((hparams.get("ema") or {}).get("enabled"))
    results.update({
        "model": hparams["model"]["name"],
        "trained_ordering": ordering_label(trained_ordering),
        "ordering": ordering_label(ordering),
        "ordering_config": ordering,
        "ordering_overridden": ordering != trained_ordering,
        "weights": "ema" if use_ema else "model",
    })
    console.print_config_tree(OmegaConf.create({"checkpoint": str(ckpt_path), "model": hparams["model"],
                                                "ordering": ordering, "data": data_cfg, "split": cfg.split}))

    datamodule = builders.build_datamodule(data_cfg, resumable=False)
    if hasattr(datamodule, "check_class_names"):
        datamodule.check_class_names(hparams["class_names"])
    elif list(datamodule.class_names) != list(hparams["class_names"]):
        raise ConfigError("the data's classes differ from the checkpoint's; evaluate on the data it was trained on")
    module = load_module(checkpoint, hparams, ordering, use_ema)
    if wants_export(cfg.get("attention")):  # before testing: a bad attention setting fails at once
        results["attention"] = export_checkpoint_attention(module, datamodule, cfg.attention, job.output_dir)
    trainer = job.trainer = builders.build_trainer(cfg, callbacks=[], loggers=[])
    loader = datamodule.val_dataloader() if cfg.split == "val" else datamodule.test_dataloader()
    with scan_ablation(module, enabled=ablation == "scan"):
        trainer.test(module, dataloaders=loader, verbose=False)
    metrics = {k.split("/", 1)[1]: finite_or_none(v) for k, v in trainer.callback_metrics.items()
               if k.startswith("test/")}
    results.update({"metrics": metrics, "num_images": len(loader.dataset), "data": datamodule.describe()})


def summary_rows(results: dict[str, Any]) -> dict[str, Any]:
    metrics = results.get("metrics") or {}
    return {
        "error": results.get("error"), "checkpoint": results.get("ckpt_path"),
        "trained ordering": results.get("trained_ordering"), "evaluated ordering": results.get("ordering"),
        "split": results.get("split"), "ablation": results.get("ablation"),
        "acc1": metrics.get("acc1"), "acc5": metrics.get("acc5"),
        "loss": metrics.get("loss"),
    }


def main(cfg: DictConfig) -> float | None:
    """eval.py's task function."""
    results = task_main(evaluate, cfg)
    return (results.get("metrics") or {}).get("acc1")
