"""What an attention export contains and how it is drawn: :class:`AttentionOptions`, the same keys in the
callback config (conf/callbacks/attention.yaml) and eval.py's ``attention`` section, checked before any work."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from patchorder.artifacts import pictures
from patchorder.attention.embedding import METHODS
from patchorder.attention.extract import EXPORT_REDUCES
from patchorder.attention.kernel import MERGES
from patchorder.errors import ConfigError

NPZ_DTYPES = {"float32": np.float32, "float16": np.float16, "log8": "log8"}  # see patchorder.attention.export.save


@dataclass
class AttentionOptions:
    """What an attention export contains and how it is drawn (the same keys in the callback and eval configs)."""

    stages: list[int] | None = None  # None: every stage
    blocks: list[int] | None = None  # None: every block (indices within each stage)
    num_images: int = 8  # probe images (validation split, spread over classes, the same every time)
    merge: str = "sum"  # "sum": the cross-merged operator; "none": each route kept (pictures sum them)
    reduce: str = "mean_abs"  # channel reduction: "mean_abs" or "mean"
    query_patches: list = field(default_factory=lambda: ["centre", "corner"])
    per_image_matrices: bool = False  # also draw each image's matrix, not only the image mean
    embeddings: bool = True
    methods: list[str] = field(default_factory=lambda: ["pca"])  # of attention.embedding.METHODS (umap compiles once per process)
    cmap: str = "inferno"
    scale: str = "log"  # colour scale of pictures: "log" (floor log_floor of the maximum) or "linear"
    log_floor: float = 1e-3
    min_px: int = 256  # small pictures are enlarged (nearest) to at least this side
    max_px: int = 1024  # matrices larger than this are averaged over tiles
    npz_dtype: str = "float32"  # float16 halves the .npz; log8 (the configs' default) stores uint8 log codes
    report_methods: list[str] = field(default_factory=lambda: ["pca", "tsne"])  # the HTML explorer's layouts
    seed: int = 0  # t-SNE / UMAP
    # Scan usage (patchorder.attention.scan_usage): each block's output is also computed with this ordering;
    # None: not measured.
    swap_ordering: str | None = "random"

    def __post_init__(self) -> None:
        self.stages = _int_list("stages", self.stages)
        self.blocks = _int_list("blocks", self.blocks)
        self.query_patches = [list(q) if isinstance(q, Sequence) and not isinstance(q, str) else q
                              for q in (self.query_patches or [])]
        self.methods, self.report_methods = list(self.methods or []), list(self.report_methods or [])
        if not isinstance(self.num_images, int) or self.num_images < 1:
            raise ConfigError(f"num_images={self.num_images!r} must be a positive integer (probe images)")
        if self.merge not in MERGES:
            raise ConfigError(f"merge={self.merge!r}: choose one of {', '.join(MERGES)}")
        if self.reduce not in EXPORT_REDUCES:
            raise ConfigError(f"reduce={self.reduce!r}: choose one of {', '.join(EXPORT_REDUCES)}")
        for name, methods in (("methods", self.methods), ("report_methods", self.report_methods)):
            unknown = [m for m in methods if m not in METHODS]
            if unknown:
                raise ConfigError(f"{name}={methods}: unknown {unknown}; choose from {', '.join(METHODS)}")
        if self.embeddings and not self.methods:
            raise ConfigError(f"embeddings=true needs at least one of methods=[{', '.join(METHODS)}]")
        if self.npz_dtype not in NPZ_DTYPES:
            raise ConfigError(f"npz_dtype={self.npz_dtype!r}: choose one of {', '.join(NPZ_DTYPES)}")
        if not (isinstance(self.min_px, int) and isinstance(self.max_px, int) and 1 <= self.min_px <= self.max_px):
            raise ConfigError(f"min_px={self.min_px!r}, max_px={self.max_px!r}: need integers 1 <= min_px <= max_px")
        try:
            pictures.check_scale(self.scale, self.log_floor)
            pictures.check_colormap(self.cmap)
            for spec in self.query_patches:  # their form; ranges are checked once the grid is known
                pictures.parse_query(spec)
        except ValueError as error:
            raise ConfigError(str(error)) from None


def make_options(settings: dict[str, Any], where: str) -> AttentionOptions:
    """AttentionOptions from config keys, with an error naming the keys that exist when one is unknown."""
    from dataclasses import fields

    known = [f.name for f in fields(AttentionOptions)]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}; the attention options are {', '.join(known)}")
    return AttentionOptions(**settings)


def _int_list(name: str, values: Any) -> list[int] | None:
    if values is None:
        return None
    if isinstance(values, int) and not isinstance(values, bool):
        return [values]
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={values!r} must be null (all) or a list of indices, e.g. [0, 1]") from None
    if not out or min(out) < 0:
        raise ConfigError(f"{name}={values!r} must be null (all) or a non-empty list of indices >= 0")
    return out
