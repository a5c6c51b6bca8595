"""Assemble the explorer: template + inlined style and script + embedded data, written as one HTML file."""
from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchorder.attention.embedding import METHODS, EmbeddingCache
from patchorder.attention.export import AttentionExport
from patchorder.explore.packing import Packer
from patchorder.explore.payload import REDUCE_MEANINGS, Options, build_payload
from patchorder.explore.source import find_export, load_export, load_relevance

ASSETS = Path(__file__).parent
MARKER = re.compile(r"@@(TITLE|CSS|JS|DATA|BINARY)@@")
# Colour maps the page uses, sampled from matplotlib so they match the rest of the project's figures.
COLORMAPS = {"heat": "inferno", "column": "turbo", "position": "viridis"}

Source = AttentionExport | str | Path


def _colormaps() -> dict:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    tables = {key: (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(int).ravel().tolist()
              for key, name in COLORMAPS.items()}
    tables["blocks"] = [to_hex(c) for c in colormaps["tab10"].colors]
    return tables


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def render(payload: dict, packer: Packer, title: str) -> str:
    """The report's HTML text for a payload built by :func:`build_payload`."""
    data = dict(payload, arrays=packer.entries)
    # "<" escaped so no string in the data (a label, a class name) can close the <script> element.
    parts = {
        "TITLE": html.escape(title), "CSS": _asset("explorer.css"), "JS": _asset("explorer.js"),
        "DATA": json.dumps(data, separators=(",", ":")).replace("<", "\\u003c"), "BINARY": packer.encoded(),
    }
    return MARKER.sub(lambda m: parts[m.group(1)], _asset("template.html"))


def _shell_bytes() -> int:
    return sum(len(_asset(name).encode()) for name in ("template.html", "explorer.css", "explorer.js")) + 40_000


def _items(sources: Source | Sequence[Source]) -> list[Source]:
    return list(sources) if isinstance(sources, (list, tuple)) else [sources]


def _load_side(sources: Source | Sequence[Source]) -> tuple[list[AttentionExport], str]:
    loaded = [load_export(item) for item in _items(sources)]
    return [export for export, _ in loaded], _label(loaded)


def _side_relevance(sources: Source | Sequence[Source]) -> dict | None:
    """The whole-model views beside the side's first export file (<tag>_relevance.npz), when there are any; an
    export in memory names its file in extra["source"] (the callbacks set it)."""
    first = _items(sources)[0]
    if isinstance(first, AttentionExport):
        source = first.extra.get("source")
        return load_relevance(source) if source else None
    return load_relevance(find_export(first))


def _label(loaded: list) -> str:
    first, where = loaded[0]
    return " · ".join(x for x in (first.model, first.ordering or "unknown ordering", where) if x)


@dataclass
class Report:
    """What :func:`write_report` wrote: the file, its size, and the optional views the budget left out."""

    path: Path
    size_bytes: int
    omitted: list[str]
    omitted_bytes: int  # how much larger the file would be with them, at most

    def summary(self) -> str:
        text = f"wrote {self.path} ({self.size_bytes / 1e6:.2f} MB)"
        if self.omitted:
            needed = (self.size_bytes + self.omitted_bytes) / 1e6
            text += (f"; {len(self.omitted)} optional view(s) left out to fit the size budget "
                     f"(--max-mb {needed:.0f} keeps them all): " + "; ".join(self.omitted))
        return text


def build_report(export_or_path: Source | Sequence[Source], out_path: str | Path,
                 compare: Source | Sequence[Source] | None = None, **options) -> Path:
    """Write the explorer for an export (or run directory) to ``out_path`` and return the path.

    See :func:`write_report` for the arguments.
    """
    return write_report(export_or_path, out_path, compare, **options).path


def write_report(export_or_path: Source | Sequence[Source], out_path: str | Path,
                 compare: Source | Sequence[Source] | None = None, *, title: str | None = None,
                 methods: Sequence[str] = METHODS, seed: int = 0, max_mb: float = 15.0,
                 encoding: str = "auto", floor: float = 1e-4, colour_scale: str = "log",
                 log_floor: float = 1e-3, max_layout_points: int = 1024,
                 metrics: Sequence[dict] | None = None, codes: dict | None = None,
                 embedding_cache: EmbeddingCache | None = None) -> Report:
    """Write the interactive attention explorer for an export (or run directory) to ``out_path``.

    ``export_or_path``: an AttentionExport, an .npz written by ``export.save``, a run directory (its newest
    ``**/attention*.npz``), or a list of these that differ only in reduction (the page's reduction selector).
    ``compare``: the same for a second export shown side by side with linked selection (another ordering or
    checkpoint of the same architecture, same probe images). ``max_mb``: size budget in MB (10^6 bytes); the
    image-mean merged attention of every block is always stored, optional views only while they fit.
    ``encoding``: "auto" (uint8 log scale for non-negative attention, float16 for signed), or "f16".
    ``floor``: smallest value the log scale keeps, relative to its row's maximum.
    ``colour_scale`` ("log" or "linear") and ``log_floor``: the heatmaps' initial colour scale, the same as the
    W&B pictures' ``scale`` and ``log_floor`` (the training callback passes its own).
    ``max_layout_points``: t-SNE / UMAP of a block's patches only up to this many patches (PCA always; the page
    names the blocks left to PCA). ``metrics``: metrics_table rows already computed for a single export.
    ``codes`` (block key -> log8 codes and scales, ``patchorder.attention.export.log8_codes``) and
    ``embedding_cache`` (an EmbeddingCache that ``render_attention`` filled): work already done on the export,
    stored as it is instead of computed again; the file is the same as without them (codes that do not belong to
    a block's values are not used).
    """
    if colour_scale not in ("log", "linear"):
        raise ValueError(f"colour_scale must be 'log' or 'linear', got {colour_scale!r}")
    if not 0 < log_floor < 1:
        raise ValueError(f"log_floor must be in (0, 1) (smallest value shown, relative to the maximum), got {log_floor}")
    if max_mb <= 0:
        raise ValueError(f"max_mb must be positive, got {max_mb}")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty subset of {', '.join(METHODS)}; got {list(methods)}")
    sides = [_load_side(export_or_path)]
    relevance = [_side_relevance(export_or_path)]
    if compare is not None:
        sides.append(_load_side(compare))
        relevance.append(_side_relevance(compare))
    if metrics is not None and (compare is not None or len(sides[0][0]) != 1):
        raise ValueError("metrics can only be given for a single export without --compare")
    options = Options(methods=tuple(methods), seed=seed, encoding=encoding, floor=floor,
                      max_bytes=int(max_mb * 1e6), max_layout_points=int(max_layout_points),
                      metrics=list(metrics) if metrics is not None else None, codes=codes,
                      embedding_cache=embedding_cache)
    payload, packer = build_payload(sides, options, fixed_bytes=_shell_bytes(), relevance=relevance)
    payload["methods"] = list(methods)
    payload["colormaps"] = _colormaps()
    payload["colour"] = {"scale": colour_scale, "log_floor": float(log_floor)}
    payload["reduce_meanings"] = REDUCE_MEANINGS
    if title is None:
        title = "Attention explorer: " + "  vs  ".join(label.split(" · ")[0] for _, label in sides)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(render(payload, packer, title), encoding="utf-8")
    return Report(out_path, out_path.stat().st_size, payload["omitted"], payload["omitted_bytes"])


def to_wandb_html(report_path: str | Path):
    """The report as a ``wandb.Html`` media object, unchanged (no stylesheet injected; it is self-contained)."""
    import wandb

    return wandb.Html(Path(report_path), inject=False)
