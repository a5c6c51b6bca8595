"""Draw the path of one or more orderings over their grid.

    python -m orderings.show spiral 8 8 -o spiral.png
    python -m orderings.show row_major diagonal morton spiral hilbert 8 8 -o all.png
    python -m orderings.show hilbert 6 9 --scheme cross4 -o hilbert_routes.png

Each panel numbers the cells by sequence position, draws arrows along the path (coloured from start to end),
and marks the start (circle) and the end (square). Orderings are laid side by side; with a scheme of several
routes, each route gets its own row.
"""
from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from orderings.base import Ordering, OrderingError, check_grid  # noqa: E402
from orderings.registry import available, resolve  # noqa: E402
from orderings.routes import SCHEMES, routes  # noqa: E402

ROUTE_TITLES = {
    "single": ["forward"],
    "bidirectional": ["forward", "reversed"],
    "cross4": ["forward", "transposed", "reversed", "transposed reversed"],
}
# Past this many cells numbers become unreadable at the default panel size.
MAX_NUMBERED_CELLS = 400


def draw_path(ax: Axes, perm: Sequence[int], height: int, width: int, title: str = "",
              numbers: bool | None = None) -> None:
    """Draw one route ``perm`` (raster index per sequence position) over a height x width grid on ``ax``."""
    perm = np.asarray(perm, dtype=np.int64)
    rows, cols = perm // width, perm % width
    position = np.empty_like(perm)
    position[perm] = np.arange(perm.size)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 1.0, max(perm.size - 1, 1)))

    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)  # row 0 at the top, as in the image
    ax.set_aspect("equal")
    ax.set_xticks(np.arange(-0.5, width, 1.0), minor=True)
    ax.set_yticks(np.arange(-0.5, height, 1.0), minor=True)
    ax.grid(which="minor", color="0.85", linewidth=0.6)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    if perm.size > 1:
        ax.quiver(cols[:-1], rows[:-1], np.diff(cols), np.diff(rows), color=colors, angles="xy",
                  scale_units="xy", scale=1, width=0.006, headwidth=4, headlength=4, headaxislength=3.5,
                  zorder=2)
    # Text and markers scale with the drawn size of one cell (in points), so any grid stays legible.
    cell_points = 72 * ax.get_position().height * ax.figure.get_figheight() / max(height, width)
    show_numbers = perm.size <= MAX_NUMBERED_CELLS if numbers is None else numbers
    if show_numbers:
        for index in range(perm.size):
            r, c = divmod(index, width)
            ax.text(c - 0.45, r - 0.45, str(position[index]), fontsize=max(2.5, 0.33 * cell_points),
                    color="0.3", ha="left", va="top", zorder=3)
    marker_size = max(3.0, 0.45 * cell_points)
    ax.plot(cols[0], rows[0], "o", color="tab:green", alpha=0.8, markersize=marker_size, zorder=4)
    ax.plot(cols[-1], rows[-1], "s", color="tab:red", alpha=0.8, markersize=marker_size, zorder=4)
    ax.set_title(title, fontsize=10)


def draw(orderings: Any | Sequence[Any], height: int, width: int, ax: Axes | Sequence[Axes] | None = None,
         scheme: str = "single", panel_inches: float = 3.0, numbers: bool | None = None) -> Figure:
    """Draw each ordering's routes over the grid and return the Figure.

    ``orderings``: one spec or a list (registered names, Ordering objects, functions, _target_ mappings).
    Without ``ax`` a new figure of (len(orderings) * panel_inches) x (K * panel_inches) inches is made, one
    column per ordering and one row per route of ``scheme``; with ``ax``, pass one Axes per panel
    (ordering-major: all routes of the first ordering first).
    """
    single = isinstance(orderings, (str, Ordering, Mapping)) or callable(orderings)
    specs = [orderings] if single else list(orderings)
    if not specs:
        raise OrderingError(f"draw needs at least one ordering; available: {', '.join(available())}")
    resolved = [resolve(spec) for spec in specs]
    height, width = check_grid(resolved[0].label, height, width)
    if scheme not in SCHEMES:
        raise OrderingError(f"unknown scan scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    k = SCHEMES[scheme]
    if ax is None:
        figure, grid = plt.subplots(k, len(resolved), figsize=(panel_inches * len(resolved), panel_inches * k),
                                    squeeze=False)
        axes = [grid[row, column] for column in range(len(resolved)) for row in range(k)]
    else:
        axes = [ax] if isinstance(ax, Axes) else list(np.ravel(ax))
        if len(axes) != k * len(resolved):
            raise OrderingError(
                f"draw got {len(axes)} axes for {len(resolved)} ordering(s) x {k} route(s) of scheme "
                f"{scheme!r}; pass {k * len(resolved)} axes or none"
            )
        figure = axes[0].figure
    panels = iter(axes)
    for ordering in resolved:
        for route, route_title in zip(routes(ordering, height, width, scheme), ROUTE_TITLES[scheme]):
            title = ordering.label if k == 1 else f"{ordering.label}: {route_title}"
            draw_path(next(panels), route.tolist(), height, width, title, numbers)
    if ax is None:
        figure.suptitle(f"{height}x{width} grid: circle = start, square = end", fontsize=9, y=0.995)
        figure.tight_layout()
    return figure


def _grid_side(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m orderings.show",
        description="Draw the path of patch orderings over a HEIGHT x WIDTH grid into a PNG.",
    )
    parser.add_argument("names", nargs="+", metavar="ORDERING", help="registered ordering name(s)")
    parser.add_argument("height", type=_grid_side, metavar="HEIGHT", help="grid height (rows)")
    parser.add_argument("width", type=_grid_side, metavar="WIDTH", help="grid width (columns)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="PNG file to write (default: <names>_<H>x<W>.png)")
    parser.add_argument("--scheme", choices=list(SCHEMES), default="single",
                        help="draw every route of this scan scheme (cross4: four rows)")
    parser.add_argument("--dpi", type=int, default=100, help="pixels per inch (default 100)")
    parser.add_argument("--panel-inches", type=float, default=3.0, help="size of one panel (default 3)")
    parser.add_argument("--import", dest="modules", action="append", default=[], metavar="MODULE",
                        help="import MODULE first so that its @orderings.register orderings can be drawn")
    options = parser.parse_args(argv)

    for module in options.modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            parser.error(f"--import {module}: {error}")
    names, height, width = options.names, options.height, options.width
    unknown = [name for name in names if name not in available()]
    if unknown:
        parser.error(f"unknown ordering(s) {', '.join(unknown)}; available: {', '.join(available())}")
    if options.dpi < 1 or not options.panel_inches > 0:
        parser.error(f"--dpi and --panel-inches must be positive, got {options.dpi} and {options.panel_inches}")

    output = options.output or Path(f"{'_'.join(names)}_{height}x{width}.png")
    if output.suffix.lower() != ".png":
        parser.error(f"output must be a .png file, got {str(output)!r}")
    figure = draw(names, height, width, scheme=options.scheme, panel_inches=options.panel_inches)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=options.dpi)
    plt.close(figure)
    print(f"wrote {output}")
    return output


if __name__ == "__main__":
    main()
