"""``eval.py ckpt_path=... attention.export=true``: the attention files of a checkpoint, written by the same code
as the AttentionLogger's (patchorder.artifacts.files.write_attention_artifacts), under <eval run dir>/attention/."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from patchorder.artifacts.compute import blas_threads_like_torch
from patchorder.artifacts.files import paths_as_strings, write_attention_artifacts
from patchorder.artifacts.options import make_options
from patchorder.artifacts.probe import check_selection, eval_network, probe, probe_export
from patchorder.attention.relevance import write_relevance
from patchorder.errors import ConfigError

TAG = "attention_eval"
DEVICES = ("auto", "cpu", "cuda")


def wants_export(attention_cfg: DictConfig | dict | None) -> bool:
    """attention.export=true, attention.report=true (the explorer is built from the export) or
    attention.attribution=true (whole-model relevance maps, ERFs and faithfulness)."""
    return bool(attention_cfg) and bool(attention_cfg.get("export") or attention_cfg.get("report")
                                        or attention_cfg.get("attribution"))


def export_checkpoint_attention(module: L.LightningModule, datamodule: Any, attention_cfg: DictConfig | dict,
                                output_dir: str | Path) -> dict[str, Any]:
    """Write the export of ``module``'s evaluation weights on the probe batch; returns the paths (as strings).

    ``attention_cfg``: conf/eval.yaml's ``attention`` section (export, report, dirpath, device and the
    AttentionOptions keys). The probe images come from the validation split, as in training, so the export
    can be compared with the training run's (the explorer's ``--compare``).
    """
    with blas_threads_like_torch():
        return _export(module, datamodule, attention_cfg, output_dir)


def _export(module: L.LightningModule, datamodule: Any, attention_cfg: DictConfig | dict,
            output_dir: str | Path) -> dict[str, Any]:
    started = time.perf_counter()
    settings = OmegaConf.to_container(attention_cfg, resolve=True) if isinstance(attention_cfg, DictConfig) \
        else dict(attention_cfg)
    export = bool(settings.pop("export", False))
    report = bool(settings.pop("report", False))
    attribution = bool(settings.pop("attribution", False))
    attribution_steps = settings.pop("attribution_steps", 16)
    if attribution_steps is not None and (not isinstance(attribution_steps, int) or attribution_steps < 1):
        raise ConfigError(f"attention.attribution_steps={attribution_steps!r}: a positive integer (points per "
                          f"deletion/insertion curve) or null (one per stage-0 patch)")
    dirpath = settings.pop("dirpath", None)
    device = settings.pop("device", "auto")
    if device not in DEVICES:
        raise ConfigError(f"attention.device={device!r}: choose one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("attention.device=cuda but no CUDA device is visible; use attention.device=cpu")
    options = make_options(settings, "eval.py attention")

    model = eval_network(module)
    images, labels = probe(datamodule, options.num_images, "attention export", "attention.num_images")
    check_selection(model, options, images.shape[-2:])
    target = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    home = next(model.parameters()).device
    model.to(target)
    out_dir = Path(dirpath) if dirpath else Path(output_dir) / "attention"
    paths: dict[str, Any] = {}
    try:
        # Relevance first: the explorer (report=true) shows the relevance file written beside the export.
        if attribution:  # rollout, attribution, input-gradient and random maps, their faithfulness, ERFs
            paths.update(write_relevance(model, images, out_dir, TAG, labels=labels.tolist(),
                                         display=datamodule.to_display(images), steps=attribution_steps))
        if export or report:
            exported = probe_export(model, images, labels, datamodule, options)
            extract_seconds = time.perf_counter() - started
            written = write_attention_artifacts(exported, out_dir, TAG, options, report=report,
                                                meta={"extract_seconds": round(extract_seconds, 3)})
            paths.update(paths_as_strings(written.paths))
    finally:
        model.to(home)
    return {**paths, "seconds": round(time.perf_counter() - started, 3)}
