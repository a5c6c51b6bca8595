"""The explorer's whole-model relevance view: the rollout / attribution / input-gradient / random maps of the
selected image over the probe image, their faithfulness AUCs and the ERF of every stage, read from the
<tag>_relevance.npz that eval.py and the attention callback write beside the export.

Values the page shows are checked against that .npz (float32 stored, so exactly), colours against matplotlib's
inferno; the browser tests need Debian's chromium (see test_explore_browser.py, whose page helpers they share).
"""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from matplotlib import colormaps

import patchorder.models  # noqa: F401  (registers the VMamba presets with timm)
from patchorder.attention.export import save
from patchorder.attention.extract import extract_attention
from patchorder.attention.relevance import write_relevance
from patchorder.explore import build_report, find_export
from test_explore_browser import IMAGES, browser, open_page  # noqa: F401
from test_explore_views import pixel

MAPS = ["rollout", "attribution", "input_gradient", "random"]
TAG = "attention_eval"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A random-weight vmamba_micro at 64 px: its export and, beside it, its relevance file (as eval.py writes)."""
    folder = tmp_path_factory.mktemp("relevance") / "attention"
    torch.manual_seed(0)
    model = timm.create_model("vmamba_micro", ordering="spiral", num_classes=4)
    images = torch.randn(IMAGES, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    export = extract_attention(model, images, labels=[0, 1, 2], class_names=["a", "b", "c", "d"])
    npz = save(folder / f"{TAG}.npz", export)
    write_relevance(model, images, folder, TAG, labels=[0, 1, 2], display=export.images, steps=4)
    plain = save(folder.parent / "plain" / "attention_final.npz", export)  # the same export, no relevance file
    return {
        "npz": npz, "data": dict(np.load(folder / f"{TAG}_relevance.npz")), "export": export,
        "single": build_report(npz, folder / "single.html", methods=("pca",)),
        "plain": build_report(plain, plain.with_suffix(".html"), methods=("pca",)),
        "compare": build_report(npz, folder / "compare.html", compare=plain, methods=("pca",)),
    }


def test_a_run_directory_opens_the_export_not_its_relevance_file(run):
    """The relevance file is written after the export (newer) and matches attention*.npz: it must not be picked."""
    assert find_export(run["npz"].parent) == run["npz"]


@pytest.mark.browser
def test_relevance_of_other_probe_images_is_not_shown(open_page, run, tmp_path):
    """A stale relevance file (other probe images) is left out and the page says why."""
    data = dict(run["data"])
    data["images"] = 255 - data["images"]
    save(tmp_path / f"{TAG}.npz", run["export"])
    np.savez(tmp_path / f"{TAG}_relevance.npz", **data)
    page = open_page(build_report(tmp_path / f"{TAG}.npz", tmp_path / "r.html", methods=("pca",)))
    assert page.js("explorer.relevanceKinds()") == [] and page.js("explorer.erfStages()") == []
    assert page.js("explorer.relevanceValues(0, 'rollout')") is None
    assert "other probe images" in page.js("explorer.relevanceNote()")
    assert page.page.locator('section[data-side="0"] .relevance-view').is_visible()


@pytest.mark.browser
@pytest.mark.parametrize("image", [1, "mean"])
def test_overlay_shows_the_selected_images_map(open_page, run, tmp_path, image):
    data = run["data"]
    page = open_page(run["single"])
    assert page.js("explorer.relevanceKinds()") == MAPS
    assert page.page.locator("#lbl-relevance").is_visible()
    assert page.js("explorer.state.relevance") == "rollout"
    page.js(f"explorer.setImage({image!r})" if image == "mean" else f"explorer.setImage({image})")
    for kind in MAPS:
        truth = data[f"map_{kind}"].astype(np.float64)
        truth = truth.mean(0) if image == "mean" else truth[image]
        np.testing.assert_allclose(page.js("([i, k]) => explorer.relevanceValues(i, k)", [image, kind]),
                                   truth.ravel(), rtol=1e-6, atol=1e-12)
        page.choose("#sel-relevance", kind)  # as a user picks it; the drawn map follows
        shown = page.js("explorer.relevanceShown()")
        assert (shown["kind"], shown["image"]) == (kind, image)
        np.testing.assert_allclose(shown["values"], truth.ravel(), rtol=1e-6, atol=1e-12)
    if image == 1:
        page.screenshot(tmp_path, "explorer_relevance")


@pytest.mark.browser
def test_overlay_colours_are_the_maps_linear_scale(open_page, run):
    """At full opacity each cell is inferno(value / max) of the selected image's map."""
    values = run["data"]["map_attribution"][2]
    page = open_page(run["single"])
    page.js("explorer.setImage(2)")
    page.js("explorer.setRelevance('attribution')")
    page.page.locator("#rng-opacity").fill("1")  # the opacity slider, as a user drags it
    assert page.js("explorer.state.opacity") == 1
    selector = 'section[data-side="0"] canvas.relevance'
    box = page.page.locator(selector).bounding_box()
    h, w = values.shape
    cell = (box["width"] - 2) / w
    for flat in (int(values.argmax()), int(values.argmin()), int(np.argsort(values.ravel())[values.size // 2])):
        r, c = divmod(flat, w)
        expected = np.round(np.asarray(colormaps["inferno"](values[r, c] / values.max())[:3]) * 255)
        got = pixel(page, selector, (c + 0.5) * cell, (r + 0.5) * cell)
        assert np.abs(np.array(got) - expected).max() <= 8, (flat, got, expected)


@pytest.mark.browser
def test_faithfulness_table_and_erf_per_stage(open_page, run):
    data = run["data"]
    page = open_page(run["single"])
    rows = page.page.locator('section[data-side="0"] .faithfulness tr[data-map]')
    assert rows.count() == len(MAPS)
    aucs = {k: (np.trapezoid(data[f"deletion_{k}"], data["fractions"], axis=-1).mean(),
                np.trapezoid(data[f"insertion_{k}"], data["fractions"], axis=-1).mean()) for k in MAPS}
    best_deletion = min(aucs, key=lambda k: aucs[k][0])
    for kind, (deletion, insertion) in aucs.items():
        cells = page.page.locator(f'section[data-side="0"] .faithfulness tr[data-map="{kind}"] td').all_inner_texts()
        assert float(cells[1].split()[0]) == pytest.approx(deletion, rel=1e-3)
        assert float(cells[2].split()[0]) == pytest.approx(insertion, rel=1e-3)
        assert ("✓" in cells[1]) == (kind == best_deletion)
    assert page.js("explorer.erfStages()") == [0, 1, 2, 3]
    for stage in range(4):
        np.testing.assert_allclose(page.js(f"explorer.erfValues({stage})"), data[f"erf_stage{stage}"].ravel(),
                                   rtol=1e-6)
        figure = page.page.locator(f'section[data-side="0"] .erf figure[data-stage="{stage}"]')
        assert figure.locator("canvas").is_visible()
        assert f"stage {stage}: sum" in figure.inner_text()


@pytest.mark.browser
def test_without_a_relevance_file_the_view_is_absent(open_page, run):
    page = open_page(run["plain"])
    assert page.js("explorer.relevanceKinds()") == [] and page.js("explorer.erfStages()") == []
    assert page.js("explorer.relevanceValues(0, 'rollout')") is None
    assert not page.page.locator("#lbl-relevance").is_visible()
    assert not page.page.locator('section[data-side="0"] .relevance-view').is_visible()
    page = open_page(run["compare"])  # left has the maps, right has none
    assert page.page.locator('section[data-side="0"] .relevance-view').is_visible()
    assert not page.page.locator('section[data-side="1"] .relevance-view').is_visible()
    assert page.js("explorer.relevanceValues(0, 'rollout', 1)") is None
    np.testing.assert_allclose(page.js("explorer.relevanceValues(0, 'rollout', 0)"),
                               run["data"]["map_rollout"][0].ravel(), rtol=1e-6)
