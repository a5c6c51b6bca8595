"""Finding checkpoints: ``ckpt_path=last`` (newest run of the same configuration) and reading what a checkpoint
was trained with."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import lightning as L
import torch

from patchorder.errors import ConfigError
from patchorder.training.results import RESULTS_FILE, read_results

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"


def find_last_checkpoint(
    search_roots: list[str | Path], config_fingerprint: str, exclude: str | Path | None = None
) -> Path:
    """The newest ``checkpoints/last.ckpt`` of a run under ``search_roots`` with the same config fingerprint.

    Runs are recognised by their results.json (written when a run starts, so killed runs count too).
    """
    roots = [Path(r) for r in search_roots]
    exclude = Path(exclude).resolve() if exclude else None
    candidates = []
    for results_path in (p for root in roots if root.is_dir() for p in root.glob(f"**/{RESULTS_FILE}")):
        run_dir = results_path.parent
        last = run_dir / CHECKPOINT_DIR / LAST
        if exclude is not None and run_dir.resolve() == exclude:
            continue
        if not last.is_file():
            continue
        try:
            if read_results(results_path).get("config_fingerprint") != config_fingerprint:
                continue
        except (OSError, ValueError):
            continue
        candidates.append(last)
    if not candidates:
        raise ConfigError(
            f"ckpt_path=last: no earlier run of this configuration (fingerprint {config_fingerprint}) with "
            f"{CHECKPOINT_DIR}/{LAST} under {', '.join(map(str, roots))}. Model, ordering, data, module, seed and trainer.max_epochs/"
            f"max_steps must match the run you want to resume; or give the file: ckpt_path=<path>/last.ckpt"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime)


def read_checkpoint(ckpt_path: str | Path, option: str = "ckpt_path") -> dict[str, Any]:
    """A checkpoint file, loaded with ``weights_only=True``: tensors and plain values only, so a crafted pickle
    cannot run code. Our own checkpoints (RNG state as tensors and lists, see reproducibility.py) load this way."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"{option}={ckpt_path} does not exist; pass the .ckpt of a training run, e.g. "
            f"{option}=outputs/<date>/<time>_<ordering>/checkpoints/last.ckpt"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise ConfigError(
            f"{option}={ckpt_path} holds pickled objects other than tensors and plain values, so it was not loaded "
            f"(nothing in it ran): patchorder's train.py never writes such files. If you trust the file, convert it "
            f"to a state_dict yourself. ({str(error).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise ConfigError(f"{option}={ckpt_path} is not a readable checkpoint (a truncated or foreign file?): "
                          f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"{option}={ckpt_path} is not a Lightning checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint


HPARAMS_NEEDED = ("model", "ordering", "num_classes", "class_names", "data")


def hyper_parameters(checkpoint: dict[str, Any], ckpt_path: str | Path) -> dict[str, Any]:
    """The ``hyper_parameters`` a patchorder checkpoint was saved with (model, ordering, data, class names...)."""
    hparams = checkpoint.get("hyper_parameters")
    missing = sorted(set(HPARAMS_NEEDED) - set(hparams or {}))
    if not isinstance(hparams, dict) or missing or "state_dict" not in checkpoint:
        raise ConfigError(
            f"ckpt_path={ckpt_path} was not written by patchorder's train.py (no state_dict, or its "
            f"hyper_parameters lack {missing}); use a checkpoint from outputs/.../checkpoints/"
        )
    return dict(hparams)


def load_hyper_parameters(ckpt_path: str | Path) -> dict[str, Any]:
    return hyper_parameters(read_checkpoint(ckpt_path), ckpt_path)


# --- what a checkpoint may make us instantiate -----------------------------------------------------------
TRUSTED_PREFIXES = ("patchorder.", "orderings.")


def command_line_targets(overrides: list[str]) -> set[str]:
    """Every ``..._target_=value`` the user typed (trusted: the user chose it)."""
    return {o.split("=", 1)[1] for o in overrides if "=" in o and o.split("=", 1)[0].endswith("_target_")}


def check_trusted_targets(node: Any, trusted: set[str], where: str = "hyper_parameters") -> None:
    """Refuse a ``_target_`` from a file unless it is under patchorder./orderings. or trusted by the user: Hydra's
    instantiate would call any importable function it names (os.system, ...)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and not (str(value).startswith(TRUSTED_PREFIXES) or str(value) in trusted):
                raise ConfigError(
                    f"the checkpoint's {where} asks to instantiate _target_={value!r}, which is neither under "
                    f"{' nor '.join(TRUSTED_PREFIXES)} nor given on the command line; it was not called. If you "
                    f"trust it (your own ordering or data module), pass +trusted_targets=[{value}]"
                )
            check_trusted_targets(value, trusted, f"{where}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_trusted_targets(value, trusted, f"{where}[{i}]")


# --- which run a checkpoint belongs to -----------------------------------------------------------------
FINGERPRINT_KEY = "patchorder"


class RunFingerprint(L.Callback):
    """Writes the run's config fingerprint into every checkpoint, so a resume can tell whose checkpoint it is."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[FINGERPRINT_KEY] = {"config_fingerprint": self.fingerprint}


def fingerprint_of(checkpoint: dict[str, Any]) -> str | None:
    return (checkpoint.get(FINGERPRINT_KEY) or {}).get("config_fingerprint")


def differences(hparams: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """``key: checkpoint value != config value`` for each top-level key of ``expected`` that differs."""
    return [f"{key}: checkpoint {hparams.get(key)!r} != config {value!r}"
            for key, value in expected.items() if hparams.get(key) != value]
