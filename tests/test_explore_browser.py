"""The explorer page in a real headless Chromium: what it shows is checked against the export and the analyses.

Needs Debian's chromium (/usr/bin/chromium); with CI set these tests fail when it is missing, elsewhere they skip.
Screenshots go to the test's tmp dir and to test-artifacts/ at the repository root.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import patchorder.models  # noqa: F401  (registers the VMamba presets with timm)
from patchorder.attention.embedding import block_embeddings, patch_embeddings
from patchorder.attention.export import load, save
from patchorder.attention.extract import extract_attention
from patchorder.attention.metrics import metrics_table, scalar_metrics
from patchorder.explore import build_report
from patchorder.explore.packing import log8_relative_error

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLOOR = 1e-4
IMAGES = 3
STAGES = [0, 2]  # a 16x16 grid (one block) and a 4x4 grid (two blocks) of vmamba_micro at 64 px


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        reason = f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def micro_export(ordering: str, reduce: str, seed: int, merge: str = "none"):
    torch.manual_seed(seed)
    model = timm.create_model("vmamba_micro", ordering=ordering, num_classes=4)
    images = torch.randn(IMAGES, 3, 64, 64, generator=torch.Generator().manual_seed(123))
    return extract_attention(model, images, stages=STAGES, merge=merge, reduce=reduce, labels=[0, 1, 2],
                             class_names=["tench", "church", "parachute"])


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Real attention of random-weight vmamba_micro models, saved and re-read as the page's source of truth."""
    folder = tmp_path_factory.mktemp("exports")
    paths = {
        "spiral_abs": save(folder / "spiral_abs.npz", micro_export("spiral", "mean_abs", 0)),
        "spiral_mean": save(folder / "spiral_mean.npz", micro_export("spiral", "mean", 0)),
        "row_abs": save(folder / "row_abs.npz", micro_export("row_major", "mean_abs", 1, merge="sum")),
    }
    return {name: (path, load(path)) for name, path in paths.items()}


@pytest.fixture(scope="module")
def reports(exports, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")
    single = build_report([exports["spiral_abs"][0], exports["spiral_mean"][0]], folder / "single.html",
                          methods=("pca", "tsne", "umap"), floor=FLOOR)
    compare = build_report(exports["spiral_abs"][0], folder / "compare.html", compare=exports["row_abs"][0],
                           methods=("pca",), floor=FLOOR)
    return {"single": single, "compare": compare}


class Page:
    """An open report plus every console message and page error it produced."""

    def __init__(self, browser, path: Path):
        self.page = browser.new_page(viewport={"width": 1600, "height": 1400})
        self.messages: list[str] = []
        self.page.on("console", lambda m: self.messages.append(f"console.{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.messages.append(f"pageerror: {e}"))
        self.requests: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.as_uri())
        self.page.wait_for_function("window.explorer && (explorer.ready || explorer.errors.length > 0)", timeout=30_000)
        assert self.js("explorer.errors") == []

    def js(self, expression: str, arg=None):
        return self.page.evaluate(expression, arg)

    def choose(self, selector: str, value):
        """Pick a toolbar option as a user would; a disabled select (one option) must already show it."""
        element = self.page.locator(selector)
        if element.is_disabled():
            assert element.input_value() == str(value)
        else:
            element.select_option(str(value))

    def canvas_box(self, side: int, kind: str) -> dict:
        return self.page.locator(f'section[data-side="{side}"] canvas.{kind}').bounding_box()

    def click_patch(self, side: int, row: int, col: int, grid: tuple[int, int]):
        """A real mouse click at the centre of patch (row, col), computed from the canvas box and the grid."""
        box = self.canvas_box(side, "patches")
        height, width = grid
        self.page.mouse.click(box["x"] + (col + 0.5) * box["width"] / width,
                              box["y"] + (row + 0.5) * box["height"] / height)

    def drag(self, start: tuple[float, float], end: tuple[float, float]):
        self.page.mouse.move(*start)
        self.page.mouse.down()
        self.page.mouse.move(*end, steps=6)
        self.page.mouse.up()

    def screenshot(self, tmp_path: Path, name: str):
        shot = tmp_path / f"{name}.png"
        self.page.screenshot(path=str(shot), full_page=True)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(shot, ARTIFACTS / shot.name)

    def close(self):
        self.page.close()
        assert self.messages == [], "the page logged errors or messages"
        assert all(url.startswith("file://") for url in self.requests), f"the page fetched {self.requests}"


@pytest.fixture
def open_page(browser):
    pages = []

    def opener(path: Path) -> Page:
        pages.append(Page(browser, path))
        return pages[-1]

    yield opener
    for page in pages:
        page.close()


def expected_row(export, stage, block, route, image, patch) -> np.ndarray:
    """The attention row the page must show, from the export itself (float64)."""
    b = export.block(stage, block)
    attn = b.attn.astype(np.float64)
    if route == "merged":
        attn = attn if b.merged else attn.sum(axis=1)
    else:
        attn = attn[:, route]
    matrix = attn.mean(axis=0) if image == "mean" else attn[image]
    return matrix[patch]


def assert_log8_close(shown, truth):
    """Within the log8 bound: relative above the floor, absolute (floor * row max) below it.

    The margins (1e-6, 1.01) cover float32 rounding between the builder's sums and this float64 oracle.
    """
    shown = np.asarray(shown, dtype=np.float64)
    peak = truth.max()
    kept = truth >= 1.01 * FLOOR * peak
    error = np.abs(shown - truth)
    assert np.all(error[kept] <= (log8_relative_error(FLOOR) + 1e-6) * truth[kept])
    assert np.all(error[~kept] <= 1.01 * FLOOR * peak)


# ---------- patch view ----------

@pytest.mark.slow
@pytest.mark.parametrize("stage, block, route, image, row, col", [
    (0, 0, "merged", "mean", 5, 11),
    (0, 0, 2, 1, 15, 0),
    (2, 1, 0, "mean", 1, 2),
    (2, 0, "merged", 2, 3, 3),
])
def test_clicked_patch_shows_its_attention_row(open_page, reports, exports, tmp_path, stage, block, route, image,
                                               row, col):
    export = exports["spiral_abs"][1]
    page = open_page(reports["single"])
    grid = tuple(export.block(stage, block).grid)
    # the toolbar is driven like a user would
    page.choose("#sel-stage", str(stage))
    page.choose("#sel-block", str(block))
    page.choose("#sel-route", str(route))
    page.choose("#sel-image", str(image))
    page.click_patch(0, row, col, grid)
    state = page.js("explorer.state")
    assert (state["stage"], state["block"], state["patch"]) == (stage, block, row * grid[1] + col)
    assert_log8_close(page.js("explorer.heatmapValues(0)"),
                      expected_row(export, stage, block, route, image, row * grid[1] + col))
    if (stage, route) == (0, 2):
        page.js("explorer.setPath(true)")
        page.screenshot(tmp_path, "explorer_patch_view")


@pytest.mark.slow
def test_signed_reduction_is_shown_in_float16(open_page, reports, exports):
    export = exports["spiral_mean"][1]
    page = open_page(reports["single"])
    page.choose("#sel-reduce", "1")  # the second export given: reduce "mean"
    assert page.js("explorer.state.variant") == 1
    page.click_patch(0, 7, 9, (16, 16))
    truth = expected_row(export, 0, 0, "merged", "mean", 7 * 16 + 9)
    assert truth.min() < 0  # the case this test is about
    shown = np.asarray(page.js("explorer.heatmapValues(0)"))
    peak = np.abs(export.block(0, 0).attn.sum(axis=1).mean(axis=0)).max()
    assert np.all(np.abs(shown - truth) <= 2.0 ** -11 * np.abs(truth) + 2.0 ** -24 * peak + 1e-7 * peak)


# ---------- scatterplot ----------

def rectangle_between(values: np.ndarray, low_q: float, high_q: float) -> tuple[float, float]:
    """Bounds at the midpoints between sorted coordinates, so no point sits on an edge."""
    ordered = np.sort(values)
    lo, hi = int(low_q * (len(ordered) - 1)), int(high_q * (len(ordered) - 1))
    return float(ordered[lo] + ordered[lo + 1]) / 2, float(ordered[hi] + ordered[hi + 1]) / 2


@pytest.mark.slow
def test_brushing_patches_highlights_the_points_inside(open_page, reports, exports, tmp_path):
    export = exports["spiral_abs"][1]
    coords = patch_embeddings(export, 0, 0, ["pca"], seed=0)["pca"].coords  # the analyses' own output
    page = open_page(reports["single"])
    shown = page.js("explorer.scatterPoints(0)")
    np.testing.assert_array_equal(np.stack([shown["x"], shown["y"]], axis=1), coords)
    x0, x1 = rectangle_between(coords[:, 0], 0.2, 0.7)
    y0, y1 = rectangle_between(coords[:, 1], 0.3, 0.9)
    expected = sorted(np.nonzero((coords[:, 0] >= x0) & (coords[:, 0] <= x1) &
                                 (coords[:, 1] >= y0) & (coords[:, 1] <= y1))[0].tolist())
    assert 0 < len(expected) < len(coords)
    assert page.js("([a, b, c, d]) => explorer.brush(a, b, c, d)", [x0, y0, x1, y1]) == expected
    assert page.js("explorer.highlightedPatches()") == expected
    page.js("explorer.clearBrush()")
    assert page.js("explorer.highlightedPatches()") == []
    # a rectangle dragged with the mouse, its edges in the middle of pixel gaps between points
    pixels = np.array([[p["x"], p["y"]] for p in page.js(
        "(cs) => cs.map(([x, y]) => explorer.dataToClient(0, x, y))", coords.tolist())])
    left, right = widest_gap(pixels[:, 0], 0.1, 0.4), widest_gap(pixels[:, 0], 0.6, 0.9)
    top, bottom = widest_gap(pixels[:, 1], 0.1, 0.4), widest_gap(pixels[:, 1], 0.6, 0.9)
    page.drag((left, top), (right, bottom))
    inside = (pixels[:, 0] > left) & (pixels[:, 0] < right) & (pixels[:, 1] > top) & (pixels[:, 1] < bottom)
    assert page.js("explorer.highlightedPatches()") == sorted(np.nonzero(inside)[0].tolist())
    page.screenshot(tmp_path, "explorer_brush")


def widest_gap(values: np.ndarray, low_q: float, high_q: float) -> float:
    """The middle of the widest gap between consecutive sorted values in a quantile range (an edge no point is near)."""
    ordered = np.sort(values)
    lo, hi = int(low_q * (len(ordered) - 1)), int(high_q * (len(ordered) - 1))
    gaps = np.diff(ordered[lo:hi + 1])
    best = lo + int(np.argmax(gaps))
    assert gaps.max() > 2, "points too dense for a mouse-precise edge"
    return float((ordered[best] + ordered[best + 1]) / 2)


@pytest.mark.slow
def test_dragging_on_the_patch_grid_highlights_those_patches(open_page, reports):
    page = open_page(reports["single"])
    box = page.canvas_box(0, "patches")
    cell = box["width"] / 16
    page.drag((box["x"] + 1.5 * cell, box["y"] + 2.5 * cell), (box["x"] + 4.5 * cell, box["y"] + 5.5 * cell))
    expected = sorted(r * 16 + c for r in range(2, 6) for c in range(1, 5))
    assert page.js("explorer.highlightedPatches()") == expected


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_blocks_mode_shows_every_block_and_image_of_the_stage(open_page, reports, exports, method):
    export = exports["spiral_abs"][1]
    oracle = block_embeddings(export, 2, [method], seed=0)[method]
    page = open_page(reports["single"])
    page.choose("#sel-stage", "2")
    page.choose("#sel-mode", "blocks")
    page.choose("#sel-method", method)
    shown = page.js("explorer.scatterPoints(0)")
    assert shown["kind"] == "blocks"
    assert shown["meta"] == [[p["block"], p["image"]] for p in oracle.points]
    assert sorted(map(tuple, shown["meta"])) == [(b, n) for b in (0, 1) for n in range(IMAGES)]
    np.testing.assert_allclose(np.stack([shown["x"], shown["y"]], axis=1), oracle.coords, rtol=1e-5, atol=1e-5)
    assert page.js("explorer.notices(0).scatter") == oracle.note
    # clicking a point opens that block and image
    target = next(i for i, (b, n) in enumerate(shown["meta"]) if (b, n) == (1, 2))
    point = page.js("([x, y]) => explorer.dataToClient(0, x, y)", [shown["x"][target], shown["y"][target]])  # floats
    page.page.mouse.click(point["x"], point["y"])
    state = page.js("explorer.state")
    assert (state["stage"], state["block"], state["image"]) == (2, 1, 2)


# ---------- metrics ----------

@pytest.mark.slow
def test_metrics_of_the_selected_block_are_shown(open_page, reports, exports):
    export = exports["spiral_abs"][1]
    table = {row["key"]: row for row in metrics_table(export)}
    page = open_page(reports["single"])
    page.js("explorer.select(2, 1)")
    shown = page.js("explorer.metrics(0)")
    labels = {metric.name: metric.label for metric in scalar_metrics()}
    for name, label in labels.items():
        expected = table["s2b1"][name]
        if expected is None:  # e.g. scan usage, measured only when the export was made from a model
            assert shown.get(label) is None, (label, shown.get(label))
        else:
            assert shown[label] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    text = page.page.locator('section[data-side="0"] .metrics').inner_text()
    assert "stage 2 block 1" in text and labels["coherence"] in text


# ---------- side by side ----------

@pytest.mark.slow
def test_side_by_side_selection_is_linked(open_page, reports, exports, tmp_path):
    left, right = exports["spiral_abs"][1], exports["row_abs"][1]
    page = open_page(reports["compare"])
    assert page.js("explorer.sideCount") == 2
    page.click_patch(1, 12, 3, (16, 16))  # clicked on the right-hand grid
    patch = 12 * 16 + 3
    assert page.js("explorer.state.patch") == patch
    assert_log8_close(page.js("explorer.heatmapValues(0)"), expected_row(left, 0, 0, "merged", "mean", patch))
    assert_log8_close(page.js("explorer.heatmapValues(1)"), expected_row(right, 0, 0, "merged", "mean", patch))
    page.choose("#sel-stage", "2")
    page.choose("#sel-block", "1")
    page.choose("#sel-image", "1")
    page.click_patch(0, 2, 1, (4, 4))
    for side, export in ((0, left), (1, right)):
        assert_log8_close(page.js(f"explorer.heatmapValues({side})"), expected_row(export, 2, 1, "merged", 1, 9))
    # a brush on the right-hand scatterplot highlights the same patches on both sides
    coords = patch_embeddings(right, 2, 1, ["pca"], seed=0)["pca"].coords
    x0, x1 = rectangle_between(coords[:, 0], 0.0, 0.6)
    expected = sorted(np.nonzero((coords[:, 0] >= x0) & (coords[:, 0] <= x1))[0].tolist())
    inside = page.js("([a, b]) => explorer.brush(a, -1e30, b, 1e30, 1)", [x0, x1])
    assert inside == expected and page.js("explorer.highlightedPatches()") == expected
    # the right side's per-route views do not exist (merged export): the page says so instead of drawing
    page.js("explorer.setRoute(2)")
    assert "not in this export" in page.js("explorer.heatmapReason(1)")
    assert page.js("explorer.heatmapValues(0)") is not None
    page.screenshot(tmp_path, "explorer_side_by_side")


@pytest.mark.slow
def test_views_left_out_by_the_budget_are_announced(open_page, exports, browser, tmp_path):
    path = exports["spiral_abs"][0]
    full = build_report(path, tmp_path / "full.html", methods=("pca",))
    tight = build_report(path, tmp_path / "tight.html", methods=("pca",), max_mb=full.stat().st_size / 1e6 * 0.7)
    page = open_page(tight)
    assert "Not stored (size budget" in page.js("explorer.notices(0).page")
    page.js("explorer.setImage(2)")
    missing = []
    for route in range(4):  # the image selector marks what the current route lacks
        page.js(f"explorer.setRoute({route})")
        labels = page.page.locator("#sel-image option").all_inner_texts()
        if any("(not stored)" in label for label in labels):
            missing.append(route)
            assert "not stored in this report" in page.js("explorer.heatmapReason(0)")
            assert page.js("explorer.heatmapValues(0)") is None
        else:
            assert page.js("explorer.heatmapValues(0)") is not None
    assert missing, "a budget 30% below the full size must leave some per-image route matrices out"
