"""Digits data module, the shared base (loaders, probe batch, display) and the resumable sampler."""
import json
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from patchorder.data import DataConfigError, DigitsDataModule
from patchorder.data.in_memory import random_shift
from patchorder.data.sampling import EpochShuffleSampler, probe_indices

SKLEARN = load_digits()


@pytest.fixture(scope="module")
def digits():
    module = DigitsDataModule(batch_size=32, seed=3)
    module.setup("fit")
    return module


@pytest.fixture(scope="module")
def digits_8px():
    """At 8 px there is no resampling, so every image must equal sklearn's array / 16 exactly."""
    module = DigitsDataModule(image_size=8, batch_size=32)
    module.setup("fit")
    return module


def raw(dataset) -> torch.Tensor:
    return dataset.images.float()


def test_split_sizes_cover_everything_once(digits_8px):
    counts = {split: len(digits_8px.datasets[split]) for split in ("train", "val", "test")}
    assert counts == {"train": 1257, "val": 270, "test": 270}
    assert sum(counts.values()) == len(SKLEARN.target) == 1797


def test_images_and_labels_are_sklearns(digits_8px):
    """Across the splits, the (image, label) pairs are exactly sklearn's, each used once."""
    def key(image: np.ndarray, label: int) -> tuple[bytes, int]:
        return image.astype(np.float32).tobytes(), int(label)

    expected = Counter(key(img / 16.0, lab) for img, lab in zip(SKLEARN.images, SKLEARN.target))
    found = Counter()
    for split in ("train", "val", "test"):
        dataset = digits_8px.datasets[split]
        found.update(key(img[0].numpy(), lab) for img, lab in zip(raw(dataset), dataset.targets.tolist()))
    assert found == expected


def test_split_is_stratified(digits):
    totals = np.bincount(SKLEARN.target, minlength=10)
    for split, fraction in (("val", 0.15), ("test", 0.15), ("train", 0.70)):
        counts = np.bincount(digits.datasets[split].targets.numpy(), minlength=10)
        assert np.all(np.abs(counts - fraction * totals) <= 1.5), (split, counts, fraction * totals)


def test_split_is_seeded_and_reproducible():
    first = DigitsDataModule(data_seed=5)
    again = DigitsDataModule(data_seed=5)
    other = DigitsDataModule(data_seed=6)
    for split in ("train", "val", "test"):
        assert torch.equal(first.datasets[split].images, again.datasets[split].images)
        assert torch.equal(first.datasets[split].targets, again.datasets[split].targets)
    assert not torch.equal(first.datasets["test"].images, other.datasets["test"].images)


def test_value_ranges_and_normalisation(digits):
    train = digits.datasets["train"]
    pixels = raw(train)
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0 and pixels.max() > 0.9
    # mean/std are the training split's own statistics, recomputed here in float64.
    as64 = pixels.double()
    assert digits.mean == pytest.approx((as64.mean().item(),) * 3, abs=1e-6)
    assert digits.std == pytest.approx((as64.std().item(),) * 3, abs=1e-6)
    batch = torch.stack([train[i][0] for i in range(len(train))])
    assert batch.shape == (1257, 3, 32, 32)
    assert torch.equal(batch[:, 0], batch[:, 1]) and torch.equal(batch[:, 0], batch[:, 2])
    assert batch.double().mean().item() == pytest.approx(0.0, abs=1e-4)
    assert batch.double().std().item() == pytest.approx(1.0, abs=1e-3)


def bilinear_reference(image: np.ndarray, size: int) -> np.ndarray:
    """Brute-force float64 bilinear resize with half-pixel centres and clamped edges."""
    source = image.shape[0]
    out = np.empty((size, size))
    for y in range(size):
        for x in range(size):
            sy = min(max((y + 0.5) * source / size - 0.5, 0.0), source - 1)
            sx = min(max((x + 0.5) * source / size - 0.5, 0.0), source - 1)
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            y1, x1 = min(y0 + 1, source - 1), min(x0 + 1, source - 1)
            wy, wx = sy - y0, sx - x0
            top = (1 - wx) * image[y0, x0] + wx * image[y0, x1]
            bottom = (1 - wx) * image[y1, x0] + wx * image[y1, x1]
            out[y, x] = (1 - wy) * top + wy * bottom
    return out


def test_upscaling_is_bilinear(digits, digits_8px):
    """The 32 px images are the 8 px originals (same split, same order) resized bilinearly."""
    big = raw(digits.datasets["test"])
    small = raw(digits_8px.datasets["test"])
    assert torch.equal(digits.datasets["test"].targets, digits_8px.datasets["test"].targets)
    for i in (0, 1, 137):
        expected = bilinear_reference(small[i, 0].double().numpy(), 32)
        assert np.abs(big[i, 0].double().numpy() - expected).max() < 1e-6


def test_loaders_yield_right_shapes_and_dtypes(digits):
    images, labels = next(iter(digits.train_dataloader()))
    assert images.shape == (32, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (32,) and labels.dtype == torch.int64
    for loader, size in ((digits.val_dataloader(), 270), (digits.test_dataloader(), 270)):
        seen = sum(len(y) for _, y in loader)
        assert seen == size
    assert digits.in_chans == 3 and digits.image_size == (32, 32) and digits.num_classes == 10
    assert digits.class_names == [str(d) for d in range(10)]


def test_drop_last_gives_only_full_batches():
    module = DigitsDataModule(batch_size=100, drop_last_train=True)
    sizes = [len(y) for _, y in module.train_dataloader()]
    assert sizes == [100] * 12  # 1257 // 100
    module = DigitsDataModule(batch_size=100)
    assert sum(len(y) for _, y in module.train_dataloader()) == 1257


def test_train_order_depends_only_on_seed_and_epoch(digits):
    loader = digits.train_dataloader()

    def labels_of_epoch(epoch):
        loader.sampler.set_epoch(epoch)
        return torch.cat([y for _, y in loader])

    epoch0, epoch1 = labels_of_epoch(0), labels_of_epoch(1)
    assert not torch.equal(epoch0, epoch1)
    # A fresh loader (as after resuming) set to the same epoch replays it exactly, images included.
    fresh = DigitsDataModule(batch_size=32, seed=3).train_dataloader()
    fresh.sampler.set_epoch(1)
    first_batch = next(iter(fresh))
    loader.sampler.set_epoch(1)
    reference = next(iter(loader))
    assert torch.equal(first_batch[0], reference[0]) and torch.equal(first_batch[1], reference[1])
    assert torch.equal(torch.cat([y for _, y in fresh]), epoch1)
    # Every training image appears once per epoch.
    assert sorted(epoch1.tolist()) == sorted(digits.datasets["train"].targets.tolist())


def test_sampler_is_a_permutation_with_reproducible_seeds():
    sampler = EpochShuffleSampler(50, seed=1, sample_seeds=True)
    sampler.set_epoch(4)
    pairs = list(sampler)
    assert sorted(i for i, _ in pairs) == list(range(50))
    assert pairs == list(sampler)
    other_seed = EpochShuffleSampler(50, seed=2)
    other_seed.set_epoch(4)
    assert [i for i, _ in pairs] != list(other_seed)


def test_shift_is_an_exact_translation():
    image = torch.arange(2 * 6 * 7, dtype=torch.float32).view(2, 6, 7)
    fill = torch.tensor([-1.0, -2.0])
    for seed in range(30):
        shifted = random_shift(image, 2, seed, fill)
        generator = torch.Generator().manual_seed(seed)
        dy, dx = torch.randint(-2, 3, (2,), generator=generator).tolist()
        # Oracle: brute force over pixels.
        expected = torch.empty_like(image)
        for c in range(2):
            for y in range(6):
                for x in range(7):
                    sy, sx = y - dy, x - dx
                    inside = 0 <= sy < 6 and 0 <= sx < 7
                    expected[c, y, x] = image[c, sy, sx] if inside else fill[c]
        assert torch.equal(shifted, expected)


def test_augmentation_only_in_training(digits):
    train = digits.datasets["train"]
    assert digits.max_shift == 3
    plain, label = train[5]
    augmented = [train[(5, seed)][0] for seed in range(8)]
    assert any(not torch.equal(plain, a) for a in augmented)
    assert torch.equal(train[(5, 123)][0], train[(5, 123)][0])
    assert all(train[(5, s)][1] == label for s in range(8))
    val = digits.datasets["val"]
    assert torch.equal(val[(0, 7)][0], val[0][0])
    off = DigitsDataModule(translate=0.0)
    assert off.max_shift == 0 and not off._train_yields_sample_seeds()


def test_probe_batch_is_fixed_and_spread_over_classes(digits):
    images, labels = digits.probe_batch(23)
    again_images, again_labels = digits.probe_batch(23)
    assert images.shape == (23, 3, 32, 32) and images.dtype == torch.float32
    assert torch.equal(images, again_images) and torch.equal(labels, again_labels)
    assert labels.tolist() == list(range(10)) + list(range(10)) + [0, 1, 2]
    val = digits.datasets["val"]
    first_of_class_3 = int(np.flatnonzero(val.targets.numpy() == 3)[0])
    assert torch.equal(images[3], val[first_of_class_3][0])
    with pytest.raises(ValueError, match="only 270"):
        digits.probe_batch(271)


def test_probe_indices_round_robin():
    assert probe_indices([2, 2, 0, 1, 0, 2], 5) == [2, 3, 0, 4, 1]


def test_to_display_undoes_normalisation(digits):
    images, _ = digits.probe_batch(4)
    shown = digits.to_display(images)
    assert shown.shape == (4, 32, 32, 3) and shown.dtype == torch.uint8
    val = digits.datasets["val"]
    index = probe_indices(val.targets.tolist(), 4)
    expected = (raw(val)[index, 0] * 255).round()
    assert (shown[..., 0].float() - expected).abs().max() <= 1


def test_describe_is_json_friendly(digits):
    info = json.loads(json.dumps(digits.describe()))
    assert info["name"] == "digits" and info["num_classes"] == 10
    assert info["counts"] == {"train": 1257, "val": 270, "test": 270}
    assert info["image_size"] == [32, 32] and info["class_names"][3] == "3"
    assert info["augmentation"] == {"max_shift_px": 3}


def test_64px_works():
    module = DigitsDataModule(image_size=64, batch_size=8)
    images, _ = next(iter(module.val_dataloader()))
    assert images.shape == (8, 3, 64, 64)


def test_check_class_names(digits):
    digits.check_class_names([str(d) for d in range(10)])
    with pytest.raises(DataConfigError, match="In checkpoint only: \\[.cat.\\]; in data only: \\[.9.\\]"):
        digits.check_class_names([str(d) for d in range(9)] + ["cat"])
    with pytest.raises(DataConfigError, match="another order"):
        digits.check_class_names([str(d) for d in reversed(range(10))])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 4}, "at least 8"),
        ({"image_size": [32]}, "positive int or \\[height, width\\]"),
        ({"translate": 0.7}, "translate=0.7"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"num_workers": -1}, "num_workers=-1"),
    ],
)
def test_bad_settings_are_explained(kwargs, message):
    with pytest.raises(DataConfigError, match=message):
        DigitsDataModule(**kwargs)


def test_bad_split_fractions_are_explained():
    with pytest.raises(DataConfigError, match="leaves no training data"):
        DigitsDataModule(val_fraction=0.5, test_fraction=0.5).setup()
    with pytest.raises(DataConfigError, match="strictly between 0 and 1"):
        DigitsDataModule(val_fraction=0.0).setup()


def test_drop_last_with_tiny_split_is_explained():
    with pytest.raises(DataConfigError, match="Lower data.batch_size"):
        DigitsDataModule(batch_size=2000, drop_last_train=True).train_dataloader()


def test_workers_give_the_same_batches():
    in_process = DigitsDataModule(batch_size=64, seed=1)
    with_workers = DigitsDataModule(batch_size=64, seed=1, num_workers=1)
    a, b = next(iter(in_process.train_dataloader())), next(iter(with_workers.train_dataloader()))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
