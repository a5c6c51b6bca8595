"""orderings.show: the drawn path is the ordering's path, and PNGs have the promised pixel size."""
import io
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import torch

from orderings import get, routes
from orderings.show import draw, main


def png_shape(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(io.BytesIO(data)).shape[:2]  # (height px, width px)


def drawn_path(ax) -> list[tuple[int, int]]:
    """(row, col) cells the panel's arrows start from, plus the end marker's cell."""
    arrows = ax.collections[0]
    start = [(int(round(y)), int(round(x))) for x, y in arrows.get_offsets()]
    end_x, end_y = ax.lines[1].get_data()
    return start + [(int(end_y[0]), int(end_x[0]))]


def test_draw_traces_each_ordering_side_by_side():
    figure = draw(["spiral", "hilbert", "morton"], 5, 7, panel_inches=2.0)
    assert len(figure.axes) == 3
    assert tuple(figure.get_size_inches()) == (6.0, 2.0)
    for ax, name in zip(figure.axes, ["spiral", "hilbert", "morton"]):
        perm = get(name)(5, 7)
        assert drawn_path(ax) == [(int(p) // 7, int(p) % 7) for p in perm]
        start_x, start_y = ax.lines[0].get_data()
        assert (start_y[0], start_x[0]) == (int(perm[0]) // 7, int(perm[0]) % 7)
        # Each cell shows its sequence position.
        numbers = {(round(t.get_position()[1] + 0.45), round(t.get_position()[0] + 0.45)): int(t.get_text())
                   for t in ax.texts}
        assert numbers == {(int(p) // 7, int(p) % 7): s for s, p in enumerate(perm)}
        assert ax.get_title() == name
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=50)
    assert png_shape(buffer.getvalue()) == (100, 300)


def test_draw_all_routes_of_a_scheme_and_into_given_axes():
    figure = draw("diagonal", 4, 6, scheme="cross4")
    assert len(figure.axes) == 4 and tuple(figure.get_size_inches()) == (3.0, 12.0)
    table = routes("diagonal", 4, 6, "cross4")
    for ax, route in zip(figure.axes, table):
        assert drawn_path(ax) == [(int(p) // 6, int(p) % 6) for p in route]
    assert figure.axes[1].get_title() == "diagonal: transposed"

    import matplotlib.pyplot as plt
    own, axes = plt.subplots(1, 2)
    assert draw(["row_major", "snake"], 3, 3, ax=axes, numbers=False) is own
    assert drawn_path(axes[1]) == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0), (2, 0), (2, 1), (2, 2)]
    assert len(axes[1].texts) == 0
    with pytest.raises(ValueError, match="draw got 1 axes for 1 ordering\\(s\\) x 2 route\\(s\\)"):
        draw("snake", 3, 3, ax=axes[0], scheme="bidirectional")
    plt.close("all")


def test_a_single_cell_grid_draws_no_arrows():
    figure = draw(lambda h, w: torch.zeros(1, dtype=torch.long), 1, 1)
    ax = figure.axes[0]
    assert len(ax.collections) == 0 and len(ax.lines) == 2 and ax.get_title() == "<lambda>"


def test_cli_writes_png_of_expected_size(tmp_path):
    out = tmp_path / "sub" / "all.png"
    result = subprocess.run(
        [sys.executable, "-m", "orderings.show", "row_major", "diagonal", "morton", "spiral", "hilbert", "8", "8",
         "-o", str(out), "--dpi", "40"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out}"
    assert png_shape(out.read_bytes()) == (120, 600)  # 1 row x 5 panels of 3 in at 40 dpi
    image = matplotlib.image.imread(out)
    assert np.unique(image.reshape(-1, image.shape[-1]), axis=0).shape[0] > 10  # not a blank canvas


def test_cli_scheme_and_panel_size(tmp_path):
    out = main(["hilbert", "3", "5", "--scheme", "cross4", "--panel-inches", "1.5", "--dpi", "20",
                "-o", str(tmp_path / "h.png")])
    assert png_shape(out.read_bytes()) == (120, 30)  # 4 rows x 1 column of 1.5 in at 20 dpi


@pytest.mark.parametrize("argv, message", [
    (["spiral", "8", "x"], "argument WIDTH: must be a positive integer, got 'x'"),
    (["spiral", "0", "8"], "argument HEIGHT: must be a positive integer, got 0"),
    (["zigzag", "8", "8"], "unknown ordering(s) zigzag; available: column_major, diagonal"),
    (["8", "8"], "the following arguments are required: WIDTH"),
    (["spiral", "8", "8", "--scheme", "cross8"], "argument --scheme: invalid choice: 'cross8'"),
    (["spiral", "8", "8", "-o", "x.jpg"], "output must be a .png file, got 'x.jpg'"),
    (["spiral", "8", "8", "--dpi", "0"], "--dpi and --panel-inches must be positive"),
    (["mine", "8", "8", "--import", "no_such_module_xyz"], "--import no_such_module_xyz: No module named"),
])
def test_cli_rejects_bad_input_clearly(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
