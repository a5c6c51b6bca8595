"""The explorer's whole-model and reading aids in a real headless Chromium: model overview, route paths, the shared
colour scale of compare mode, legends and units, the probe image beside the heatmap, and when blocks mode is offered.

Every number the page shows is checked against the .npz it was built from (float64 oracles, log8 bounds);
colours against patchorder.artifacts.pictures, the code that draws the W&B pictures. Needs Debian's chromium
(see test_explore_browser.py, whose page helpers these tests share). Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

import patchorder.models  # noqa: F401  (registers the VMamba presets with timm)
from patchorder.attention.export import load, save
from patchorder.attention.extract import extract_attention
from patchorder.artifacts import pictures
from patchorder.explore import build_report
from test_explore_browser import FLOOR, IMAGES, assert_log8_close, browser, expected_row, open_page  # noqa: F401

pytestmark = pytest.mark.browser

GRIDS = {0: (16, 16), 1: (8, 8), 2: (4, 4), 3: (2, 2)}  # vmamba_micro at 64 px; stage 2 has two blocks
BLOCKS = [(0, 0), (1, 0), (2, 0), (2, 1), (3, 0)]
ROUTES = ["forward", "transposed", "reverse", "transposed reverse"]
LOG_FLOOR = 1e-3  # the W&B pictures' default log_floor (callbacks.attention.log_floor)


def all_stage_export(ordering: str, seed: int, merge: str):
    torch.manual_seed(seed)
    model = timm.create_model("vmamba_micro", ordering=ordering, num_classes=4)
    images = torch.randn(IMAGES, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    return extract_attention(model, images, merge=merge, labels=[0, 1, 2], class_names=["tench", "church", "parachute"])


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """Every stage of two random-weight models (routes kept apart on the left), saved and re-read."""
    folder = tmp_path_factory.mktemp("whole")
    spiral = save(folder / "spiral.npz", all_stage_export("spiral", 0, "none"))
    row = save(folder / "row.npz", all_stage_export("row_major", 1, "sum"))
    return {
        "spiral": load(spiral), "row": load(row),
        "single": build_report(spiral, folder / "single.html", methods=("pca",), floor=FLOOR),
        "compare": build_report(spiral, folder / "compare.html", compare=row, methods=("pca",), floor=FLOOR),
    }


def pixel(page, selector: str, x: float, y: float) -> list[int]:
    """RGB of a canvas at CSS pixel (x, y), read from the canvas itself (device pixel ratio applied)."""
    return page.js("""([sel, x, y]) => {
        const c = document.querySelector(sel), r = c.width / c.getBoundingClientRect().width;
        const copy = document.createElement("canvas");  // read a copy: reading the page's canvas makes Chromium warn
        copy.width = c.width; copy.height = c.height;
        const ctx = copy.getContext("2d", { willReadFrequently: true });
        ctx.drawImage(c, 0, 0);
        return Array.from(ctx.getImageData(Math.floor(x * r), Math.floor(y * r), 1, 1).data.slice(0, 3));
    }""", [selector, x, y])


def canvas_size(page, selector: str) -> tuple[float, float]:
    box = page.page.locator(selector).bounding_box()
    return box["width"] - 2, box["height"] - 2  # 1 px border each side


def picture_colour(values: np.ndarray, index: int) -> np.ndarray:
    """The colour the W&B pictures give values[index]: pictures.normalise (log, default floor) + inferno."""
    unit = pictures.normalise(values, "log", LOG_FLOOR)
    return pictures.colorize(unit[None, index:index + 1], "inferno")[0, 0].astype(int)


# ---------- model overview ----------

@pytest.mark.slow
@pytest.mark.parametrize("image", ["mean", 1])
def test_overview_follows_a_stage0_patch_through_every_block(open_page, whole, tmp_path, image):
    export = whole["spiral"]
    page = open_page(whole["single"])
    page.js(f"explorer.setImage({image!r})" if image == "mean" else f"explorer.setImage({image})")
    row, col = 13, 6
    entries = page.js(f"explorer.overviewValues({row}, {col})")
    assert [(e["stage"], e["block"]) for e in entries] == BLOCKS
    for entry in entries:
        stage, block = entry["stage"], entry["block"]
        # the covering patch: VMamba halves the grid per stage
        assert (entry["row"], entry["col"]) == (row >> stage, col >> stage)
        patch = entry["row"] * GRIDS[stage][1] + entry["col"]
        assert_log8_close(entry["values"], expected_row(export, stage, block, "merged", image, patch))
    # one thumbnail per block, and clicking one opens that block at the mapped patch
    assert page.page.locator('section[data-side="0"] .overview-patch button.thumb').count() == len(BLOCKS)
    assert page.page.locator('section[data-side="0"] .overview-matrix button.thumb').count() == len(BLOCKS)
    page.click_patch(0, row, col, GRIDS[0])
    page.page.locator('section[data-side="0"] .overview-patch button[data-key="s2b1"]').click()
    state = page.js("explorer.state")
    assert (state["stage"], state["block"], state["patch"]) == (2, 1, (row >> 2) * 4 + (col >> 2))
    assert_log8_close(page.js("explorer.heatmapValues(0)"),
                      expected_row(export, 2, 1, "merged", image, (row >> 2) * 4 + (col >> 2)))
    # the selected patch survives a stage change: back on stage 0 it is the patch at the centre of that cell
    page.choose("#sel-stage", "0")
    assert page.js("explorer.state.patch") == ((row >> 2) * 4 + 2) * 16 + (col >> 2) * 4 + 2
    if image == "mean":
        page.screenshot(tmp_path, "explorer_overview")


@pytest.mark.slow
def test_overview_thumbnail_colours_follow_the_wandb_pictures(open_page, whole):
    """Patch thumbnails and matrix thumbnails on the pictures' log scale (pictures.normalise + inferno)."""
    export = whole["spiral"]
    page = open_page(whole["single"])
    page.click_patch(0, 3, 12, GRIDS[0])
    # stage 3 (2x2): the patch thumbnail is 96 px, 48 px a cell; sample cell centres away from the outline
    entries = {(e["stage"], e["block"]): e for e in page.js("explorer.overviewValues(3, 12)")}
    truth = expected_row(export, 3, 0, "merged", "mean", entries[3, 0]["row"] * 2 + entries[3, 0]["col"])
    shown = np.asarray(entries[3, 0]["values"])
    for k in range(4):
        got = pixel(page, 'section[data-side="0"] .overview-patch button[data-key="s3b0"] canvas',
                    (k % 2 + 0.5) * 48 + 10, (k // 2 + 0.5) * 48 + 10)
        assert np.abs(np.array(got) - picture_colour(truth, k)).max() <= 8, (k, got, shown)
    # matrix of stage 2 block 1 (16x16 values, 6 px a cell): |mean matrix| on the pictures' log scale
    matrix = np.abs(export.block(2, 1).attn.astype(np.float64).sum(axis=1).mean(axis=0))
    unit = pictures.normalise(matrix, "log", LOG_FLOOR)
    colours = pictures.colorize(unit, "inferno").astype(int)
    for q, k in [(0, 0), (5, 3), (9, 12), (15, 15), (15, 0)]:
        got = pixel(page, 'section[data-side="0"] .overview-matrix button[data-key="s2b1"] canvas', (k + 0.5) * 6, (q + 0.5) * 6)
        assert np.abs(np.array(got) - colours[q, k]).max() <= 8, (q, k, got, colours[q, k])


# ---------- heatmap colours, legends, units ----------

@pytest.mark.slow
def test_heatmap_log_colour_matches_the_wandb_pictures(open_page, whole):
    export = whole["spiral"]
    page = open_page(whole["single"])
    page.page.locator("#rng-opacity").fill("1")  # the heatmap alone, not blended with the image
    page.choose("#sel-stage", "1")
    page.click_patch(0, 2, 5, GRIDS[1])
    assert page.js("explorer.state.logColor") is True  # the pictures' default scale
    truth = expected_row(export, 1, 0, "merged", "mean", 2 * 8 + 5)
    width, _ = canvas_size(page, 'section[data-side="0"] canvas.patches')
    cell = width / 8
    for k in [0, 9, 30, 47, 63]:
        if k == 2 * 8 + 5:
            continue  # the query patch is outlined
        got = pixel(page, 'section[data-side="0"] canvas.patches', (k % 8 + 0.5) * cell, (k // 8 + 0.5) * cell)
        assert np.abs(np.array(got) - picture_colour(truth, k)).max() <= 8, (k, got)
    scale = page.js("explorer.colorScale(0)")
    assert scale["log"] and scale["hi"] == pytest.approx(truth.max(), rel=0.02)
    assert scale["lo"] == pytest.approx(scale["hi"] * LOG_FLOOR, rel=1e-9)


@pytest.mark.slow
def test_legends_axes_and_units_are_shown(open_page, whole):
    page = open_page(whole["single"])
    legend = page.js("explorer.legend(0)")
    assert "colour = column: 0" in legend["scatter"] and "15" in legend["scatter"] and "size = row" in legend["scatter"]
    assert legend["axes"] == ["principal component 1 →", "principal component 2 →"]
    assert legend["unit"].startswith("values (mean_abs): mean over the block's channels of |alpha[query, key]|")
    assert "log scale over 3 decades (as the W&B pictures)" in legend["scale"]
    page.js("explorer.setColorBy('position')")
    assert "colour = position in route 0 (forward): 0" in page.js("explorer.legend(0)")["scatter"]
    assert "255" in page.js("explorer.legend(0)")["scatter"]
    page.js("explorer.setLogColor(false)")
    assert page.js("explorer.legend(0)")["scale"].startswith("linear scale")
    # the colour ramp is really drawn, and is visible
    assert page.page.locator('section[data-side="0"] .scatter-figure .legend i.ramp').is_visible()


@pytest.mark.slow
def test_selecting_an_image_says_what_the_scatter_and_metrics_cover(open_page, whole):
    page = open_page(whole["single"])
    caption = 'section[data-side="0"] .scatter-caption'
    assert "image selector" not in page.page.locator(caption).inner_text()
    page.choose("#sel-image", "2")
    assert "computed from the image mean, the image selector changes the heatmap only" in page.page.locator(caption).inner_text()
    assert page.js("explorer.legend(0)")["metrics"] == f"Metrics over all {IMAGES} images, not only image 2: parachute."


# ---------- ordering paths ----------

@pytest.mark.slow
def test_every_route_path_is_drawn_with_start_and_end(open_page, whole, tmp_path):
    export = whole["spiral"]
    page = open_page(whole["single"])
    page.choose("#sel-stage", "1")
    routes = export.block(1, 0).routes
    assert page.page.locator("#sel-path option").all_inner_texts() == (
        ["off"] + [f"route {k}: {name}" for k, name in enumerate(ROUTES)] + ["all routes"])
    width, _ = canvas_size(page, 'section[data-side="0"] canvas.patches')
    cell = width / 8
    for k in range(4):
        page.choose("#sel-path", str(k))
        drawn = page.js("explorer.paths(0)")
        assert [(p["route"], p["name"]) for p in drawn] == [(k, ROUTES[k])]
        assert drawn[0]["patches"] == routes[k].tolist()
        start, end = divmod(int(routes[k][0]), 8), divmod(int(routes[k][-1]), 8)
        text = page.js("explorer.legend(0)")["paths"]
        assert f"start row {start[0]}, col {start[1]}" in text and f"end row {end[0]}, col {end[1]}" in text
        # the start disc is filled with the first sequence colour, the end square with the last (viridis)
        for (r, c), t in ((start, 0.0), (end, 1.0)):
            got = pixel(page, 'section[data-side="0"] canvas.patches', (c + 0.5) * cell, (r + 0.5) * cell)
            want = pictures.colorize(np.array([[t]]), "viridis")[0, 0].astype(int)
            assert np.abs(np.array(got) - want).max() <= 3, (k, (r, c), got, want)
    page.choose("#sel-path", "all")
    assert [p["patches"] for p in page.js("explorer.paths(0)")] == routes.tolist()
    page.screenshot(tmp_path, "explorer_paths_all_routes")
    page.choose("#sel-path", "off")
    assert page.js("explorer.paths(0)") == []


# ---------- compare: one colour scale ----------

@pytest.mark.slow
def test_compare_mode_shares_one_colour_scale_by_default(open_page, whole, tmp_path):
    left, right = whole["spiral"], whole["row"]
    page = open_page(whole["compare"])
    assert page.page.locator("#chk-shared").is_checked()
    page.choose("#sel-stage", "1")
    page.click_patch(0, 4, 4, GRIDS[1])
    truths = [expected_row(left, 1, 0, "merged", "mean", 36), expected_row(right, 1, 0, "merged", "mean", 36)]
    assert truths[0].max() != pytest.approx(truths[1].max(), rel=0.1)  # a case where separate scales would differ
    a, b = page.js("explorer.colorScale(0)"), page.js("explorer.colorScale(1)")
    assert a == b
    assert a["hi"] == pytest.approx(max(t.max() for t in truths), rel=0.02)
    assert "one scale for both sides" in page.js("explorer.legend(1)")["scale"]
    page.screenshot(tmp_path, "explorer_compare_shared_scale")
    page.page.locator("#chk-shared").uncheck()
    for side, truth in enumerate(truths):
        assert page.js(f"explorer.colorScale({side})")["hi"] == pytest.approx(truth.max(), rel=0.02)


# ---------- the probe image beside the heatmap ----------

@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])  # 4x4 and 2x2 grids
def test_probe_image_is_shown_unblended_beside_the_heatmap(open_page, whole, tmp_path, stage):
    export = whole["spiral"]
    page = open_page(whole["single"])
    page.choose("#sel-stage", str(stage))
    page.choose("#sel-image", "1")
    page.click_patch(0, 0, 0, GRIDS[stage])
    width, height = canvas_size(page, 'section[data-side="0"] canvas.probe')
    assert (width, height) == canvas_size(page, 'section[data-side="0"] canvas.patches')
    image = export.images[1]  # (64, 64, 3) uint8
    rng = np.random.default_rng(stage)
    cell = width / GRIDS[stage][1]
    checked = 0
    for y, x in rng.integers(0, 64, size=(40, 2)):
        cx, cy = (x + 0.5) * width / 64, (y + 0.5) * height / 64
        near_line = min(cx % cell, cell - cx % cell, cy % cell, cell - cy % cell) < 4
        if near_line or (cx < cell + 4 and cy < cell + 4):  # grid lines, the outlined query patch
            continue
        assert pixel(page, 'section[data-side="0"] canvas.probe', cx, cy) == image[y, x].tolist()
        checked += 1
    assert checked >= 15
    page.screenshot(tmp_path, f"explorer_probe_{GRIDS[stage][0]}x{GRIDS[stage][1]}")


# ---------- blocks mode ----------

@pytest.mark.slow
def test_blocks_mode_is_offered_only_for_stages_with_several_blocks(open_page, whole):
    page = open_page(whole["single"])
    blocks_option = page.page.locator('#sel-mode option[value="blocks"]')
    for stage, several in ((0, False), (1, False), (2, True), (3, False)):
        page.choose("#sel-stage", str(stage))
        assert blocks_option.is_disabled() is not several
        note = page.page.locator("#mode-note").inner_text()
        assert (note == "") is several
        if not several:
            assert f"stage {stage}: one block" in note
            error = page.page.evaluate("() => { try { explorer.setMode('blocks'); return null; } catch (e) { return e.message; } }")
            assert "single cluster" in error and page.js("explorer.state.mode") == "patches"
    page.choose("#sel-stage", "2")
    page.choose("#sel-mode", "blocks")
    assert page.js("explorer.scatterPoints(0)")["kind"] == "blocks"
    page.choose("#sel-stage", "0")  # a single-block stage falls back to the patch scatter
    assert page.js("explorer.state.mode") == "patches"
