"""Checks on a composed config that run before any training, the ordering label used in run names, and the
fingerprint that identifies "the same configuration" when resuming with ``ckpt_path=last``."""
from __future__ import annotations

import hashlib
import json
import re
import secrets
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from patchorder.errors import ConfigError

# Where the config tree is in a source checkout (only used outside a Hydra job: inside one, Hydra's own config
# search path says which ordering options exist, which also works when patchorder is installed from a wheel).
CONF_DIR = Path(__file__).resolve().parents[3] / "conf"

# Settings that do not change what is trained, left out of the fingerprint so a resumed run may change them.
_RUNTIME_ONLY_DATA_KEYS = ("num_workers", "pin_memory", "root", "persistent_workers")

# An ordering label names run folders (hydra.run.dir): no path separators, no "..", nothing a shell must quote.
_SAFE_LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,99}")


def _label(spec: Any) -> str:
    spec = to_plain(spec)
    if spec is None:
        return "as_trained"
    if isinstance(spec, str):
        return spec
    if isinstance(spec, (list, tuple)):
        return "+".join(_label(s) for s in spec)
    if isinstance(spec, dict):
        if spec.get("name"):
            return str(spec["name"])
        if spec.get("stages"):
            return _label(spec["stages"])
        if spec.get("_target_"):
            return str(spec["_target_"]).rsplit(".", 1)[-1]
    return "custom"


def ordering_label(spec: Any) -> str:
    """A short name for an ordering config (its ``name``, the stages' names joined by "+", else the class name of
    its ``_target_``), checked to be safe as part of a folder name."""
    label = _label(spec)
    if not _SAFE_LABEL.fullmatch(label) or ".." in label:
        raise ConfigError(
            f"ordering name {label!r} cannot name a run folder: use letters, digits and _ . + = - only (no '/', "
            f"no '..'), e.g. ordering.name=my_ordering"
        )
    return label


def folder_label(spec: Any) -> str:
    """The ordering label as used in hydra.run.dir: unsafe characters replaced, so a name such as '../../x'
    can never place a run outside outputs/ (the run then stops in its pre-flight with ordering_label's message)."""
    label = re.sub(r"[^A-Za-z0-9_.+=-]", "_", _label(spec))[:100]
    return re.sub(r"\.{2,}", "_", label).lstrip(".") or "_"


def register_resolvers() -> None:
    """``${ordering_label:${ordering}}`` and ``${run_id:}`` in run directory names (idempotent; train.py and
    eval.py call it). run_id is random, cached per config like Hydra's ``now`` (one value for a whole sweep), so
    two runs started in the same second never share a folder."""
    if not OmegaConf.has_resolver("ordering_label"):
        OmegaConf.register_new_resolver("ordering_label", folder_label)
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True)


register_resolvers()


def available_ordering_configs() -> list[str]:
    """The ordering options (conf/ordering/*.yaml, or wherever Hydra's search path has them)."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return sorted(GlobalHydra.instance().config_loader().get_group_options("ordering"))
    from orderings.hydra_options import option_names  # yaml files and every registered ordering

    return option_names(CONF_DIR)


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


def check_image_size(data_cfg: DictConfig, model) -> tuple[int, int]:
    """The image size, checked against the model's total stride (``model.stride``: the model says it)."""
    height, width = image_size_of(data_cfg)
    stride = model.stride
    if any(side % stride or side <= 0 for side in (height, width)):
        def nearest(v: int) -> int:  # the next multiple up
            return max(stride, -(-v // stride) * stride)

        raise ConfigError(
            f"data.image_size={height}x{width} is not divisible by {stride}: this model embeds patches at stride "
            f"{model.stage_strides[0]} and has {len(model.stage_strides)} stages (strides "
            f"{', '.join(map(str, model.stage_strides))}), so both sides must be multiples of {stride}. "
            f"Use e.g. data.image_size={nearest(height)}" + ("" if height == width else f" or [{nearest(height)}, {nearest(width)}]")
        )
    return height, width


def _ordering_error(plain: Any, error: Exception) -> ConfigError:
    import orderings

    return ConfigError(
        f"ordering {plain!r} cannot be used: {error}\n"
        f"Built-in ordering configs: {', '.join(available_ordering_configs())} (ordering=<name>, or one per stage: "
        f"~ordering.name +ordering.stages=[row_major,spiral,...]); registered orderings: "
        f"{', '.join(orderings.available())}. Select your own orderings.Ordering subclass with a "
        f"conf/ordering/<name>.yaml holding `_target_: my_module.MyOrdering`, or on the command line with "
        f"~ordering.name +ordering._target_=my_module.MyOrdering (my_module importable)."
    )


def build_ordering(spec: Any, stage_grids: list[tuple[int, int]] | None = None):
    """Resolve an ordering config into an :class:`orderings.Ordering` (a list of them, one per stage, for
    ``{stages: [...]}``), checking it on each stage's grid when ``stage_grids`` (the model's) is given."""
    import orderings

    plain = to_plain(spec)
    stages = plain.get("stages") if isinstance(plain, dict) else None
    try:
        if stages is not None:
            if not isinstance(stages, list) or not stages:
                raise ConfigError(f"ordering.stages={stages!r} must be a list with one ordering per stage")
            extra = sorted(set(plain) - {"stages", "name"})
            if extra:
                raise ConfigError(f"ordering.stages cannot be combined with {extra}; put those in each stage's entry")
            built = [orderings.resolve(s) for s in stages]
            if stage_grids is not None and len(built) != len(stage_grids):
                raise ConfigError(f"ordering.stages has {len(built)} entries but the model has {len(stage_grids)} "
                                  f"stages: give one ordering per stage")
        else:
            built = orderings.resolve(plain)
        per_stage = built if isinstance(built, list) else [built] * len(stage_grids or [])
        for ordering, grid in zip(per_stage, stage_grids or []):
            ordering(*grid)
    except ConfigError:
        raise
    except Exception as error:  # OrderingError, a bad _target_, a user ordering that crashes
        raise _ordering_error(plain, error) from error
    return built


def model_geometry(model_cfg: DictConfig):
    """The configured model, built on the meta device (no memory, no weights): it says its own stride and stage
    grids (``model.stride``, ``model.stage_grids(h, w)``)."""
    import torch

    from patchorder.training.model import create_model

    check_model_name(model_cfg.name)
    try:
        with torch.device("meta"):
            return create_model(to_plain(model_cfg), "row_major", num_classes=1)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model {model_cfg.name} cannot be built from model={to_plain(model_cfg)}: {error}") from None


def check_model_name(name: str) -> None:
    import timm

    import patchorder.models  # noqa: F401  registers the VMamba presets with timm

    if not timm.is_model(name):
        presets = [m for m in timm.list_models("vmamba*")]
        raise ConfigError(f"model.name={name!r} is not a registered model; VMamba presets: {', '.join(presets)}")


def check_mixup_batches(cfg: DictConfig) -> None:
    from dataclasses import fields

    from patchorder.training.recipe import MixupConfig

    mixup = cfg.module.get("mixup")
    known = [f.name for f in fields(MixupConfig)]
    unknown = sorted(set(mixup or {}) - set(known))
    if unknown:  # module.mixup is free-form in the structured config (see recipe.Recipe), so its keys are checked here
        raise ConfigError(f"module.mixup has unknown keys {unknown}; known: {', '.join(known)}")
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


def check_schedule(trainer_cfg: DictConfig) -> None:
    """Training must end: the warmup-cosine schedule spans max_epochs or max_steps."""
    epochs, steps = trainer_cfg.get("max_epochs"), trainer_cfg.get("max_steps", -1)
    has_end = (epochs is not None and epochs >= 1) or (steps is not None and steps >= 1)
    if not has_end:
        raise ConfigError(
            f"trainer.max_epochs={epochs} and trainer.max_steps={steps}: training has no end, and the learning-rate "
            f"schedule (warmup then cosine) needs one. Set trainer.max_epochs=<n> or trainer.max_steps=<n> (>= 1)"
        )


def check_no_ordering_list_override(overrides: list[str]) -> None:
    """``ordering=[a,b]`` on the command line makes Hydra merge both option files into one (the last wins):
    refuse it and point to the per-stage form."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(overrides):
        if override.key_or_group.lstrip("+~") == "ordering" and isinstance(override.value(), list):
            names = ",".join(map(str, override.value()))
            raise ConfigError(
                f"ordering=[{names}] would merge those ordering configs into one. For one ordering per stage use "
                f"~ordering.name +ordering.stages=[{names}] (or a conf/ordering/<name>.yaml holding stages: [...])"
            )


def validate_train_config(cfg: DictConfig, overrides: list[str] | None = None) -> None:
    """Everything that can be checked without reading data or building the real model; raises ConfigError."""
    for key in ("data", "model", "ordering", "module", "trainer"):
        if cfg.get(key) is None:
            raise ConfigError(f"the config has no '{key}' section; select one, e.g. {key}=<option> (see conf/{key}/)")
    if "_target_" not in cfg.data:
        raise ConfigError("data config has no _target_: pick one of conf/data/*.yaml with data=<name>")
    check_no_ordering_list_override(overrides or [])
    ordering_label(cfg.ordering)
    model = model_geometry(cfg.model)
    size = check_image_size(cfg.data, model)
    build_ordering(cfg.ordering, model.stage_grids(*size))
    check_mixup_batches(cfg)
    check_schedule(cfg.trainer)
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
