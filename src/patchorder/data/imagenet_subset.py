"""``imagenet_subset``: a subset of ImageNet classes read from an ImageFolder-style tree.

Layout under ``root``: ``train/<wnid>/*.JPEG`` and either ``val/<wnid>/*.JPEG`` or a flat ``val/*.JPEG`` labelled
by ``LOC_val_solution.csv`` (at ``root`` or given as ``val_labels``). Which classes: see
:mod:`patchorder.data.subsets`. Only the chosen class folders are listed.

Splits: train = ``train/`` (optionally capped per class); test = ImageNet ``val/``; validation = ImageNet
``val/`` too (as VMamba and most papers report it) unless ``holdout_fraction`` > 0, which holds out a seeded,
stratified part of ``train/`` for model selection instead.

Transforms come from timm's ``create_transform``: the VMamba/Swin recipe for training (random resized crop,
RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25 in pixel mode, bicubic, horizontal flip; the recipe's
colour jitter 0.4 is passed too, but timm skips colour jitter while RandAugment is on, as in VMamba's own runs)
and resize + centre crop with crop_pct 0.875 (256 -> 224) for evaluation, scaled to ``image_size``.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from sklearn.model_selection import train_test_split
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ImageNetInfo, create_transform
from torch.utils.data import Dataset

from patchorder.data.base import DataConfigError, ImageDataModule, as_image_size
from patchorder.data.image_files import (
    ImageFileDataset,
    cap_per_class,
    check_class_folders,
    check_decodable,
    has_class_folders,
    scan_class_folders,
    scan_flat_val,
)
from patchorder.data.subsets import resolve_subset

log = logging.getLogger(__name__)

# VMamba's (Swin's) ImageNet training augmentation, as create_transform arguments.
VMAMBA_TRAIN_TRANSFORM = {
    "scale": (0.08, 1.0),
    "hflip": 0.5,
    "auto_augment": "rand-m9-mstd0.5-inc1",
    "color_jitter": 0.4,
    "re_prob": 0.25,
    "re_mode": "pixel",
    "re_count": 1,
    "interpolation": "bicubic",
}
VMAMBA_EVAL_TRANSFORM = {"crop_pct": 0.875, "interpolation": "bicubic"}
VAL_SOLUTION_CSV = "LOC_val_solution.csv"
VERIFY_MODES = ("auto", "all", "lazy")


class ImageNetSubsetDataModule(ImageDataModule):
    name = "imagenet_subset"

    def __init__(
        self,
        root: str | None,
        subset: str | Sequence[str] = "imagenette",
        image_size: int | Sequence[int] = 224,
        max_train_per_class: int | None = None,
        max_val_per_class: int | None = None,
        holdout_fraction: float = 0.0,
        val_labels: str | None = None,
        verify_images: str | bool = "auto",
        verify_limit: int = 20000,
        data_seed: int = 0,
        train_transform: Mapping[str, Any] | None = None,
        eval_transform: Mapping[str, Any] | None = None,
        **loader_args: Any,
    ) -> None:
        super().__init__(**loader_args)
        self.root = _check_root(root)
        self.train_dir = _check_split_dir(self.root, "train")
        self.val_dir = _check_split_dir(self.root, "val")
        self._image_size = as_image_size(image_size)
        self.subset = resolve_subset(_plain(subset), self.train_dir)
        check_class_folders(self.train_dir, self.subset.wnids)
        self.val_layout, self.val_labels = self._find_val_layout(val_labels)
        for name, cap in (("max_train_per_class", max_train_per_class), ("max_val_per_class", max_val_per_class)):
            if cap is not None and (not isinstance(cap, int) or cap < 1):
                raise DataConfigError(f"data.{name}={cap!r} must be a positive integer or null (no cap)")
        if not 0.0 <= holdout_fraction < 1.0:
            raise DataConfigError(f"data.holdout_fraction={holdout_fraction} must be in [0, 1) (0: validate on val/)")
        verify_mode = {True: "all", False: "lazy"}.get(verify_images, verify_images)
        if verify_mode not in VERIFY_MODES:
            raise DataConfigError(f"data.verify_images={verify_images!r}: choose one of {VERIFY_MODES} (or true/false)")
        self.max_train_per_class = max_train_per_class
        self.max_val_per_class = max_val_per_class
        self.holdout_fraction = holdout_fraction
        self.verify_mode = verify_mode
        self.verify_limit = verify_limit
        self.data_seed = int(data_seed)
        self.train_transform_args = {**VMAMBA_TRAIN_TRANSFORM, **_plain(train_transform or {})}
        self.eval_transform_args = {**VMAMBA_EVAL_TRANSFORM, **_plain(eval_transform or {})}
        # Build both transforms now so a bad transform setting fails before training.
        self._train_transform = self._make_transform(is_training=True)
        self._eval_transform = self._make_transform(is_training=False)
        self.images_verified = False

    @property
    def num_classes(self) -> int:
        return len(self.subset.wnids)

    @property
    def class_names(self) -> list[str]:
        return list(self.subset.wnids)

    @property
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(IMAGENET_DEFAULT_MEAN)

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(IMAGENET_DEFAULT_STD)

    def _find_val_layout(self, val_labels: str | None) -> tuple[str, Path | None]:
        if val_labels is None and has_class_folders(self.val_dir):
            check_class_folders(self.val_dir, self.subset.wnids)
            return "class_folders", None
        csv_path = Path(val_labels).expanduser() if val_labels else self.root / VAL_SOLUTION_CSV
        if not csv_path.is_file():
            raise DataConfigError(
                f"{self.val_dir} has no class folders, so its images need labels, but {csv_path} does not exist. "
                f"Put ImageNet's {VAL_SOLUTION_CSV} in {self.root}, pass data.val_labels=/path/to/{VAL_SOLUTION_CSV}, "
                "or sort val/ into val/<wnid>/ folders."
            )
        return "flat_with_csv", csv_path

    def _make_transform(self, is_training: bool):
        args = self.train_transform_args if is_training else self.eval_transform_args
        try:
            return create_transform(
                input_size=(3, *self._image_size), is_training=is_training, mean=self.mean, std=self.std, **args
            )
        except (TypeError, ValueError, AssertionError) as error:
            which = "train_transform" if is_training else "eval_transform"
            raise DataConfigError(
                f"data.{which}={args} is not accepted by timm.data.create_transform ({error}); "
                "use its argument names, e.g. auto_augment, re_prob, interpolation, crop_pct"
            ) from error

    def _build_datasets(self) -> dict[str, Dataset]:
        wnids = self.subset.wnids
        train = scan_class_folders(self.train_dir, wnids)
        if self.val_layout == "class_folders":
            imagenet_val = scan_class_folders(self.val_dir, wnids)
        else:
            imagenet_val = scan_flat_val(self.val_dir, self.val_labels, wnids)
        train = cap_per_class(train, self.max_train_per_class, self.data_seed, wnids)
        imagenet_val = cap_per_class(imagenet_val, self.max_val_per_class, self.data_seed, wnids)
        holdout = self._hold_out(train) if self.holdout_fraction > 0 else None
        if holdout is not None:
            train, held = holdout
        self._verify(train + imagenet_val)
        return {
            "train": ImageFileDataset(train, self._train_transform),
            "val": ImageFileDataset(held if holdout is not None else imagenet_val, self._eval_transform),
            "test": ImageFileDataset(imagenet_val, self._eval_transform),
        }

    def _hold_out(self, train: list) -> tuple[list, list]:
        labels = [label for _, label in train]
        try:
            kept, held = train_test_split(
                list(range(len(train))), test_size=self.holdout_fraction, stratify=labels, random_state=self.data_seed
            )
        except ValueError as error:
            raise DataConfigError(
                f"cannot hold out {self.holdout_fraction} of the training images per class ({error}); "
                "raise data.max_train_per_class or lower data.holdout_fraction"
            ) from error
        return [train[i] for i in sorted(kept)], [train[i] for i in sorted(held)]

    def _verify(self, samples: list) -> None:
        if self.verify_mode == "lazy" or (self.verify_mode == "auto" and len(samples) > self.verify_limit):
            log.info(
                "Not decoding %d images up front (verify_images=%s, verify_limit=%d); a corrupt file will stop the "
                "run when it is loaded, with its path in the error.", len(samples), self.verify_mode, self.verify_limit
            )
            return
        check_decodable([path for path, _ in samples], workers=min(8, os.cpu_count() or 1))
        self.images_verified = True

    def _extra_description(self) -> dict[str, Any]:
        info = ImageNetInfo()
        known = set(info.label_names())
        return {
            "root": str(self.root),
            "subset": {"spec": self.subset.spec, "kind": self.subset.kind, "num_classes": self.num_classes},
            "class_descriptions": [
                info.label_name_to_description(w) if w in known else w for w in self.subset.wnids
            ],
            "val_layout": self.val_layout,
            "val_labels": str(self.val_labels) if self.val_labels else None,
            "val_source": "holdout_of_train" if self.holdout_fraction > 0 else "imagenet_val",
            "holdout_fraction": self.holdout_fraction,
            "max_train_per_class": self.max_train_per_class,
            "max_val_per_class": self.max_val_per_class,
            "data_seed": self.data_seed,
            "images_verified": self.images_verified,
            "train_transform": {k: list(v) if isinstance(v, tuple) else v for k, v in self.train_transform_args.items()},
            "eval_transform": dict(self.eval_transform_args),
        }


def _plain(value: Any) -> Any:
    """Hydra hands over DictConfig/ListConfig; timm and our parsers want plain dicts, lists and tuples."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    return value


def _check_root(root: str | None) -> Path:
    if root is None or str(root).strip() in ("", "???"):
        raise DataConfigError(
            "data.root is not set: pass data.root=/path/to/imagenet (the folder holding train/ and val/) "
            "or export IMAGENET_ROOT=/path/to/imagenet"
        )
    path = Path(str(root)).expanduser()
    if not path.is_dir():
        raise DataConfigError(
            f"data.root={root} does not exist or is not a folder: point it (or IMAGENET_ROOT) at the ImageNet "
            "folder holding train/ and val/"
        )
    return path


def _check_split_dir(root: Path, split: str) -> Path:
    path = root / split
    if not path.is_dir():
        raise DataConfigError(
            f"missing {path}: data.root must hold train/<wnid>/*.JPEG and val/ (val/<wnid>/*.JPEG, or val/*.JPEG "
            f"with {VAL_SOLUTION_CSV})"
        )
    return path
