"""Image files on disk: listing the chosen class folders, the flat ImageNet val layout, decoding and checking.

Only the folders of the chosen classes are listed (never all 1000), and a flat val folder is matched through
LOC_val_solution.csv. Every problem is raised as a DataConfigError that names the folder or file.
"""
from __future__ import annotations

import csv
import os
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from patchorder.errors import CorruptImageError, DataConfigError
from patchorder.data.sampling import mix_seed

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
Sample = tuple[str, int]  # (path, class index)


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def check_class_folders(split_dir: Path, wnids: Sequence[str]) -> None:
    """Every wnid must have a folder in ``split_dir``; list all that do not."""
    missing = [w for w in wnids if not (split_dir / w).is_dir()]
    if missing:
        raise DataConfigError(
            f"{len(missing)} of the {len(wnids)} chosen classes have no folder in {split_dir}: {', '.join(missing)}. "
            "Check data.root (it must hold train/<wnid>/ and val/) or choose another data.subset."
        )


def scan_class_folders(split_dir: Path, wnids: Sequence[str]) -> list[Sample]:
    """(path, index) for every image in split_dir/<wnid>/, classes in ``wnids`` order, files sorted by name."""
    check_class_folders(split_dir, wnids)
    samples: list[Sample] = []
    for index, wnid in enumerate(wnids):
        folder = split_dir / wnid
        with os.scandir(folder) as entries:
            files = sorted(e.name for e in entries if e.is_file() and is_image_file(e.name))
        if not files:
            raise DataConfigError(
                f"class folder {folder} has no images (looked for {', '.join(IMAGE_EXTENSIONS)}): "
                "add its images or leave the class out of data.subset"
            )
        samples.extend((str(folder / name), index) for name in files)
    return samples


def has_class_folders(split_dir: Path) -> bool:
    with os.scandir(split_dir) as entries:
        return any(e.is_dir() and not e.name.startswith(".") for e in entries)


def read_val_solution(csv_path: Path) -> dict[str, str]:
    """ImageId -> wnid from LOC_val_solution.csv (the first token of PredictionString is the wnid)."""
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "ImageId" not in columns or "PredictionString" not in columns:
            raise DataConfigError(
                f"{csv_path} must have the columns ImageId and PredictionString (found {columns}); "
                "pass the ImageNet LOC_val_solution.csv as data.val_labels"
            )
        labels = {}
        for row in reader:
            tokens = (row["PredictionString"] or "").split()
            if not row["ImageId"] or not tokens:
                raise DataConfigError(
                    f"{csv_path}, line {reader.line_num}: needs an ImageId and a PredictionString starting "
                    f"with a wnid, got {row}"
                )
            labels[row["ImageId"]] = tokens[0]
    return labels


def scan_flat_val(val_dir: Path, csv_path: Path, wnids: Sequence[str]) -> list[Sample]:
    """(path, index) for the val images of the chosen classes in a flat folder labelled by ``csv_path``."""
    index_of = {w: i for i, w in enumerate(wnids)}
    labels = read_val_solution(csv_path)
    with os.scandir(val_dir) as entries:
        files = {os.path.splitext(e.name)[0]: e.name for e in entries if e.is_file() and is_image_file(e.name)}
    chosen = sorted((image_id, wnid) for image_id, wnid in labels.items() if wnid in index_of)
    missing_files = [image_id for image_id, _ in chosen if image_id not in files]
    if missing_files:
        raise DataConfigError(
            f"{len(missing_files)} images listed in {csv_path} for the chosen classes are not in {val_dir} "
            f"(first: {', '.join(missing_files[:5])}): is data.val_labels the file for this val folder?"
        )
    without_images = sorted(set(wnids) - {wnid for _, wnid in chosen})
    if without_images:
        raise DataConfigError(
            f"{csv_path} lists no validation images for {len(without_images)} chosen classes: "
            f"{', '.join(without_images)}. Check data.val_labels or leave these classes out of data.subset."
        )
    return [(str(val_dir / files[image_id]), index_of[wnid]) for image_id, wnid in chosen]


def cap_per_class(samples: list[Sample], cap: int | None, seed: int, class_names: Sequence[str]) -> list[Sample]:
    """Keep at most ``cap`` samples of each class, chosen with a seed that depends on (seed, class name).

    Mixing in the class name keeps a class's choice the same whatever other classes are in the subset.
    """
    if cap is None:
        return samples
    by_class: dict[int, list[Sample]] = {}
    for sample in samples:
        by_class.setdefault(sample[1], []).append(sample)
    kept: list[Sample] = []
    for label, members in sorted(by_class.items()):
        if len(members) > cap:
            name_seed = zlib.crc32(class_names[label].encode())
            choice = np.random.default_rng(mix_seed(seed, name_seed)).choice(len(members), size=cap, replace=False)
            members = [members[i] for i in sorted(choice)]
        kept.extend(members)
    return kept


# What PIL raises for a file it cannot decode (truncated, not an image, bad header, decompression bomb). Anything
# else (MemoryError, KeyboardInterrupt, a bug) is not a corrupt image and propagates as itself.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)
# Modes converted here; the rest PIL converts to RGB correctly itself (L, P, RGB, CMYK, YCbCr, ...).
_WITH_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(image: Image.Image, path: str) -> Image.Image:
    """RGB whatever the file's mode: alpha is composited over white (transparent pixels' colours are arbitrary),
    16-bit grayscale is scaled to 8 bits (PIL's convert would clip it to white), CMYK and palettes by PIL."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _WITH_ALPHA:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in _SIXTEEN_BIT:
        values = np.asarray(image, dtype=np.int64)
        if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
            raise CorruptImageError(f"image {path} has mode {image.mode} with values outside 0..65535: only 8- and "
                                    f"16-bit images are supported; convert it to an 8-bit RGB file")
        return Image.fromarray((values * 255 // 65535).astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("F", "I;32"):
        raise CorruptImageError(f"image {path} has mode {image.mode} (floating point or 32-bit): convert it to an "
                                f"8-bit RGB file")
    return image.convert("RGB")


def open_rgb(path: str, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image fully as RGB (see :func:`to_rgb`); a decode failure names the file."""
    try:
        with Image.open(path) as image:
            if draft_size is not None:
                image.draft("RGB", draft_size)  # JPEG: decode at reduced scale, still reads the whole file
            image.load()
            return to_rgb(image, path)
    except CorruptImageError:
        raise
    except DECODE_ERRORS as error:
        raise CorruptImageError(
            f"cannot decode image {path} ({type(error).__name__}: {error}): delete or replace the file"
        ) from error


_CORRUPT_PATH = re.compile(r"cannot decode image (.+?) \(")


def still_corrupt(error_message: str) -> list[str]:
    """The images an earlier run's error named as undecodable that still exist and still cannot be decoded
    (a resume checks these first instead of training until it meets them again)."""
    bad = []
    for path in dict.fromkeys(_CORRUPT_PATH.findall(error_message or "")):
        if Path(path).is_file():
            try:
                open_rgb(path, draft_size=(64, 64))
            except CorruptImageError:
                bad.append(path)
    return bad


def check_decodable(paths: Sequence[str], workers: int) -> None:
    """Decode every image (at reduced JPEG scale); raise one error that lists every file that fails."""

    def failure(path: str) -> str | None:
        try:
            open_rgb(path, draft_size=(64, 64))
        except CorruptImageError as error:
            cause = error.__cause__
            return f"{path} ({type(cause).__name__}: {cause})" if cause is not None else str(error)
        return None

    # PIL releases the GIL while decoding, so threads help.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        bad = [message for message in pool.map(failure, paths) if message]
    if bad:
        shown = "\n  ".join(bad[:20]) + (f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise CorruptImageError(
            f"{len(bad)} of {len(paths)} images cannot be decoded:\n  {shown}\nDelete or replace these files."
        )


class ImageFileDataset(Dataset):
    """(transform(image), label) from (path, label) samples; a corrupt file raises an error naming it."""

    def __init__(self, samples: list[Sample], transform: Callable) -> None:
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.transform(open_rgb(path)), label
