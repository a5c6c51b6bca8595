"""Generated spatial-relation shapes: labels follow the drawn relation, rendering matches layouts, determinism."""
import json

import numpy as np
import pytest
import torch

from patchorder.data import DataConfigError, ShapesDataModule
from patchorder.data import shapes_generator as gen

# Oracle written out independently of the generator: (sign of row step, sign of column step) -> class name.
DIRECTION_ORACLE = {
    (-1, 0): "above", (1, 0): "below", (0, -1): "left", (0, 1): "right",
    (-1, -1): "above_left", (-1, 1): "above_right", (1, -1): "below_left", (1, 1): "below_right",
}
ALIGNMENT_ORACLE = {
    (0, 1): "horizontal", (0, -1): "horizontal", (1, 0): "vertical", (-1, 0): "vertical",
    (1, 1): "diagonal", (-1, -1): "diagonal", (1, -1): "anti_diagonal", (-1, 1): "anti_diagonal",
}
ORACLES = {"direction": DIRECTION_ORACLE, "alignment": ALIGNMENT_ORACLE}


def small_module(**kwargs) -> ShapesDataModule:
    settings = dict(train_per_class=40, val_per_class=10, test_per_class=10, batch_size=16)
    return ShapesDataModule(**{**settings, **kwargs})


@pytest.mark.parametrize("task", ["direction", "alignment"])
@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_labels_follow_the_drawn_relation(task, difficulty):
    images, labels, layouts = gen.generate(30, (32, 32), task, difficulty, seed=11)
    names = gen.class_names(task)
    assert names == sorted(set(ORACLES[task].values()))
    for label, layout in zip(labels, layouts):
        d_row, d_col = layout.second.row - layout.first.row, layout.second.col - layout.first.col
        # Exactly on a common row, column, diagonal or anti-diagonal, and apart.
        assert d_row == 0 or d_col == 0 or abs(d_row) == abs(d_col)
        assert (d_row, d_col) != (0, 0)
        assert names[label] == ORACLES[task][(int(np.sign(d_row)), int(np.sign(d_col)))]
        assert layout.label == label


@pytest.mark.parametrize("task", ["direction", "alignment"])
def test_marks_are_drawn_where_the_layout_says(task):
    images, labels, layouts = gen.generate(10, (32, 32), task, "hard", seed=3)
    expected_shapes = ("plus", "square") if task == "direction" else ("square", "square")
    for image, layout in zip(images, layouts):
        assert (layout.first.shape, layout.second.shape) == expected_shapes
        marks = (layout.first, layout.second, *layout.distractors)
        assert all(m.shape == "cross" for m in layout.distractors)
        for mark in marks:
            # Whole mark inside the frame, odd size so the centre is a pixel.
            assert mark.size % 2 == 1
            assert mark.half <= mark.row <= 31 - mark.half and mark.half <= mark.col <= 31 - mark.half
            stencil = gen.mark_mask(mark.shape, mark.size)
            window = image[:, mark.row - mark.half : mark.row + mark.half + 1, mark.col - mark.half : mark.col + mark.half + 1]
            colour = np.rint(np.asarray(mark.colour) * 255).astype(np.uint8)
            assert np.all(window[:, stencil] == colour[:, None]), "a mark's pixels must carry its colour"
        # No two marks overlap or touch, so none is damaged.
        for i, a in enumerate(marks):
            for b in marks[i + 1 :]:
                assert max(abs(a.row - b.row), abs(a.col - b.col)) > a.half + b.half


def test_stencils():
    assert gen.mark_mask("square", 3).sum() == 9
    assert gen.mark_mask("plus", 5).sum() == 9
    assert gen.mark_mask("cross", 5).sum() == 9
    assert not np.array_equal(gen.mark_mask("plus", 3), gen.mark_mask("cross", 3))


def test_difficulty_controls_distractors_and_sizes():
    for difficulty, level in gen.DIFFICULTIES.items():
        _, _, layouts = gen.generate(5, (32, 32), "direction", difficulty, seed=0)
        assert all(len(layout.distractors) == level.distractors for layout in layouts)
        sizes = {m.size for layout in layouts for m in (layout.first, layout.second)}
        assert sizes <= set(level.sizes_at_32)
    _, _, layouts = gen.generate(5, (64, 64), "direction", "easy", seed=0)
    assert {m.size for layout in layouts for m in (layout.first, layout.second)} <= {11, 15}


def test_same_seed_same_images_other_seed_other_images():
    a = small_module(data_seed=4)
    b = small_module(data_seed=4)
    c = small_module(data_seed=5)
    for split in ("train", "val", "test"):
        assert torch.equal(a.datasets[split].images, b.datasets[split].images)
        assert torch.equal(a.datasets[split].targets, b.datasets[split].targets)
    assert not torch.equal(a.datasets["train"].images, c.datasets["train"].images)


def test_splits_are_balanced_and_independent():
    module = small_module()
    for split, per_class in (("train", 40), ("val", 10), ("test", 10)):
        counts = np.bincount(module.datasets[split].targets.numpy(), minlength=8)
        assert counts.tolist() == [per_class] * 8
    # Growing the training set leaves validation and test untouched.
    bigger = small_module(train_per_class=60)
    assert torch.equal(module.datasets["val"].images, bigger.datasets["val"].images)
    assert torch.equal(module.datasets["test"].images, bigger.datasets["test"].images)
    assert not torch.equal(module.datasets["train"].images[:10], module.datasets["val"].images[:10])


def test_module_contract():
    module = small_module(task="alignment", image_size=64)
    assert module.num_classes == 4 and module.class_names == ["anti_diagonal", "diagonal", "horizontal", "vertical"]
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape == (16, 3, 64, 64) and images.dtype == torch.float32 and labels.dtype == torch.int64
    probe, probe_labels = module.probe_batch(6)
    assert probe_labels.tolist() == [0, 1, 2, 3, 0, 1]
    assert torch.equal(probe, module.probe_batch(6)[0])
    # Normalised with the training split's own channel statistics (float64 oracle).
    pixels = module.datasets["train"].images.double() / 255
    assert module.mean == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
    assert module.std == pytest.approx(pixels.transpose(0, 1).reshape(3, -1).std(1).tolist(), abs=1e-6)
    shown = module.to_display(probe)
    assert shown.dtype == torch.uint8 and shown.shape == (6, 64, 64, 3)
    info = json.loads(json.dumps(module.describe()))
    assert info["counts"] == {"train": 160, "val": 40, "test": 40} and info["task"] == "alignment"
    assert info["augmentation"] == {"max_shift_px": 0}


def test_to_display_returns_the_generated_pixels():
    module = small_module()
    val = module.datasets["val"]
    shown = module.to_display(torch.stack([val[i][0] for i in range(4)]))
    expected = val.images[:4].permute(0, 2, 3, 1)
    assert (shown.int() - expected.int()).abs().max() <= 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "colour"}, "not a shapes task"),
        ({"difficulty": "extreme"}, "difficulty='extreme'"),
        ({"image_size": 8}, "at least 16"),
        ({"train_per_class": 0}, "train_per_class=0"),
        ({"translate": -0.1}, "translate=-0.1"),
    ],
)
def test_bad_settings_are_explained(kwargs, message):
    with pytest.raises(DataConfigError, match=message):
        ShapesDataModule(**kwargs)
