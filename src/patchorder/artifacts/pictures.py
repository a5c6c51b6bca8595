"""Attention as pictures: colour-mapped uint8 RGB arrays (never floats: wandb 0.31 renders float arrays black).

- :func:`colorize`: values -> uint8 (H, W, 3) through a matplotlib colour map, linear or log scale.
- :func:`matrix_picture`: an (L, L) attention matrix, pooled or enlarged to a viewable size.
- :func:`heatmap_picture`: one query patch's attention row over the grid, blended over the probe image.
- :func:`resolve_queries`: query patch specs (named, (row, col) on the stage-0 grid, or fractions) -> grid cells.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SCALES = ("log", "linear")
NAMED_QUERIES = {  # points (y, x) as fractions of the image; 1.0 falls in the last row / column
    "centre": (0.5, 0.5), "center": (0.5, 0.5), "corner": (0.0, 0.0),
    "top_left": (0.0, 0.0), "top_right": (0.0, 1.0), "bottom_left": (1.0, 0.0), "bottom_right": (1.0, 1.0),
}


def check_scale(scale: str, floor: float) -> None:
    if scale not in SCALES:
        raise ValueError(f"unknown colour scale {scale!r}; choose one of {', '.join(map(repr, SCALES))}")
    if not 0 < floor < 1:
        raise ValueError(f"log_floor must be in (0, 1) (the smallest value shown, relative to the maximum), "
                         f"got {floor}")


def check_colormap(name: str) -> None:
    from matplotlib import colormaps

    if name not in colormaps:
        raise ValueError(f"unknown matplotlib colour map {name!r}; e.g. 'viridis', 'inferno', 'magma', 'turbo'")


def normalise(values: np.ndarray, scale: str = "log", floor: float = 1e-3) -> np.ndarray:
    """|values| scaled to [0, 1] by their maximum; "log" maps [floor, 1] of the maximum onto [0, 1]."""
    check_scale(scale, floor)
    magnitude = np.abs(np.asarray(values, dtype=np.float64))
    top = magnitude.max() if magnitude.size else 0.0
    if not np.isfinite(top) or top <= 0:
        return np.zeros_like(magnitude)
    relative = magnitude / top
    if scale == "linear":
        return relative
    return np.clip(1.0 + np.log10(np.maximum(relative, floor)) / -math.log10(floor), 0.0, 1.0)


def colorize(unit_values: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """Values in [0, 1] (H, W) -> uint8 RGB (H, W, 3) through the colour map ``cmap``."""
    from matplotlib import colormaps

    check_colormap(cmap)
    rgba = colormaps[cmap](np.clip(np.asarray(unit_values, dtype=np.float64), 0.0, 1.0))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def pool_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """Average over factor x factor tiles (the last partial tiles average what they have)."""
    if factor <= 1:
        return values
    h, w = values.shape
    ph, pw = -h % factor, -w % factor
    padded = np.pad(values.astype(np.float64), ((0, ph), (0, pw)), constant_values=np.nan)
    tiles = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor)
    return np.nanmean(tiles, axis=(1, 3))


def enlarge(picture: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (patch boundaries stay sharp)."""
    if factor <= 1:
        return picture
    return np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)


def display_factors(side: int, min_px: int, max_px: int) -> tuple[int, int]:
    """(pool, enlarge) integer factors that bring ``side`` into [min_px, max_px] where integers allow."""
    if side > max_px:
        return math.ceil(side / max_px), 1
    return 1, max(1, min_px // max(side, 1))


def matrix_picture(matrix: np.ndarray, cmap: str = "inferno", scale: str = "log", floor: float = 1e-3,
                   min_px: int = 256, max_px: int = 1024) -> np.ndarray:
    """An (L, L) attention matrix (rows = query patch, columns = key patch) as uint8 RGB.

    Matrices larger than ``max_px`` are averaged over tiles first (a 3136 x 3136 stage-0 matrix of
    VMamba-T at 224 px becomes 784 x 784); small ones are enlarged to at least ``min_px``.
    """
    pool, grow = display_factors(max(matrix.shape), min_px, max_px)
    values = pool_mean(np.abs(np.asarray(matrix, dtype=np.float64)), pool)
    return enlarge(colorize(normalise(values, scale, floor), cmap), grow)


def parse_query(spec) -> tuple[str, tuple]:
    """One query patch spec -> ("point", (y, x)) with fractions of the image, or ("cell", (row, col)) on stage 0."""
    if isinstance(spec, str):
        if spec not in NAMED_QUERIES:
            raise ValueError(f"unknown query patch {spec!r}: use one of {', '.join(NAMED_QUERIES)}, "
                             f"[row, col] (ints, stage-0 grid) or [0.5, 0.25] (fractions of the image)")
        return "point", NAMED_QUERIES[spec]
    pair = list(spec) if isinstance(spec, Sequence) else None
    if pair is None or len(pair) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in pair):
        raise ValueError(f"query patch {spec!r} must be a name, [row, col] (ints) or [y, x] fractions in [0, 1]")
    if all(isinstance(v, int) for v in pair):
        if min(pair) < 0:
            raise ValueError(f"query patch {spec!r}: row and column must be >= 0")
        return "cell", tuple(pair)
    y, x = (float(v) for v in pair)
    if not (0.0 <= y <= 1.0 and 0.0 <= x <= 1.0):
        raise ValueError(f"query patch fractions {spec!r} must lie in [0, 1]")
    return "point", (y, x)


def resolve_queries(specs: Sequence, grid0: Sequence[int]) -> list[tuple[float, float]]:
    """Query patch specs -> points (y, x) in [0, 1] of the image, in the order given.

    A spec is a name ("centre", "corner", "top_right", ...), a pair of ints (row, col) in stage-0 grid
    coordinates (the point is that patch's centre), or a pair of floats in [0, 1] (fractions of the image).
    A point selects, in every stage, the patch that contains it, so one spec follows the same image region
    through the coarser grids.
    """
    height, width = grid0
    out = []
    for spec in specs:
        kind, value = parse_query(spec)
        if kind == "cell":
            row, col = value
            if not (row < height and col < width):
                raise ValueError(f"query patch [{row}, {col}] is outside the stage-0 grid of {height} x {width} "
                                 f"patches (rows 0..{height - 1}, columns 0..{width - 1}); or give fractions, e.g. "
                                 f"[0.5, 0.5]")
            value = ((row + 0.5) / height, (col + 0.5) / width)
        out.append(value)
    return out


def query_cell(point: tuple[float, float], grid: Sequence[int]) -> tuple[int, int]:
    """The grid cell (row, col) containing a point (y, x) in [0, 1] of the image (1.0 -> the last row / column)."""
    height, width = grid
    return min(int(point[0] * height), height - 1), min(int(point[1] * width), width - 1)


def heatmap_picture(image: np.ndarray, row_values: np.ndarray, grid: Sequence[int], query: tuple[int, int],
                    cmap: str = "inferno", scale: str = "log", floor: float = 1e-3, alpha: float = 0.6,
                    min_px: int = 256) -> np.ndarray:
    """A query patch's attention over the grid, blended over its probe image, query outlined in white; uint8 RGB.

    ``image``: uint8 (H, W, 3); ``row_values``: the query's attention row (L,) in raster order.
    """
    height, width = grid
    colours = colorize(normalise(np.asarray(row_values).reshape(height, width), scale, floor), cmap)
    img_h, img_w = image.shape[:2]
    cells_h, cells_w = _cell_edges(img_h, height), _cell_edges(img_w, width)
    # Each image pixel takes the colour of the patch it falls in (nearest, so patch edges stay visible).
    over = colours[np.searchsorted(cells_h, np.arange(img_h), side="right") - 1][
        :, np.searchsorted(cells_w, np.arange(img_w), side="right") - 1]
    blend = (1 - alpha) * image.astype(np.float64) + alpha * over.astype(np.float64)
    picture = enlarge(blend.round().astype(np.uint8), max(1, min_px // max(img_h, img_w, 1)))
    grow = picture.shape[0] // img_h
    r, c = query
    _outline(picture, cells_h[r] * grow, cells_h[r + 1] * grow, cells_w[c] * grow, cells_w[c + 1] * grow)
    return picture


def _cell_edges(pixels: int, cells: int) -> np.ndarray:
    """Pixel edges of ``cells`` equal patches over ``pixels`` (cells + 1 values, last = pixels)."""
    return np.floor(np.arange(cells + 1) * pixels / cells).astype(int)


def _outline(picture: np.ndarray, top: int, bottom: int, left: int, right: int) -> None:
    thickness = max(1, (bottom - top) // 8)
    white = np.array([255, 255, 255], dtype=np.uint8)
    picture[top:top + thickness, left:right] = white
    picture[bottom - thickness:bottom, left:right] = white
    picture[top:bottom, left:left + thickness] = white
    picture[top:bottom, right - thickness:right] = white


def strip(pictures: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Pictures of the same height side by side with ``gap`` white columns between them."""
    height = pictures[0].shape[0]
    if any(p.shape[0] != height for p in pictures):
        raise ValueError("pictures in a strip must share one height")
    spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
    parts = []
    for i, p in enumerate(pictures):
        if i:
            parts.append(spacer)
        parts.append(p)
    return np.concatenate(parts, axis=1)
