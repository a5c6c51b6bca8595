"""The contract every patchorder data module keeps, and the base class that implements the shared part.

Contract (relied on by the training pipeline, the attention callbacks and eval.py):

- Every data module is a ``lightning.LightningDataModule`` subclass of :class:`ImageDataModule`, selected with
  ``data=<name>`` (conf/data/<name>.yaml, ``_target_`` = the class) and built by ``hydra.utils.instantiate``.
- Attributes, usable right after construction (before ``setup``):
  ``name: str``; ``num_classes: int``; ``class_names: list[str]`` (class index i is ``class_names[i]``; for
  ImageNet the sorted wnids; save them with a checkpoint and pass them back through
  :meth:`ImageDataModule.check_class_names` when evaluating it later); ``image_size: tuple[int, int]`` (H, W fed
  to the model); ``in_chans`` = 3 always (grayscale data is replicated to 3 channels so every model is the same);
  ``mean``, ``std``: the per-channel normalisation applied to every image (3-tuples).
- Constructor arguments shared by all modules: ``batch_size``, ``num_workers`` (0 works everywhere),
  ``pin_memory`` (only honoured when CUDA is available), ``seed`` (shuffling and augmentation draws; ``None``
  means 0), ``drop_last_train`` (set it when Mixup/CutMix is on so every training batch is full and even).
- ``setup(stage)`` builds the splits (idempotent, cheap to call again); every user error (missing folders,
  unknown classes, corrupt images, bad specs) is raised here or in the constructor as :class:`DataConfigError`,
  naming what is wrong and how to fix it, so a run fails before training starts.
- ``train_dataloader()`` shuffles with a permutation that depends only on (seed, epoch) (see
  :class:`~patchorder.data.sampling.EpochShuffleSampler`): a run resumed at an epoch boundary sees the same data
  order as an uninterrupted one. ``val_dataloader()`` / ``test_dataloader()`` are unshuffled; test is the
  held-out split (ImageNet val for imagenet_subset, a seeded test split for bundled/generated data).
- Batches are ``(images, labels)``: float32 (B, 3, H, W) normalised with mean/std, int64 (B,).
- ``probe_batch(n) -> (images, labels)``: a fixed set of n validation images spread over the classes (same
  images every call), preprocessed like validation data, for the attention callbacks.
- ``to_display(images)`` undoes the normalisation: uint8 (N, H, W, 3), ready for W&B or the attention export.
- ``describe() -> dict``: JSON-friendly summary saved in results.json (name, root, num_classes, class_names,
  counts per split, image_size, mean/std, seeds, subset spec when there is one).
- Mixup/CutMix is applied by the LightningModule (timm Mixup); data modules only provide ``drop_last_train``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from patchorder.errors import DataConfigError  # noqa: F401  (re-exported: data modules raise it)

from patchorder.data.sampling import EpochShuffleSampler, probe_indices

SPLITS = ("train", "val", "test")


def as_image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """Accept 32 or [32, 48]; return (H, W)."""
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 1:
        raise DataConfigError(f"image_size={image_size!r} must be a positive int or [height, width]")
    return size


class ImageDataModule(L.LightningDataModule, ABC):
    """Shared loaders, probe batch and description; subclasses provide the three datasets and the metadata."""

    name: str = "image_data"
    in_chans: int = 3

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int | None = 0,
        drop_last_train: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise DataConfigError(f"batch_size={batch_size!r} must be a positive integer")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise DataConfigError(f"num_workers={num_workers!r} must be an integer >= 0 (0 loads in the main process)")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = bool(pin_memory)
        self.seed = 0 if seed is None else int(seed)
        self.drop_last_train = bool(drop_last_train)
        self._datasets: dict[str, Dataset] | None = None

    # --- what subclasses provide -------------------------------------------------------------------------
    @property
    @abstractmethod
    def num_classes(self) -> int: ...

    @property
    @abstractmethod
    def class_names(self) -> list[str]: ...

    @property
    @abstractmethod
    def image_size(self) -> tuple[int, int]: ...

    @property
    @abstractmethod
    def mean(self) -> tuple[float, float, float]: ...

    @property
    @abstractmethod
    def std(self) -> tuple[float, float, float]: ...

    @abstractmethod
    def _build_datasets(self) -> dict[str, Dataset]:
        """Return {"train", "val", "test"} datasets; each has ``targets`` (labels in index order)."""

    def _train_yields_sample_seeds(self) -> bool:
        """True when the train dataset draws its augmentation from per-sample seeds (see EpochShuffleSampler)."""
        return False

    def _extra_description(self) -> dict[str, Any]:
        return {}

    # --- shared implementation -------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.datasets  # builds once; later calls are free

    @property
    def datasets(self) -> dict[str, Dataset]:
        if self._datasets is None:
            self._datasets = self._build_datasets()
        return self._datasets

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        if self.drop_last_train and len(dataset) < self.batch_size:
            raise DataConfigError(
                f"drop_last_train is on but the training split has {len(dataset)} images, fewer than "
                f"batch_size={self.batch_size}: every batch would be dropped. Lower data.batch_size."
            )
        sampler = EpochShuffleSampler(len(dataset), self.seed, sample_seeds=self._train_yields_sample_seeds())
        return self._loader(dataset, sampler=sampler, drop_last=self.drop_last_train)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"])

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["test"])

    def _loader(self, dataset: Dataset, sampler: EpochShuffleSampler | None = None, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            # Seeds the workers' RNGs (used by timm's random transforms) from our seed, not the global RNG.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def probe_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = self.datasets["val"]
        picked = probe_indices(_targets(dataset), n)
        items = [dataset[i] for i in picked]
        images = torch.stack([image for image, _ in items])
        labels = torch.tensor([label for _, label in items], dtype=torch.long)
        return images, labels

    def to_display(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised (N, 3, H, W) images -> uint8 (N, H, W, 3)."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        pixels = (images * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
        return pixels.permute(0, 2, 3, 1).contiguous()

    def check_class_names(self, expected: Sequence[str]) -> None:
        """Raise unless this data has exactly ``expected`` classes in that order (e.g. a checkpoint's)."""
        expected = list(expected)
        if expected != self.class_names:
            missing = [c for c in expected if c not in self.class_names]
            extra = [c for c in self.class_names if c not in expected]
            raise DataConfigError(
                f"class list mismatch: the checkpoint has {len(expected)} classes, this data has "
                f"{self.num_classes}. In checkpoint only: {missing or 'none'}; in data only: {extra or 'none'}"
                + ("" if missing or extra else "; same classes but in another order")
                + ". Evaluate with the data config the checkpoint was trained on (for ImageNet pass its class "
                "list, e.g. data.subset=[wnid,...])."
            )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "root": None,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "counts": {split: len(self.datasets[split]) for split in SPLITS},
            "image_size": list(self.image_size),
            "in_chans": self.in_chans,
            "mean": list(self.mean),
            "std": list(self.std),
            "batch_size": self.batch_size,
            "seed": self.seed,
            "drop_last_train": self.drop_last_train,
            **self._extra_description(),
        }


def _targets(dataset: Dataset) -> list[int]:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise TypeError(f"{type(dataset).__name__} must expose `targets` (labels in index order)")
    return [int(t) for t in targets]
