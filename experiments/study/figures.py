"""The study's figures (matplotlib, PNG files). Each function draws from numbers already computed in
study.analysis (or the runs' curves), writes one file and returns its path, or None when there is nothing to draw."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from patchorder.attention.metrics import scalar_metrics  # noqa: E402

def colours(orderings: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {o: cmap(i % 10) for i, o in enumerate(orderings)}


def _save(figure, path: Path, dpi: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return path


def paths(specs: dict[str, Any], grid: tuple[int, int], path: Path, dpi: int) -> Path:
    """Each ordering's forward route over the stage-0 grid (orderings.show.draw); ``specs``: name -> ordering config."""
    from orderings.show import draw

    figure = draw(list(specs.values()), grid[0], grid[1], panel_inches=2.6)
    for ax, name in zip(figure.axes, specs):
        ax.set_title(name, fontsize=10)
    return _save(figure, path, dpi)


def curves(run_curves: list[dict[str, Any]], orderings: list[str], path: Path, dpi: int) -> Path | None:
    """val/acc1 and train/loss per epoch: one colour per ordering, a thin line per seed, a thick line for the mean."""
    if not any(c["curves"]["val_epochs"] or c["curves"]["loss_epochs"] for c in run_curves):
        return None
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    colour = colours(orderings)
    panels = (("val_epochs", "val_acc1", "validation top-1"),
              ("loss_epochs", "train_loss", "training loss (mean of logged steps)"))
    for ax, (x_key, y_key, title) in zip(axes, panels):
        for ordering in orderings:
            mine = [c["curves"] for c in run_curves if c["ordering"] == ordering and c["curves"][x_key]]
            for c in mine:
                ax.plot(c[x_key], c[y_key], color=colour[ordering], alpha=0.35, linewidth=1,
                        marker="o" if len(c[x_key]) == 1 else None)  # a 1-epoch run is a point, not a line
            if mine:
                length = min(len(c[x_key]) for c in mine)
                mean = np.mean([c[y_key][:length] for c in mine], axis=0)
                ax.plot(mine[0][x_key][:length], mean, color=colour[ordering], linewidth=2.2,
                        marker="o" if length == 1 else None, label=f"{ordering} (n={len(mine)})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _save(figure, path, dpi)


def accuracy(table: dict[str, Any], run_points: dict[str, list[float]], orderings: list[str], path: Path,
             dpi: int) -> Path | None:
    """Test top-1 per ordering: bar = mean over seeds, error bar = std, dots = seeds."""
    means = [table[o]["test_acc1"]["mean"] for o in orderings]
    if all(m is None for m in means):
        return None
    figure, ax = plt.subplots(figsize=(1.2 * len(orderings) + 2, 3.5))
    colour = colours(orderings)
    x = np.arange(len(orderings))
    ax.bar(x, [m or 0 for m in means], yerr=[table[o]["test_acc1"]["std"] or 0 for o in orderings],
           color=[colour[o] for o in orderings], alpha=0.6, capsize=4)
    for i, o in enumerate(orderings):
        points = run_points.get(o, [])
        ax.scatter(np.full(len(points), i), points, color="k", s=14, zorder=3)
    ax.set_xticks(x, orderings)
    present = [v for o in orderings for v in run_points.get(o, [])]
    low = min(present) if present else 0
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.set_ylabel("test top-1")
    ax.grid(axis="y", alpha=0.3)
    return _save(figure, path, dpi)


def cross(table: dict[str, Any], path: Path, dpi: int) -> Path | None:
    """Heatmap of the cross table: training ordering (rows) x test ordering (columns), mean top-1 over seeds."""
    rows, columns = table["rows"], table["columns"]
    values = np.array([[table["acc1"][a][b]["mean"] if table["acc1"][a][b]["mean"] is not None else np.nan
                        for b in columns] for a in rows], dtype=float)
    if np.isnan(values).all():
        return None
    figure, ax = plt.subplots(figsize=(1.1 * len(columns) + 2.5, 0.8 * len(rows) + 1.5))
    image = ax.imshow(values, cmap="viridis", vmin=np.nanmin(values), vmax=np.nanmax(values))
    for i in range(len(rows)):
        for j in range(len(columns)):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center", fontsize=8,
                        color="w" if values[i, j] < np.nanmean(values) else "k")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("test ordering")
    ax.set_ylabel("training ordering")
    figure.colorbar(image, ax=ax, label="mean test top-1")
    return _save(figure, path, dpi)


def attention_metrics(stage_table: dict[str, Any], orderings: list[str], path: Path, dpi: int) -> Path | None:
    """One panel per scalar metric of the registry, per stage: mean over seeds, error bars = std."""
    stages = stage_table["stages"]
    if not stages:
        return None
    metrics = scalar_metrics()
    columns = min(3, len(metrics))
    rows = -(-len(metrics) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.5 * rows), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[len(metrics):]:
        ax.set_axis_off()
    colour = colours(orderings)
    for ax, metric in zip(axes, metrics):
        for k, ordering in enumerate(orderings):
            cells = [stage_table["by_ordering"][ordering][str(s)][metric.name] for s in stages]
            xs = [s + 0.06 * (k - len(orderings) / 2) for s, c in zip(stages, cells) if c["mean"] is not None]
            ys = [c["mean"] for c in cells if c["mean"] is not None]
            errors = [c["std"] for c in cells if c["mean"] is not None]
            if ys:
                ax.errorbar(xs, ys, yerr=errors, marker="o", color=colour[ordering], label=ordering, capsize=3)
        ax.set_xticks(stages, [f"stage {s}\n{'x'.join(map(str, stage_table['grids'][str(s)]))}" for s in stages])
        ax.set_title(metric.label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _save(figure, path, dpi)


def similarity(similarity_table: dict[str, Any], orderings: list[str], path: Path, dpi: int) -> Path | None:
    """Per stage: cosine between orderings of the same block's attention (diagonal: same ordering, other seed)."""
    stages = similarity_table["stages"]
    if not stages:
        return None
    figure, axes = plt.subplots(1, len(stages), figsize=(3.4 * len(stages) + 1, 3.4), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        cells = similarity_table["matrix"][str(stage)]
        values = np.array([[cells[a][b]["mean"] if cells[a][b]["mean"] is not None else np.nan for b in orderings]
                           for a in orderings], dtype=float)
        image = ax.imshow(values, cmap="magma", vmin=0, vmax=1)
        for i in range(len(orderings)):
            for j in range(len(orderings)):
                if np.isfinite(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="w" if values[i, j] < 0.6 else "k")
        ax.set_xticks(range(len(orderings)), orderings, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(len(orderings)), orderings if ax is axes[0][0] else [], fontsize=8)
        ax.set_title(f"stage {stage}", fontsize=10)
    figure.colorbar(image, ax=list(axes[0]), label="cosine of mean attention")
    return _save(figure, path, dpi)


def _panels(row_keys: list, column_keys: list, entries: dict, side: float):
    """A grid of tickless square panels, one per (row key, column key); a panel with no entry is hidden. Returns
    the figure and (i, j, axes, entry) for each panel that has one."""
    figure, axes = plt.subplots(len(row_keys), len(column_keys), figsize=(side * len(column_keys),
                                                                          side * len(row_keys)), squeeze=False)
    filled = []
    for i, row in enumerate(row_keys):
        for j, column in enumerate(column_keys):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            entry = entries.get((row, column))
            if entry is None:
                ax.set_axis_off()
            else:
                filled.append((i, j, ax, entry))
    return figure, filled


def _edge_labels(ax, i: int, j: int, column_title: str, row_label: str) -> None:
    """The column's title on the top row, the row's label on the first column."""
    if i == 0:
        ax.set_title(column_title, fontsize=10)
    if j == 0:
        ax.set_ylabel(row_label, fontsize=10)


def _log_image(ax, values: np.ndarray) -> None:
    """Non-negative values on a log colour scale with a floor of 1e-3 of their maximum."""
    top = float(values.max())
    ax.imshow(np.maximum(values, top * 1e-3), cmap="inferno", norm=LogNorm(top * 1e-3, top), interpolation="nearest")


def attention_maps(maps: dict[tuple[str, int], np.ndarray | None], orderings: list[str], stages: list[int],
                   path: Path, dpi: int) -> Path | None:
    """Average attention matrix per ordering (rows) and stage (columns), query x key patches in raster order."""
    if not any(m is not None for m in maps.values()):
        return None
    figure, filled = _panels(orderings, stages, maps, 2.6)
    for i, j, ax, matrix in filled:
        values = np.abs(matrix)
        if values.max() > 0:
            _log_image(ax, values)
        _edge_labels(ax, i, j, f"stage {stages[j]}", orderings[i])
    figure.suptitle("mean |attention| (query rows x key columns, raster order; log scale, floor 1e-3 of max)",
                    fontsize=9)
    return _save(figure, path, dpi)


def embeddings(points: dict[tuple[str, str], dict[str, Any]], orderings: list[str], blocks: list[str], path: Path,
               dpi: int, seed: int) -> Path | None:
    """PCA of each block's patch attention rows (patch_embeddings), one dot per patch coloured by its position in
    the ordering's sequence; rows = orderings, columns = blocks."""
    if not points:
        return None
    figure, filled = _panels(orderings, blocks, points, 2.4)
    for i, j, ax, entry in filled:
        coords = np.asarray(entry["coords"])
        ax.scatter(coords[:, 0], coords[:, 1], c=entry["seq_pos"], cmap="viridis", s=6)
        _edge_labels(ax, i, j, blocks[j], orderings[i])
    figure.suptitle(f"PCA of patch attention rows (seed {seed}); colour = position in the sequence (dark = early)",
                    fontsize=9)
    return _save(figure, path, dpi)


def erf(maps: dict[tuple[str, int], np.ndarray], ordering: str, path: Path, dpi: int) -> Path | None:
    """One ordering's effective receptive field per stage (columns), before and after training (rows): each map
    divided by its maximum, averaged over seeds, log scale (floor 1e-3)."""
    if not maps:
        return None
    stages = sorted({stage for _, stage in maps})
    rows = [when for when in ("before", "after") if any((when, s) in maps for s in stages)]
    drawable = {key: values for key, values in maps.items() if float(values.max()) > 0}
    figure, filled = _panels(rows, stages, drawable, 2.6)
    for i, j, ax, values in filled:
        _log_image(ax, values)
        _edge_labels(ax, i, j, f"stage {stages[j]}", f"{rows[i]} training")
    figure.suptitle(f"{ordering}: effective receptive field of the centre patch (input pixels; each map / its max, "
                    "mean over seeds, log scale)", fontsize=9)
    return _save(figure, path, dpi)
