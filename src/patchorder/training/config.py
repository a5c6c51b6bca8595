"""Checks on a composed config that run before any training, the ordering label used in run names, and the
fingerprint that identifies "the same configuration" when resuming with ``ckpt_path=last``."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from patchorder.errors import ConfigError

# VMamba: a stride-4 patch embedding then three 2x downsamplings, so input sides must be multiples of 32.
MODEL_STRIDE = 32
STAGE_STRIDES = (4, 8, 16, 32)
CONF_DIR = Path(__file__).resolve().parents[3] / "conf"

# Settings that do not change what is trained, left out of the fingerprint so a resumed run may change them.
_RUNTIME_ONLY_DATA_KEYS = ("num_workers", "pin_memory", "root", "persistent_workers")


def ordering_label(spec: Any) -> str:
    """A short name for an ordering config: its ``name``, else the class name of its ``_target_``."""
    if spec is None:
        return "as_trained"
    if isinstance(spec, str):
        return spec
    if isinstance(spec, DictConfig) or isinstance(spec, dict):
        if spec.get("name"):
            return str(spec["name"])
        if spec.get("_target_"):
            return str(spec["_target_"]).rsplit(".", 1)[-1]
    return "custom"


def register_resolvers() -> None:
    """``${ordering_label:${ordering}}`` in run directory names (idempotent; train.py and eval.py call it)."""
    if not OmegaConf.has_resolver("ordering_label"):
        OmegaConf.register_new_resolver("ordering_label", ordering_label)


register_resolvers()


def available_ordering_configs() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "ordering").glob("*.yaml"))


def to_plain(node: Any) -> Any:
    """A resolved plain-Python copy of a config node (dicts, lists, scalars)."""
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def image_size_of(data_cfg: DictConfig) -> tuple[int, int]:
    size = data_cfg.get("image_size")
    if size is None:
        raise ConfigError(
            "data.image_size is not set: every data config needs image_size (an int or [height, width]) at its top "
            "level, e.g. data.image_size=64"
        )
    size = to_plain(size)
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size):
        return int(size[0]), int(size[1])
    raise ConfigError(f"data.image_size={size!r} must be an int or [height, width], e.g. 64 or [64, 96]")


def check_image_size(data_cfg: DictConfig) -> tuple[int, int]:
    height, width = image_size_of(data_cfg)
    bad = [side for side in (height, width) if side % MODEL_STRIDE or side <= 0]
    if bad:
        def nearest(v: int) -> int:  # the next multiple up
            return max(MODEL_STRIDE, -(-v // MODEL_STRIDE) * MODEL_STRIDE)

        raise ConfigError(
            f"data.image_size={height}x{width} is not divisible by {MODEL_STRIDE}: VMamba embeds 4x4 patches and "
            f"then halves the grid three times, so both sides must be multiples of {MODEL_STRIDE}. "
            f"Use e.g. data.image_size={nearest(height)}" + ("" if height == width else f" or [{nearest(height)}, {nearest(width)}]")
        )
    return height, width


def build_ordering(spec: Any, image_size: tuple[int, int] | None = None):
    """Resolve an ordering config into an :class:`orderings.Ordering`, checking it on every stage's grid."""
    import orderings

    plain = to_plain(spec)
    try:
        ordering = orderings.resolve(plain)
        if image_size is not None:
            for stride in STAGE_STRIDES:
                ordering(image_size[0] // stride, image_size[1] // stride)
    except ConfigError:
        raise
    except Exception as error:  # OrderingError, a bad _target_, a user ordering that crashes
        raise ConfigError(
            f"ordering {plain!r} cannot be used: {error}\n"
            f"Built-in ordering configs: {', '.join(available_ordering_configs())} (ordering=<name>); "
            f"registered orderings: {', '.join(orderings.available())}. Select your own orderings.Ordering "
            f"subclass with a conf/ordering/<name>.yaml holding `_target_: my_module.MyOrdering`, or on the command "
            f"line with ~ordering.name +ordering._target_=my_module.MyOrdering (my_module importable)."
        ) from error
    return ordering


def check_model_name(name: str) -> None:
    import timm

    import patchorder.models  # noqa: F401  registers the VMamba presets with timm

    if not timm.is_model(name):
        presets = [m for m in timm.list_models("vmamba*")]
        raise ConfigError(f"model.name={name!r} is not a registered model; VMamba presets: {', '.join(presets)}")


def check_mixup_batches(cfg: DictConfig) -> None:
    mixup = cfg.module.get("mixup")
    if not mixup or not (mixup.get("mixup_alpha", 0) > 0 or mixup.get("cutmix_alpha", 0) > 0):
        return
    batch_size = int(cfg.data.batch_size)
    if batch_size % 2:
        raise ConfigError(f"Mixup/CutMix needs an even batch size, got data.batch_size={batch_size}")
    if not cfg.data.get("drop_last_train", False):
        raise ConfigError(
            "Mixup/CutMix is on (module.mixup) but data.drop_last_train is false: the last, smaller training batch "
            "could be odd. Set data.drop_last_train=true or turn mixup off with module.mixup=null"
        )


def check_ckpt_path(ckpt_path: Any) -> None:
    if ckpt_path in (None, "last"):
        return
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path} does not exist. Give the path of a .ckpt file (e.g. "
            f"outputs/<date>/<time>_<ordering>/checkpoints/last.ckpt), ckpt_path=last to resume the newest run of "
            f"this configuration, or leave it out to start from scratch."
        )


def validate_train_config(cfg: DictConfig) -> None:
    """Everything that can be checked without building the model or reading data; raises ConfigError."""
    for key in ("data", "model", "ordering", "module", "trainer"):
        if cfg.get(key) is None:
            raise ConfigError(f"the config has no '{key}' section; select one, e.g. {key}=<option> (see conf/{key}/)")
    if "_target_" not in cfg.data:
        raise ConfigError("data config has no _target_: pick one of conf/data/*.yaml with data=<name>")
    check_model_name(cfg.model.name)
    size = check_image_size(cfg.data)
    build_ordering(cfg.ordering, size)
    check_mixup_batches(cfg)
    check_ckpt_path(cfg.get("ckpt_path"))


def fingerprint(cfg: DictConfig) -> str:
    """Hash of what determines the training: model, ordering, data, module (optimisation), seed, length."""
    data = {k: v for k, v in to_plain(cfg.data).items() if k not in _RUNTIME_ONLY_DATA_KEYS}
    content = {
        "model": to_plain(cfg.model),
        "ordering": to_plain(cfg.ordering),
        "data": data,
        "module": to_plain(cfg.module),
        "seed": cfg.get("seed"),
        "max_epochs": cfg.trainer.get("max_epochs"),
        "max_steps": cfg.trainer.get("max_steps"),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]
