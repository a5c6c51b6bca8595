"""Data modules: bundled digits (default), generated spatial-relation shapes, ImageNet subsets.

See :mod:`patchorder.data.base` for the contract every module keeps.
"""
from patchorder.data.base import DataConfigError, ImageDataModule
from patchorder.data.digits import DigitsDataModule
from patchorder.data.image_files import CorruptImageError
from patchorder.data.imagenet_subset import ImageNetSubsetDataModule
from patchorder.data.shapes import ShapesDataModule

__all__ = [
    "CorruptImageError",
    "DataConfigError",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageNetSubsetDataModule",
    "ShapesDataModule",
]
