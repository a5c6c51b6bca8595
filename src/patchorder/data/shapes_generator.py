"""Generated images whose class is a SPATIAL RELATION between two marks, so patch orderings can matter.

Each image has a dark, noisy canvas, two marks whose centres lie exactly on a common row, column, diagonal or
anti-diagonal, and optional distractor marks. Positions, gaps, sizes and colours are random, and each mark on
its own looks the same in every class, so no single local feature gives the class away: the model has to
relate two distant patches.

Tasks (class index = position in the sorted class list):
- ``direction`` (8 classes): where the *target* (filled square) lies relative to the *anchor* (plus sign):
  above, above_left, above_right, below, below_left, below_right, left, right.
- ``alignment`` (4 classes): two identical filled squares on a common anti_diagonal (top-right to bottom-left),
  diagonal (top-left to bottom-right), horizontal line or vertical line.
Distractors are X-shaped crosses, never part of the relation.

Difficulty (sizes are for 32 px and scale with the image side; always odd so centres are pixels):
- ``easy``: marks of 5 or 7 px, no distractors, canvas noise std 0.02.
- ``medium``: marks of 3, 5 or 7 px, 1 distractor, noise std 0.08.
- ``hard``: marks of 3 or 5 px, 3 distractors, noise std 0.15 plus 2% bright speckles.
Known shortcuts, measured by experiments/shapes_baselines.py (32 px, 600 train / 150 test images per class):
one mark's position alone rules classes out near the borders (nothing lies right of a mark at the right edge),
so a random forest given one mark's true centre reaches 0.43-0.48 (chance 0.125 for direction, 0.25 for
alignment), and logistic regression on raw pixels 0.23-0.31 (direction) and 0.46-0.49 (alignment). Relating
the two marks gives 1.0; the gap is what the task measures.

Everything is drawn from ``numpy.random.Generator(PCG64(seed))``: the same seed gives identical images.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Row/column step from the anchor's centre to the target's centre, per class.
DIRECTIONS: dict[str, tuple[int, int]] = {
    "above": (-1, 0),
    "above_left": (-1, -1),
    "above_right": (-1, 1),
    "below": (1, 0),
    "below_left": (1, -1),
    "below_right": (1, 1),
    "left": (0, -1),
    "right": (0, 1),
}
# One representative step per line; the pair is drawn in either order, so the class is the line only.
ALIGNMENTS: dict[str, tuple[int, int]] = {
    "anti_diagonal": (1, -1),
    "diagonal": (1, 1),
    "horizontal": (0, 1),
    "vertical": (1, 0),
}
TASKS = {"direction": DIRECTIONS, "alignment": ALIGNMENTS}
RENDER_CHUNK = 512  # images whose canvases are drawn at once (bounds memory at large image sizes)


@dataclass(frozen=True)
class Difficulty:
    sizes_at_32: tuple[int, ...]
    distractors: int
    noise_std: float
    speckle_fraction: float


DIFFICULTIES = {
    "easy": Difficulty(sizes_at_32=(5, 7), distractors=0, noise_std=0.02, speckle_fraction=0.0),
    "medium": Difficulty(sizes_at_32=(3, 5, 7), distractors=1, noise_std=0.08, speckle_fraction=0.0),
    "hard": Difficulty(sizes_at_32=(3, 5), distractors=3, noise_std=0.15, speckle_fraction=0.02),
}


@dataclass(frozen=True)
class Mark:
    shape: str  # "plus", "square" or "cross"
    row: int  # centre pixel
    col: int
    size: int  # odd side length in pixels
    colour: tuple[float, float, float]

    @property
    def half(self) -> int:
        return self.size // 2


@dataclass(frozen=True)
class Layout:
    """What was drawn in one image: enough to recompute its label."""

    label: int
    first: Mark  # the anchor in the direction task
    second: Mark  # the target in the direction task
    distractors: tuple[Mark, ...]


def class_names(task: str) -> list[str]:
    return sorted(_task_steps(task))


@lru_cache(maxsize=None)
def mark_mask(shape: str, size: int) -> np.ndarray:
    """Boolean (size, size) stencil of a mark (cached, read-only)."""
    centre = size // 2
    rows, cols = np.indices((size, size))
    if shape == "square":
        mask = np.ones((size, size), dtype=bool)
    elif shape == "plus":
        mask = (rows == centre) | (cols == centre)
    elif shape == "cross":
        mask = (rows == cols) | (rows + cols == size - 1)
    else:
        raise ValueError(f"unknown mark shape {shape!r}")
    mask.flags.writeable = False
    return mask


def generate(
    per_class: int, image_size: tuple[int, int], task: str = "direction", difficulty: str = "medium", seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[Layout]]:
    """``per_class`` images of every class in a seeded shuffled order.

    Returns uint8 images (N, 3, H, W), int64 labels (N,) and the layouts that were drawn.
    """
    steps = _task_steps(task)
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {difficulty!r}: choose one of {sorted(DIFFICULTIES)}")
    level = DIFFICULTIES[difficulty]
    height, width = image_size
    sizes = _scaled_sizes(level.sizes_at_32, min(height, width))
    if 2 * max(sizes) + 2 > min(height, width) - 1:
        raise ValueError(f"image_size {image_size} is too small for two marks of {max(sizes)} px; use at least 16")
    names = class_names(task)
    rng = np.random.Generator(np.random.PCG64(seed))
    labels = rng.permutation(np.repeat(np.arange(len(names)), per_class))
    layouts = [_draw_layout(rng, int(label), steps[names[label]], task, level, sizes, image_size) for label in labels]
    images = np.empty((len(labels), 3, height, width), dtype=np.uint8)
    for start in range(0, len(layouts), RENDER_CHUNK):
        chunk = layouts[start : start + RENDER_CHUNK]
        images[start : start + len(chunk)] = _render(rng, chunk, level, image_size)
    return images, labels.astype(np.int64), layouts


def _task_steps(task: str) -> dict[str, tuple[int, int]]:
    if task not in TASKS:
        raise ValueError(f"unknown shapes task {task!r}: choose one of {sorted(TASKS)}")
    return TASKS[task]


def _scaled_sizes(sizes_at_32: tuple[int, ...], side: int) -> tuple[int, ...]:
    scaled = (max(3, round(s * side / 32)) for s in sizes_at_32)
    return tuple(sorted({s if s % 2 else s + 1 for s in scaled}))


def _draw_layout(rng, label, step, task, level, sizes, image_size) -> Layout:
    height, width = image_size
    if task == "alignment" and rng.random() < 0.5:
        step = (-step[0], -step[1])  # either end of the line can come first
    first_shape, second_shape = ("plus", "square") if task == "direction" else ("square", "square")
    size_a, size_b = (sizes[i] for i in rng.integers(len(sizes), size=2))
    half_a, half_b = size_a // 2, size_b // 2
    # Centre distance along the step: at least one blank pixel between the marks, at most what fits.
    gap_min = half_a + half_b + 2
    gap_max = min(side - 1 - half_a - half_b for side, d in zip((height, width), step) if d != 0)
    gap = int(rng.integers(gap_min, gap_max + 1))
    centre = []
    for side, d in zip((height, width), step):
        # Both centres must keep their whole mark inside the image.
        low = max(half_a, half_b - d * gap)
        high = min(side - 1 - half_a, side - 1 - half_b - d * gap)
        centre.append(int(rng.integers(low, high + 1)))
    first = Mark(first_shape, centre[0], centre[1], size_a, _bright_colour(rng))
    second = Mark(second_shape, centre[0] + step[0] * gap, centre[1] + step[1] * gap, size_b, _bright_colour(rng))
    distractors = _place_distractors(rng, [first, second], level.distractors, sizes, image_size)
    return Layout(label, first, second, distractors)


def _place_distractors(rng, placed, count, sizes, image_size, max_tries=200) -> tuple[Mark, ...]:
    height, width = image_size
    marks = list(placed)
    for _ in range(count):
        for _ in range(max_tries):
            size = sizes[rng.integers(len(sizes))]
            half = size // 2
            candidate = Mark(
                "cross",
                int(rng.integers(half, height - half)),
                int(rng.integers(half, width - half)),
                size,
                _bright_colour(rng),
            )
            # Keep a blank pixel between marks so none is damaged by another.
            if all(max(abs(candidate.row - m.row), abs(candidate.col - m.col)) > candidate.half + m.half + 1 for m in marks):
                marks.append(candidate)
                break
        else:
            raise ValueError(f"no room for {count} distractors in a {height}x{width} image; use a larger image_size")
    return tuple(marks[len(placed):])


def _bright_colour(rng) -> tuple[float, float, float]:
    red, green, blue = rng.uniform(0.0, 1.0, size=3).tolist()
    scale = rng.uniform(0.7, 1.0) / max(red, green, blue)  # brightest channel in [0.7, 1]: stands out of the canvas
    return (red * scale, green * scale, blue * scale)


def _render(rng, layouts: list[Layout], level: Difficulty, image_size) -> np.ndarray:
    """uint8 (n, 3, H, W) images of ``layouts``; canvases are drawn for the whole chunk at once."""
    height, width = image_size
    count = len(layouts)
    canvas = rng.uniform(0.0, 0.25, size=(count, 3, 1, 1)).astype(np.float32)  # a dark colour per image
    canvas = canvas + level.noise_std * rng.standard_normal((count, 3, height, width), dtype=np.float32)
    if level.speckle_fraction > 0:
        speckles = rng.random((count, 1, height, width)) < level.speckle_fraction
        canvas = np.where(speckles, rng.uniform(0.5, 1.0, size=canvas.shape).astype(np.float32), canvas)
    for image, layout in zip(canvas, layouts):
        for mark in (layout.first, layout.second, *layout.distractors):
            rows = slice(mark.row - mark.half, mark.row + mark.half + 1)
            cols = slice(mark.col - mark.half, mark.col + mark.half + 1)
            image[:, rows, cols][:, mark_mask(mark.shape, mark.size)] = np.asarray(mark.colour)[:, None]
    return np.clip(np.rint(canvas * 255.0), 0, 255).astype(np.uint8)
