"""The model is the one source of its geometry: its patch embedding really has stride patch_size, it says its
stage grids and total stride, and the config checks (image size, orderings) use what it says; orderings can be
given per stage; ordering names are checked before they become folder names."""
from __future__ import annotations

import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from train_support import CONF_DIR, RecordingOrdering

import patchorder.models  # noqa: F401  registers the presets
from patchorder.errors import ConfigError
from patchorder.training import config
from patchorder.training.config import build_ordering, model_geometry, ordering_label, validate_train_config
from patchorder.training.model import create_model


def train_cfg(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/tmp/unused", *overrides], return_hydra_config=hydra)


@pytest.mark.parametrize("patch_size, depths, size", [(2, (1, 1, 1), 32), (4, (1, 1, 1, 1), 64), (8, (1, 1), 48),
                                                      (8, (1, 1, 1, 1), 64)])
def test_stage_grids_are_what_the_stages_see(patch_size, depths, size):
    model = timm.create_model("vmamba_micro", patch_size=patch_size, depths=depths, num_classes=3).eval()
    seen = []
    for layer in model.layers:
        layer.blocks.register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape[1:3])))
    with torch.no_grad():
        model(torch.randn(1, 3, size, size + model.stride))
    expected = [(size // (patch_size * 2**i), (size + model.stride) // (patch_size * 2**i)) for i in range(len(depths))]
    assert seen == expected == model.stage_grids(size, size + model.stride)
    assert model.stride == patch_size * 2 ** (len(depths) - 1) == model.stage_strides[-1]


def test_patch_size_4_keeps_the_official_embedding():
    embed = timm.create_model("vmamba_micro").patch_embed
    assert [(m.kernel_size, m.stride) for m in embed if isinstance(m, torch.nn.Conv2d)] == [((3, 3), (2, 2))] * 2


def test_three_stage_model_takes_multiples_of_16_and_checks_its_own_grids():
    RecordingOrdering.grids.clear()
    cfg = train_cfg("data.image_size=48", "+model.kwargs.depths=[1,1,2]", "~ordering.name",
                    "+ordering._target_=train_support.RecordingOrdering")
    validate_train_config(cfg)
    assert set(RecordingOrdering.grids) == {(12, 12), (6, 6), (3, 3)}
    with pytest.raises(ConfigError, match="not divisible by 16.*strides 4, 8, 16.*data.image_size=48"):
        validate_train_config(train_cfg("data.image_size=40", "+model.kwargs.depths=[1,1,2]"))


def test_patch_8_grids_in_the_config_checks():
    RecordingOrdering.grids.clear()
    validate_train_config(train_cfg("data.image_size=128", "+model.kwargs.patch_size=8", "~ordering.name",
                                    "+ordering._target_=train_support.RecordingOrdering"))
    assert set(RecordingOrdering.grids) == {(16, 16), (8, 8), (4, 4), (2, 2)}
    with pytest.raises(ConfigError, match="not divisible by 64"):
        validate_train_config(train_cfg("data.image_size=96", "+model.kwargs.patch_size=8"))


def test_per_stage_orderings_from_the_config():
    cfg = train_cfg("ordering=per_stage", "ordering.stages=[row_major,spiral,morton,{name:random,seed:3}]")
    validate_train_config(cfg)
    assert ordering_label(cfg.ordering) == "row_major+spiral+morton+random"
    model = create_model(OmegaConf.to_container(cfg.model), cfg.ordering, num_classes=10)
    assert [o.name for o in model.orderings] == ["row_major", "spiral", "morton", "random"]
    assert model.orderings[3].seed == 3
    with pytest.raises(ConfigError, match="has 2 entries but the model has 4 stages"):
        validate_train_config(train_cfg("ordering=per_stage", "ordering.stages=[row_major,spiral]"))


def test_a_list_of_ordering_options_on_the_command_line_is_refused():
    override = "ordering=[row_major,spiral]"
    cfg = train_cfg(override)  # Hydra merges both files: the last one wins, silently
    assert cfg.ordering.name == "spiral"
    with pytest.raises(ConfigError, match=r"ordering=per_stage ordering.stages=\[row_major,spiral\]"):
        validate_train_config(cfg, overrides=[override])


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "x y"])
def test_ordering_names_that_are_not_folder_names_are_refused_before_the_run_dir(name):
    cfg = train_cfg(f"ordering.name='{name}'", hydra=True)
    with pytest.raises(Exception, match="cannot name a run folder"):
        str(cfg.hydra.run.dir)
    with pytest.raises(ConfigError, match="cannot name a run folder"):
        validate_train_config(cfg)


def test_run_folders_are_unique_within_a_second():
    dirs = {str(train_cfg(hydra=True).hydra.run.dir) for _ in range(3)}
    assert len(dirs) == 3
    sweep = train_cfg(hydra=True).hydra.sweep
    assert "${run_id:}" in OmegaConf.to_container(sweep)["dir"]


def test_ordering_options_are_listed_without_a_source_checkout(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "CONF_DIR", tmp_path / "no_conf")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["ordering.name=zigzag_unknown"])
        with pytest.raises(ConfigError) as error:
            validate_train_config(cfg)
    assert "Built-in ordering configs: column_major, diagonal, hilbert" in str(error.value)


def test_training_needs_an_end():
    with pytest.raises(ConfigError, match="training has no end"):
        validate_train_config(train_cfg("trainer.max_epochs=-1"))
    validate_train_config(train_cfg("trainer.max_epochs=-1", "trainer.max_steps=5"))
