"""The evaluation job behind eval.py: test top-1/top-5 of a checkpoint, optionally under another ordering.

The checkpoint's hyper_parameters say which model, ordering, data config and class names it was trained with;
the weights are the EMA weights when the run used EMA (as its validation did).
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from patchorder.callbacks.eval_export import export_checkpoint_attention, wants_export
from patchorder.errors import DataConfigError
from patchorder.training import builders, console, hydra_info
from patchorder.training.checkpoints import load_hyper_parameters
from patchorder.training.config import build_ordering, check_image_size, ordering_label, to_plain
from patchorder.errors import ConfigError
from patchorder.training.module import ClassificationModule, finite_or_none
from patchorder.training.results import write_results
from patchorder.training.run import cpu_threads

SPLITS = ("test", "val")


def load_module(ckpt_path: str | Path, hparams: dict[str, Any], ordering: Any, use_ema: bool) -> ClassificationModule:
    """The trained module with ``ordering`` (possibly not the trained one); weights copied from the checkpoint."""
    kwargs = {**hparams, "ordering": ordering}
    if not use_ema:
        kwargs["ema"] = None
    module = ClassificationModule(**kwargs)
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
    if not use_ema:
        state = {k: v for k, v in state.items() if not k.startswith("ema.")}
    module.load_state_dict(state, strict=True)
    return module


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate the checkpoint ``cfg.ckpt_path``; returns (and writes) the results."""
    with cpu_threads(cfg.get("cpu_threads")):
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> dict[str, Any]:
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    results: dict[str, Any] = {"status": "running", "task": "eval", "ckpt_path": None, "split": cfg.get("split"),
                               "job_num": hydra_info.job_num(), "overrides": hydra_info.overrides()}
    console.single_console_log()
    try:
        if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
            raise ConfigError("eval.py needs ckpt_path=<file.ckpt>, e.g. ckpt_path=outputs/<date>/<time>_<ordering>/"
                              "checkpoints/last.ckpt")
        if cfg.split not in SPLITS:
            raise ConfigError(f"split={cfg.split!r}: choose one of {', '.join(SPLITS)}")
        ckpt_path = Path(str(cfg.ckpt_path)).expanduser().resolve()
        results["ckpt_path"] = str(ckpt_path)
        hparams = load_hyper_parameters(ckpt_path)
        trained_ordering = hparams["ordering"]
        ordering = to_plain(cfg.ordering) if cfg.get("ordering") is not None else trained_ordering
        data_cfg = OmegaConf.merge(OmegaConf.create(hparams["data"]), cfg.get("data_override") or {})
        size = check_image_size(data_cfg)
        build_ordering(ordering, size)  # a clear error now rather than inside the model
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
        module = load_module(ckpt_path, hparams, ordering, use_ema)
        if wants_export(cfg.get("attention")):  # before testing: a bad attention setting fails at once
            results["attention"] = export_checkpoint_attention(module, datamodule, cfg.attention, output_dir)
        trainer = builders.build_trainer(cfg, callbacks=[], loggers=[])
        loader = datamodule.val_dataloader() if cfg.split == "val" else datamodule.test_dataloader()
        trainer.test(module, dataloaders=loader, verbose=False)
        metrics = {k.split("/", 1)[1]: finite_or_none(v) for k, v in trainer.callback_metrics.items()
                   if k.startswith("test/")}
        results.update({"metrics": metrics, "num_images": len(loader.dataset), "data": datamodule.describe(),
                        "status": "completed"})
    except BaseException as error:
        results.update(status="failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
        if not hydra_info.is_multirun() or isinstance(error, KeyboardInterrupt):
            raise
    finally:
        results["wall_time_s"] = round(time.time() - started, 3)
        if hydra_info.launching_rank() == 0:
            path = write_results(output_dir, results)
            metrics = results.get("metrics") or {}
            console.print_outputs(f"Evaluation {results['status']}", {
                "error": results.get("error"), "checkpoint": results.get("ckpt_path"),
                "trained ordering": results.get("trained_ordering"), "evaluated ordering": results.get("ordering"),
                "split": results.get("split"), "acc1": metrics.get("acc1"), "acc5": metrics.get("acc5"),
                "loss": metrics.get("loss"), "results.json": path,
            })
    return results


def main(cfg: DictConfig) -> float | None:
    """eval.py's task function: errors a user caused end the run with their message, not a traceback."""
    try:
        results = evaluate(cfg)
    except (ConfigError, DataConfigError) as error:
        console.print_error(error)
        raise SystemExit(2) from None
    return (results.get("metrics") or {}).get("acc1")
