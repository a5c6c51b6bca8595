"""``eval.py ckpt_path=... attention.export=true``: the attention files of a checkpoint, written by the same code
as the AttentionLogger's (attention_files.write_attention_artifacts), under <eval run dir>/attention/."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from patchorder.callbacks import common
from patchorder.callbacks.attention_files import (
    check_selection, make_options, paths_as_strings, probe_export, write_attention_artifacts,
)
from patchorder.errors import ConfigError

TAG = "attention_eval"
DEVICES = ("auto", "cpu", "cuda")


def wants_export(attention_cfg: DictConfig | dict | None) -> bool:
    """attention.export=true, or attention.report=true (the explorer is built from the export)."""
    return bool(attention_cfg) and bool(attention_cfg.get("export") or attention_cfg.get("report"))


def export_checkpoint_attention(module: L.LightningModule, datamodule: Any, attention_cfg: DictConfig | dict,
                                output_dir: str | Path) -> dict[str, Any]:
    """Write the export of ``module``'s evaluation weights on the probe batch; returns the paths (as strings).

    ``attention_cfg``: conf/eval.yaml's ``attention`` section (export, report, dirpath, device and the
    AttentionOptions keys). The probe images come from the validation split, as in training, so the export
    can be compared with the training run's (the explorer's ``--compare``).
    """
    with common.blas_threads_like_torch():
        return _export(module, datamodule, attention_cfg, output_dir)


def _export(module: L.LightningModule, datamodule: Any, attention_cfg: DictConfig | dict,
            output_dir: str | Path) -> dict[str, Any]:
    started = time.perf_counter()
    settings = OmegaConf.to_container(attention_cfg, resolve=True) if isinstance(attention_cfg, DictConfig) \
        else dict(attention_cfg)
    settings.pop("export", None)
    report = bool(settings.pop("report", False))
    dirpath = settings.pop("dirpath", None)
    device = settings.pop("device", "auto")
    if device not in DEVICES:
        raise ConfigError(f"attention.device={device!r}: choose one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("attention.device=cuda but no CUDA device is visible; use attention.device=cpu")
    options = make_options(settings, "eval.py attention")

    model = common.eval_network(module)
    images, labels = common.probe(datamodule, options.num_images, "attention export", "attention.num_images")
    check_selection(model, options, images.shape[-2:])
    target = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    home = next(model.parameters()).device
    model.to(target)
    try:
        export = probe_export(model, images, labels, datamodule, options)
    finally:
        model.to(home)
    extract_seconds = time.perf_counter() - started
    out_dir = Path(dirpath) if dirpath else Path(output_dir) / "attention"
    written = write_attention_artifacts(export, out_dir, TAG, options, report=report,
                                        meta={"extract_seconds": round(extract_seconds, 3)})
    return {**paths_as_strings(written.paths), "seconds": round(time.perf_counter() - started, 3)}
