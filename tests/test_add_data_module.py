"""Data modules are discovered: every module of patchorder/data is imported with the package, each data module in it
is ``patchorder.data.<ClassName>``, and one without a conf/data yaml is a ``data=<name>`` option built from its
constructor's defaults. Checked on the built-ins, and in a copy of the repository with one new file (no yaml, no
import list edited): Python, Hydra's group listing, compose, and a short ``train.py data=<name>`` all see it."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from train_support import CONF_DIR, TINY, copy_repo, read_json, run_dirs
from train_support import run_in_copy as run

import patchorder.data as data
from patchorder.data.hydra_options import option_config

MODULE = '''"""Digits at 64 px with a 50/25/25 split: a data module with no yaml file."""
from patchorder.data.digits import DigitsDataModule


class QuarterDigitsDataModule(DigitsDataModule):
    name = "quarter_digits"

    def __init__(self, image_size=64, val_fraction=0.25, test_fraction=0.25, **rest):
        super().__init__(image_size=image_size, val_fraction=val_fraction, test_fraction=test_fraction, **rest)
'''
# The new module's config, by hand: its own defaults, then DigitsDataModule's and ImageDataModule's.
EXPECTED = {"_target_": "patchorder.data.QuarterDigitsDataModule", "image_size": 64, "val_fraction": 0.25,
            "test_fraction": 0.25, "data_seed": 0, "translate": 0.1, "batch_size": 64, "num_workers": 0,
            "pin_memory": False, "seed": 42, "drop_last_train": False}  # seed: the run's (train.yaml: 42)
SHORT = [*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
         "trainer.num_sanity_val_steps=0", "test=false", "logger=csv", "cpu_threads=1"]


def test_the_built_in_data_modules_are_discovered():
    assert data.available() == ["digits", "imagenet_subset", "shapes"]
    for name, cls in data.DATA_MODULES.items():
        assert getattr(data, cls.__name__) is cls and cls.name == name
        # Every built-in keeps its documented yaml, whose _target_ names the discovered class.
        assert OmegaConf.load(CONF_DIR / "data" / f"{name}.yaml")._target_ == f"patchorder.data.{cls.__name__}"


def test_option_config_collects_defaults_through_loader_args():
    config = option_config(data.ImageNetSubsetDataModule)
    assert config["root"] == "???"  # no default: Hydra asks for it
    assert (config["subset"], config["image_size"], config["batch_size"]) == ("imagenette", 224, 64)
    assert config["seed"] == "${oc.select:seed,0}"


def test_a_yaml_is_not_shadowed_by_a_generated_entry():
    """A ConfigStore entry of a yaml's name would become that yaml's schema (deprecated by Hydra, and merged in)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=["data=shapes", "~experiment"])  # quick sets image_size
    assert OmegaConf.to_container(cfg.data) == OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / "shapes.yaml"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = copy_repo(tmp_path_factory.mktemp("repo"))
    (root / "src" / "patchorder" / "data" / "quarter_digits.py").write_text(MODULE)
    assert not (root / "conf" / "data" / "quarter_digits.yaml").exists()
    return root


@pytest.mark.slow
def test_python_and_hydra_see_the_new_module(repo, tmp_path):
    code = f"""
import json
import patchorder.data as data
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf
from patchorder.training.config import validate_train_config

assert data.QuarterDigitsDataModule is data.DATA_MODULES["quarter_digits"]
with initialize_config_dir(config_dir="{repo / 'conf'}", version_base="1.3"):
    options = GlobalHydra.instance().config_loader().get_group_options("data")
    cfg = compose("train", overrides=["data=quarter_digits", "~experiment"])  # quick would set image_size
validate_train_config(cfg)
module = instantiate(cfg.data)
module.setup("fit")
images, labels = next(iter(module.train_dataloader()))
print(json.dumps({{"options": options, "data": OmegaConf.to_container(cfg.data, resolve=True),
                  "batch": list(images.shape), "counts": module.describe()["counts"]}}))
"""
    out = json.loads(run(repo, ["-c", code], tmp_path).stdout.strip().splitlines()[-1])
    assert out["options"] == ["digits", "imagenet_subset", "long_range", "quarter_digits", "shapes"]
    assert out["data"] == EXPECTED
    assert out["batch"] == [64, 3, 64, 64]
    counts = out["counts"]  # 1,797 digits split 50/25/25 (stratified: within one image per class of a quarter)
    assert sum(counts.values()) == 1797 and abs(counts["val"] - 1797 / 4) <= 10 and abs(counts["test"] - 1797 / 4) <= 10


@pytest.mark.slow
def test_train_py_runs_it_by_name(repo, tmp_path):
    run(repo, [str(repo / "train.py"), "data=quarter_digits", *SHORT], tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    results = read_json(run_dir / "results.json")
    assert results["status"] == "completed"
    assert results["data"]["name"] == "quarter_digits" and results["data"]["image_size"] == [32, 32]  # TINY: 32 px
