"""Every option of every config group composes (Hydra compose API) and, where cheap, instantiates to what it says;
config mistakes are caught by validate_train_config with a message that says how to fix them."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import orderings
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import OmegaConf
from train_support import CONF_DIR

from patchorder.training.config import (build_ordering, fingerprint, model_geometry, ordering_label,
                                        validate_train_config)
from patchorder.errors import ConfigError


def options(group: str) -> list[str]:
    """The group's options as Hydra lists them (what `group=glob(*)` sweeps): yaml files and ConfigStore entries."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return GlobalHydra.instance().config_loader().get_group_options(group)


def train_cfg(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/tmp/unused", *overrides], return_hydra_config=hydra)


def test_every_group_has_its_options():
    assert options("model") == ["vmamba_long_range", "vmamba_micro", "vmamba_small_s1l20", "vmamba_tiny_s1l8"]
    assert {"row_major", "column_major", "diagonal", "morton", "spiral", "hilbert", "snake", "random"} <= set(
        options("ordering"))
    assert options("trainer") == ["cpu", "ddp", "ddp_cpu", "default", "gpu"]
    assert options("logger") == ["csv", "default", "none", "wandb"]
    assert options("experiment") == ["long_range", "paper", "quick"]
    assert {"digits", "shapes", "imagenet_subset"} <= set(options("data"))


def test_default_is_the_quick_cpu_experiment():
    cfg = train_cfg()
    assert (cfg.experiment_name, cfg.model.name, cfg.ordering.name, cfg.trainer.accelerator) == \
        ("quick", "vmamba_micro", "row_major", "cpu")
    assert cfg.data._target_ == "patchorder.data.DigitsDataModule"
    assert set(cfg.logger) == {"wandb", "csv"} and cfg.logger.wandb.mode == "offline"
    assert (cfg.data.image_size, cfg.trainer.max_epochs, cfg.cpu_threads) == (64, 10, None)
    validate_train_config(cfg)


@pytest.mark.parametrize("name", options("model"))
def test_model_options(name):
    cfg = train_cfg(f"model={name}")
    assert cfg.model.name == name
    import timm

    import patchorder.models  # noqa: F401
    assert timm.is_model(name)


def micro_grids(size: int = 32) -> list[tuple[int, int]]:
    return model_geometry(train_cfg().model).stage_grids(size, size)


@pytest.mark.parametrize("name", options("ordering"))
def test_ordering_options_build_the_registered_permutation(name):
    cfg = train_cfg(f"ordering={name}")
    ordering = build_ordering(cfg.ordering, micro_grids())
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.ordering).items() if k not in ("name", "_target_")}
    if "_target_" in cfg.ordering:
        expected = instantiate(cfg.ordering)
    else:
        expected = orderings.get(cfg.ordering.name, **kwargs)
    for grid in ((8, 8), (4, 6)):
        assert torch.equal(ordering(*grid), expected(*grid))
    assert ordering_label(cfg.ordering) == (cfg.ordering.get("name") or cfg.ordering._target_.rsplit(".", 1)[-1])


def test_ordering_options_with_a_yaml_compose_without_hydra_warnings(tmp_path):
    """conf/ordering/random.yaml and the registry's ``random`` are one option: the yaml alone, not also a
    ConfigStore entry that Hydra would match as its schema (a deprecation warning on every run). In a fresh
    process, as a user runs it: the ConfigStore is global to a process, and other tests fill it."""
    from train_support import run_script

    run = run_script("train.py", ["ordering=random", "--cfg", "job"], tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "seed: 0" in run.stdout and "name: random" in run.stdout
    assert "ConfigStore schema" not in run.stderr, run.stderr[-2000:]


def test_user_ordering_by_target():
    cfg = train_cfg("ordering=row_major", "~ordering.name", "+ordering._target_=orderings.examples.Tiled",
                    "+ordering.tile=2")
    ordering = build_ordering(cfg.ordering, micro_grids())
    # 4x4 grid in 2x2 tiles: the first tile is raster cells 0, 1, 4, 5.
    assert ordering(4, 4)[:4].tolist() == [0, 1, 4, 5]
    assert ordering_label(cfg.ordering) == "Tiled"


def test_trainer_options():
    cpu = instantiate(train_cfg("trainer=cpu").trainer, logger=False)
    assert isinstance(cpu, L.Trainer) and cpu.num_devices == 1 and cpu.gradient_clip_val == 5.0
    ddp_cpu = instantiate(train_cfg("trainer=ddp_cpu").trainer, logger=False)
    assert ddp_cpu.num_devices == 2 and type(ddp_cpu.strategy).__name__ == "DDPStrategy"
    assert ddp_cpu.strategy.process_group_backend == "gloo"
    gpu, ddp = train_cfg("trainer=gpu").trainer, train_cfg("trainer=ddp").trainer
    assert (gpu.accelerator, gpu.devices, gpu.precision) == ("gpu", 1, "bf16-mixed")
    assert (ddp.accelerator, ddp.strategy, ddp.devices, ddp.num_nodes) == ("gpu", "ddp", "auto", 1)


def test_logger_options(tmp_path):
    cfg = train_cfg("logger=default", f"paths.output_dir={tmp_path}")
    loggers = {name: instantiate(entry) for name, entry in cfg.logger.items()}
    assert isinstance(loggers["wandb"], WandbLogger) and isinstance(loggers["csv"], CSVLogger)
    assert loggers["wandb"]._wandb_init["mode"] == "offline" and loggers["wandb"].save_dir == str(tmp_path)
    assert Path(loggers["csv"].log_dir) == tmp_path / "csv"
    assert set(train_cfg("logger=wandb").logger) == {"wandb"}
    assert set(train_cfg("logger=csv").logger) == {"csv"}
    assert not train_cfg("logger=none").get("logger")
    assert train_cfg("logger.wandb.mode=online").logger.wandb.mode == "online"


def test_callback_options(tmp_path):
    cfg = train_cfg("callbacks=default", f"paths.output_dir={tmp_path}")
    callbacks = {name: instantiate(entry) for name, entry in cfg.callbacks.items()}
    checkpoint = callbacks["model_checkpoint"]
    assert isinstance(checkpoint, ModelCheckpoint)
    assert (checkpoint.monitor, checkpoint.mode, checkpoint.save_last, checkpoint.save_top_k) == \
        ("val/acc1", "max", True, 1)
    assert checkpoint.dirpath == str(tmp_path / "checkpoints")
    assert isinstance(callbacks["progress_bar"], TQDMProgressBar)
    assert isinstance(callbacks["model_summary"], ModelSummary)
    assert not train_cfg("callbacks=none").get("callbacks")


def test_experiment_paper_is_the_vmamba_tiny_recipe():
    cfg = train_cfg("experiment=paper")
    assert cfg.model.name == "vmamba_tiny_s1l8" and cfg.model.drop_path_rate == 0.2
    assert cfg.data._target_ == "patchorder.data.ImageNetSubsetDataModule" and cfg.data.image_size == 224
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.max_epochs == 300 and cfg.trainer.gradient_clip_val == 5.0
    opt, sched = cfg.module.optimizer, cfg.module.scheduler
    assert (opt.lr, opt.lr_batch_size, opt.weight_decay) == (1e-3, 1024, 0.05)
    assert sched.warmup_epochs == 20
    # The official warmup / minimum lr (5e-7 / 5e-6 at lr 5e-4) as ratios of the peak lr.
    assert sched.warmup_lr_ratio * 5e-4 == pytest.approx(5e-7) and sched.min_lr_ratio * 5e-4 == pytest.approx(5e-6)
    assert cfg.module.label_smoothing == 0.1
    assert (cfg.module.mixup.mixup_alpha, cfg.module.mixup.cutmix_alpha) == (0.8, 1.0)
    assert cfg.module.ema.enabled and cfg.module.ema.decay == 0.9999
    assert cfg.data.drop_last_train and cfg.data.batch_size % 2 == 0
    validate_train_config(cfg)


def test_hydra_directories_carry_the_ordering():
    cfg = train_cfg("ordering=spiral", hydra=True)
    assert cfg.hydra.run.dir.startswith("./outputs/") and cfg.hydra.run.dir.endswith("_spiral")
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.num}_${ordering_label:${ordering}}"
    assert cfg.hydra.callbacks.sweep_summary._target_ == "patchorder.training.sweep.SweepSummary"


def test_slurm_launcher_preset():
    cfg = train_cfg("hydra/launcher=slurm", hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1 and launcher.timeout_min > 0
    local = train_cfg("hydra/launcher=submitit_local", hydra=True).hydra.launcher
    assert local._target_.endswith("LocalLauncher")


def test_eval_config():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=["ckpt_path=x.ckpt"])
        spiral = compose("eval", overrides=["ckpt_path=x.ckpt", "ordering=spiral"])
    assert cfg.get("ordering") is None and cfg.split == "test" and cfg.use_ema
    assert spiral.ordering.name == "spiral"


# --- mistakes a user can make -------------------------------------------------------------------------------
def test_unknown_ordering_option_lists_the_available_ones():
    with pytest.raises(MissingConfigException, match="spiral"):
        train_cfg("ordering=no_such_ordering")


def test_unknown_ordering_name_lists_registered_orderings():
    with pytest.raises(ConfigError) as error:
        validate_train_config(train_cfg("ordering.name=no_such_ordering"))
    message = str(error.value)
    assert "no_such_ordering" in message and "hilbert" in message and "row_major" in message


def test_broken_user_ordering_is_reported_before_training():
    cfg = train_cfg("ordering=row_major", "~ordering.name", "+ordering._target_=orderings.examples.Tiled",
                    "+ordering.tile=0")
    with pytest.raises(ConfigError, match="tile must be an integer >= 1"):
        validate_train_config(cfg)


@pytest.mark.parametrize("size, hint", [("48", "data.image_size=64"), ("[64,80]", "[64, 96]")])
def test_image_size_not_divisible_by_32(size, hint):
    with pytest.raises(ConfigError) as error:
        validate_train_config(train_cfg(f"data.image_size={size}"))
    assert "not divisible by 32" in str(error.value) and hint in str(error.value)


def test_missing_checkpoint_path():
    with pytest.raises(ConfigError, match="does not exist"):
        validate_train_config(train_cfg("ckpt_path=/nonexistent/last.ckpt"))


def test_unknown_model():
    with pytest.raises(ConfigError, match="vmamba_micro"):
        validate_train_config(train_cfg("model.name=vmamba_huge"))


def test_mixup_needs_even_full_batches():
    with pytest.raises(ConfigError, match="drop_last_train"):
        validate_train_config(train_cfg("+module.mixup.mixup_alpha=0.8"))
    with pytest.raises(ConfigError, match="even batch size"):
        validate_train_config(train_cfg("+module.mixup.mixup_alpha=0.8", "data.drop_last_train=true",
                                        "data.batch_size=33"))


def test_fingerprint_tracks_what_is_trained():
    base = fingerprint(train_cfg())
    assert fingerprint(train_cfg("trainer.devices=2", "logger=none", "callbacks=none")) == base
    assert fingerprint(train_cfg("ordering=spiral")) != base
    assert fingerprint(train_cfg("module.optimizer.lr=0.01")) != base
    assert fingerprint(train_cfg("trainer.max_epochs=3")) != base


def test_the_module_recipe_is_the_recipe_dataclass():
    """One source for the recipe's defaults: the composed ``module`` section (no experiment) is Recipe(), and a
    module built in Python without a recipe trains with the same values."""
    from dataclasses import asdict

    from patchorder.training.module import ClassificationModule
    from patchorder.training.recipe import Recipe

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["~experiment"])
    assert OmegaConf.to_container(cfg.module) == asdict(Recipe())
    module = ClassificationModule(model={"name": "vmamba_micro"}, ordering={"name": "row_major"}, num_classes=10,
                                  class_names=[str(i) for i in range(10)], image_size=[32, 32])
    assert module.optimizer_cfg == OmegaConf.to_container(cfg.module.optimizer)
    assert module.scheduler_cfg == OmegaConf.to_container(cfg.module.scheduler)
    assert module.train_loss.label_smoothing == cfg.module.label_smoothing
    assert module.mixup is None and module.ema is None
    # Experiments override only what their recipe changes; the rest stays the dataclass's.
    quick = train_cfg()
    assert quick.module.optimizer.lr == 2e-3 and quick.module.optimizer.betas == Recipe().optimizer.betas


@pytest.mark.parametrize("override, message", [
    ("module.optimizer.lr=abc", "module.optimizer.lr"),
    ("module.scheduler.warmup_epochs=soon", "module.scheduler.warmup_epochs"),
    ("module.optimizer.lrr=0.1", "lrr"),
])
def test_recipe_values_are_type_checked_when_composed(override, message):
    with pytest.raises(Exception, match=message):  # Hydra's ConfigCompositionException, from OmegaConf's check
        train_cfg(override)


def test_unknown_mixup_key():
    with pytest.raises(ConfigError, match=r"module.mixup has unknown keys \['mixup_alhpa'\]; known: mixup_alpha"):
        validate_train_config(train_cfg("+module.mixup.mixup_alhpa=0.8", "data.drop_last_train=true"))
