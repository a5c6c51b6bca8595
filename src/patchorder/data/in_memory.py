"""Images held as one tensor, with a cheap, reproducible shift augmentation (no PIL per item), and the data-module
base that the bundled and generated datasets share."""
from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch.utils.data import Dataset

from patchorder.data.base import DataConfigError, ImageDataModule, as_image_size


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (N, C, H, W) images in [0, 1] (uint8 images are scaled by 1/255)."""
    values = to_unit_float(images).transpose(0, 1).reshape(images.shape[1], -1).double()
    return tuple(values.mean(1).tolist()), tuple(values.std(1).tolist())


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(255.0) if images.dtype == torch.uint8 else images.float()


def random_shift(image: torch.Tensor, max_shift: int, seed: int, fill: torch.Tensor) -> torch.Tensor:
    """Move a (C, H, W) image by up to ``max_shift`` pixels in each axis; uncovered pixels get ``fill`` (C,)."""
    generator = torch.Generator().manual_seed(seed)
    dy, dx = (torch.randint(-max_shift, max_shift + 1, (2,), generator=generator)).tolist()
    if dy == 0 and dx == 0:
        return image
    _, height, width = image.shape
    shifted = fill.view(-1, 1, 1).expand_as(image).clone()
    # Destination and source windows of the part of the image that stays inside the frame.
    dst_y, src_y = slice(max(dy, 0), height + min(dy, 0)), slice(max(-dy, 0), height - max(dy, 0))
    dst_x, src_x = slice(max(dx, 0), width + min(dx, 0)), slice(max(-dx, 0), width - max(dx, 0))
    shifted[:, dst_y, dst_x] = image[:, src_y, src_x]
    return shifted


class InMemoryImageDataset(Dataset):
    """(image, label) pairs from an (N, C, H, W) tensor (C = 1 or 3; uint8 or float in [0, 1]).

    Items are normalised with ``mean``/``std`` and always have 3 channels (a single channel is replicated).
    ``max_shift`` > 0 turns on the shift augmentation; it is only applied when the index comes with a seed
    (``dataset[(index, seed)]``, as yielded by :class:`EpochShuffleSampler`), so evaluation never augments.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        max_shift: int = 0,
    ) -> None:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.targets = labels.long()
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.max_shift = max_shift
        # Background for pixels a shift uncovers: per-channel minimum (black digits paper, dark shapes canvas).
        self.fill = to_unit_float(images).amin(dim=(0, 2, 3)) if len(images) else torch.zeros(images.shape[1])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = to_unit_float(self.images[index])
        if seed is not None and self.max_shift > 0:
            image = random_shift(image, self.max_shift, seed, self.fill)
        image = image.expand(3, -1, -1)
        return (image - self.mean) / self.std, int(self.targets[index])


class InMemoryDataModule(ImageDataModule):
    """A data module whose three splits are tensors in memory, normalised with the training split's statistics.

    Subclasses implement :meth:`_make_splits`; the optional shift augmentation (``translate`` x side pixels) is
    applied to the training split only.
    """

    def __init__(self, image_size: int | list[int], translate: float, data_seed: int, **loader_args: Any) -> None:
        super().__init__(**loader_args)
        self._image_size = as_image_size(image_size)
        if not 0.0 <= translate < 0.5:
            raise DataConfigError(f"translate={translate} must be in [0, 0.5): the largest shift as a fraction of the side")
        self.translate = translate
        self.data_seed = int(data_seed)
        self._stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @abstractmethod
    def _make_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{"train", "val", "test"}: (images (N, C, H, W) in [0, 1] or uint8, labels (N,))."""

    @property
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    @property
    def mean(self) -> tuple[float, float, float]:
        return self._channel_stats()[0]

    @property
    def std(self) -> tuple[float, float, float]:
        return self._channel_stats()[1]

    def _channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self._stats is None:
            self.datasets  # the statistics come from the training split
        return self._stats

    @property
    def max_shift(self) -> int:
        return int(self.translate * min(self._image_size))

    def _build_datasets(self) -> dict[str, Dataset]:
        splits = self._make_splits()
        mean, std = channel_stats(splits["train"][0])
        if len(mean) == 1:  # one channel, replicated to three by the dataset
            mean, std = mean * 3, std * 3
        self._stats = (mean, std)
        return {
            split: InMemoryImageDataset(images, labels, mean, std, max_shift=self.max_shift if split == "train" else 0)
            for split, (images, labels) in splits.items()
        }

    def _train_yields_sample_seeds(self) -> bool:
        return self.max_shift > 0
