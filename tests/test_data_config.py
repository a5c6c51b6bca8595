"""Every conf/data/*.yaml composes with Hydra's compose API and instantiates to a working data module."""
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from patchorder.data import ImageDataModule

CONF = Path(__file__).resolve().parents[1] / "conf"
DATA_CONFIGS = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))
# Small settings so instantiating is quick; the keys exist in the configs, so plain overrides work.
QUICK = {"shapes": ["data.train_per_class=8", "data.val_per_class=4", "data.test_per_class=4"]}


def compose_data(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(overrides=[f"+data={name}", *QUICK.get(name, []), *overrides])


@pytest.fixture
def imagenet_root(tmp_path, monkeypatch) -> Path:
    """A two-class ImageFolder tree of real JPEGs, exported as IMAGENET_ROOT."""
    for split in ("train", "val"):
        for wnid in ("n01440764", "n02102040"):
            folder = tmp_path / split / wnid
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((24, 24, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.JPEG")
    monkeypatch.setenv("IMAGENET_ROOT", str(tmp_path))
    return tmp_path


def test_every_data_config_exists():
    assert DATA_CONFIGS == ["digits", "imagenet_subset", "long_range", "shapes"]


@pytest.mark.parametrize("name", DATA_CONFIGS)
@pytest.mark.parametrize("convert", [None, "all"])
def test_config_composes_and_instantiates(name, convert, imagenet_root):
    extra = ["data.subset=[n01440764,n02102040]", "data.image_size=32", "data.num_workers=0"] if name == "imagenet_subset" else []
    cfg = compose_data(name, "+seed=7", "data.batch_size=4", *extra)
    # The training config interpolates these two keys, so they must sit at the top of every data config.
    assert "batch_size" in cfg.data and "image_size" in cfg.data
    kwargs = {"_convert_": convert} if convert else {}
    data = instantiate(cfg.data, **kwargs)
    # long_range is a setting of the shapes data module (conf/data/long_range.yaml starts from shapes.yaml)
    assert isinstance(data, ImageDataModule) and data.name == {"long_range": "shapes"}.get(name, name)
    assert data.seed == 7  # follows the run's top-level seed
    assert data.batch_size == 4
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, *data.image_size) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and int(labels.max()) < data.num_classes
    assert len(data.class_names) == data.num_classes


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_seed_defaults_to_zero_without_a_run_seed(name, imagenet_root):
    cfg = compose_data(name)
    assert cfg.data.seed == 0


def test_defaults_are_the_documented_ones(imagenet_root):
    digits = compose_data("digits").data
    assert (digits.image_size, digits.val_fraction, digits.test_fraction, digits.num_workers) == (32, 0.15, 0.15, 0)
    imagenet = compose_data("imagenet_subset").data
    assert imagenet.root == str(imagenet_root) and imagenet.subset == "imagenette"
    assert imagenet.train_transform.auto_augment == "rand-m9-mstd0.5-inc1"
    assert imagenet.train_transform.re_prob == 0.25 and imagenet.eval_transform.crop_pct == 0.875


def test_imagenet_without_root_says_how_to_set_it(monkeypatch):
    monkeypatch.delenv("IMAGENET_ROOT", raising=False)
    cfg = compose_data("imagenet_subset")
    assert cfg.data.root is None
    with pytest.raises(Exception, match="data.root is not set.*export IMAGENET_ROOT"):
        instantiate(cfg.data)
