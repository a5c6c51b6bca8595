"""``digits``: scikit-learn's bundled handwritten digits, the default data (works offline on a fresh machine).

1,797 real 8x8 grayscale digits (UCI optdigits test set, shipped inside scikit-learn), 10 classes of ~180.
They are upscaled once to ``image_size`` with bilinear interpolation (smooth strokes rather than 4x4 blocks),
replicated to 3 channels, and kept as one tensor in memory. The split is stratified and seeded by ``data_seed``:
by default 70/15/15 = 1,257 train / 270 val / 270 test images, test drawn first.
Augmentation is a random shift of up to ``translate`` x side pixels (0 turns it off); flips and RandAugment
would turn digits into other digits or noise at this size.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from patchorder.errors import DataConfigError
from patchorder.data.in_memory import InMemoryDataModule
from patchorder.data.sampling import stratified_split

DIGIT_LEVELS = 16.0  # sklearn digits store ink as integers 0..16


def load_digit_images(image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as float (N, 1, H, W) in [0, 1] upscaled to ``image_size``, and their labels (N,)."""
    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div(DIGIT_LEVELS).unsqueeze(1)
    if tuple(images.shape[-2:]) != image_size:
        images = F.interpolate(images, size=image_size, mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    return images, torch.from_numpy(bunch.target).long()


class DigitsDataModule(InMemoryDataModule):
    name = "digits"

    def __init__(
        self,
        image_size: int | list[int] = 32,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        data_seed: int = 0,
        translate: float = 0.1,
        **loader_args: Any,
    ) -> None:
        super().__init__(image_size, translate, data_seed, **loader_args)
        if min(self._image_size) < 8:
            raise DataConfigError(f"image_size={image_size!r}: digits are 8x8, so use at least 8 (32 is the default)")
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction

    @property
    def num_classes(self) -> int:
        return 10

    @property
    def class_names(self) -> list[str]:
        return [str(d) for d in range(10)]

    def _make_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        images, labels = load_digit_images(self._image_size)
        try:
            splits = stratified_split(labels.numpy(), self.val_fraction, self.test_fraction, self.data_seed)
        except ValueError as error:
            raise DataConfigError(f"digits split: {error}") from error
        return {
            split: (images[torch.from_numpy(index)], labels[torch.from_numpy(index)])
            for split, index in zip(("train", "val", "test"), splits)
        }

    def _extra_description(self) -> dict[str, Any]:
        return {
            "source": "sklearn.datasets.load_digits (8x8, upscaled bilinear)",
            "data_seed": self.data_seed,
            "split_fractions": {"val": self.val_fraction, "test": self.test_fraction},
            "augmentation": {"max_shift_px": self.max_shift},
        }
