"""``shapes``: generated spatial-relation images (see :mod:`patchorder.data.shapes_generator` for the classes).

Made in memory at set-up, no files. The three splits are generated from independent seed streams of
``data_seed``, so growing the training set never changes the validation or test images. Augmentation is off by
default: every image is already a fresh random layout, flips would change the class, and a shift can push a
mark out of the frame. ``translate`` > 0 turns on the same shift augmentation as digits if wanted.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from patchorder.data import shapes_generator as gen
from patchorder.errors import DataConfigError
from patchorder.data.in_memory import InMemoryDataModule


class ShapesDataModule(InMemoryDataModule):
    name = "shapes"

    def __init__(
        self,
        task: str = "direction",
        difficulty: str = "medium",
        image_size: int | list[int] = 32,
        train_per_class: int = 1000,
        val_per_class: int = 200,
        test_per_class: int = 200,
        data_seed: int = 0,
        translate: float = 0.0,
        **loader_args: Any,
    ) -> None:
        super().__init__(image_size, translate, data_seed, **loader_args)
        if task not in gen.TASKS:
            raise DataConfigError(f"data.task={task!r} is not a shapes task: choose one of {sorted(gen.TASKS)}")
        if difficulty not in gen.DIFFICULTIES:
            raise DataConfigError(f"data.difficulty={difficulty!r}: choose one of {sorted(gen.DIFFICULTIES)}")
        if min(self._image_size) < 16:
            raise DataConfigError(f"image_size={image_size!r} is too small for two separated marks: use at least 16")
        self.per_class = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
        for split, count in self.per_class.items():
            if not isinstance(count, int) or count < 1:
                raise DataConfigError(f"data.{split}_per_class={count!r} must be a positive integer")
        self.task = task
        self.difficulty = difficulty
        self.layouts: dict[str, list[gen.Layout]] = {}

    @property
    def num_classes(self) -> int:
        return len(gen.class_names(self.task))

    @property
    def class_names(self) -> list[str]:
        return gen.class_names(self.task)

    def _make_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        seeds = np.random.SeedSequence(self.data_seed).spawn(3)
        splits = {}
        for split, seed in zip(("train", "val", "test"), seeds):
            images, labels, layouts = gen.generate(
                self.per_class[split], self._image_size, self.task, self.difficulty, seed=int(seed.generate_state(1)[0])
            )
            splits[split] = (torch.from_numpy(images), torch.from_numpy(labels))
            self.layouts[split] = layouts
        return splits

    def _extra_description(self) -> dict[str, Any]:
        return {
            "source": "generated (patchorder.data.shapes_generator)",
            "task": self.task,
            "difficulty": self.difficulty,
            "per_class": dict(self.per_class),
            "data_seed": self.data_seed,
            "augmentation": {"max_shift_px": self.max_shift},
        }
