"""The metric registry (patchorder.attention.metrics.METRICS): one new entry reaches every consumer, namely
metrics_table, stage_summary, compare_exports, the callbacks' W&B scalars, the explorer's metrics panel and the
ordering study's stage table, markdown and figure, and a non-scalar entry stays in the rows only."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from train_support import REPO

import orderings
from patchorder.attention import AttentionExport, BlockAttention, compare_exports, metrics_table, stage_summary
from patchorder.attention import metrics
from patchorder.attention.metrics import Metric, neighbour_mass, scalar_metrics
from patchorder.artifacts import RenderedAttention
from patchorder.explore.payload import metric_rows

sys.path.insert(0, str(REPO / "experiments"))
from study import analysis, figures, markdown  # noqa: E402

FAR = Metric("far_mass", "mass beyond r=1", "Far mass (share of each row's attention outside the 3x3 neighbourhood)",
             lambda v: 1 - neighbour_mass(v.attn, v.grid, 1))
SHAPE = Metric("route_shape", "routes x length", "Route table shape", lambda v: list(v.block.routes.shape),
               scalar=False)
IDENTITY = ("key", "stage", "block", "grid", "ordering", "blocks")


def synthetic_export() -> AttentionExport:
    rng = np.random.default_rng(0)
    blocks = []
    for stage, grid, count in ((0, (4, 4), 2), (1, (2, 2), 1)):
        routes = orderings.routes("spiral", *grid, "cross4").numpy()
        L = grid[0] * grid[1]
        blocks += [BlockAttention(stage, b, grid, "spiral", rng.random((3, L, L)).astype(np.float32), routes)
                   for b in range(count)]
    return AttentionExport(blocks=blocks, images=np.zeros((3, 8, 8, 3), np.uint8), ordering="spiral")


def test_names_are_unique_and_never_an_identity_column():
    names = [m.name for m in metrics.METRICS]
    assert len(names) == len(set(names)) and not set(names) & set(IDENTITY)
    assert len({m.label for m in metrics.METRICS}) == len(names)


@pytest.fixture
def with_new_entries(monkeypatch):
    monkeypatch.setattr(metrics, "METRICS", [*metrics.METRICS, FAR, SHAPE])


def test_one_entry_reaches_every_consumer(with_new_entries, tmp_path, monkeypatch):
    export = synthetic_export()
    rows = metrics_table(export)
    assert rows[1]["far_mass"] == pytest.approx(1 - rows[1]["neighbour_mass_r1"], abs=1e-12)
    assert rows[1]["route_shape"] == [4, 16] and rows[2]["route_shape"] == [4, 4]
    summary = stage_summary(rows)
    assert summary[0]["far_mass"] == pytest.approx((rows[0]["far_mass"] + rows[1]["far_mass"]) / 2)
    assert "route_shape" not in summary[0]
    compared = compare_exports(export, export)[0]
    assert compared["far_mass_a"] == compared["far_mass_b"] == rows[0]["far_mass"]

    scalars = RenderedAttention({}, rows, summary, {}).scalars()
    assert scalars["s0b1/far_mass"] == rows[1]["far_mass"] and scalars["stage0/far_mass"] == summary[0]["far_mass"]
    assert not any("route_shape" in key for key in scalars)

    shown = metric_rows(export)["s0b1"]
    assert [label for label, _ in shown] == [m.label for m in scalar_metrics()]
    assert dict(shown)["mass beyond r=1"] == rows[1]["far_mass"]

    stage_table = analysis.stage_metrics(analysis.run_metrics({("spiral", 0): export}), ["spiral"])
    assert stage_table["by_ordering"]["spiral"]["0"]["far_mass"]["mean"] == summary[0]["far_mass"]
    assert "route_shape" not in stage_table["by_ordering"]["spiral"]["0"]
    group = {"figures": {}, "attention": {
        "stages": stage_table, "probe": {"num_images": 3, "identical_across_runs": True},
        "within_stage_similarity": {"stages": []}, "ordering_similarity": {"stages": []}}}
    text = "\n".join(markdown.attention_section(group, ["spiral"]))
    assert f"**{FAR.description}**" in text and SHAPE.description not in text
    assert f"| spiral | {summary[0]['far_mass']:.4f} | {summary[1]['far_mass']:.4f} |" in text

    titles = []
    monkeypatch.setattr(figures, "_save", lambda figure, path, dpi: titles.extend(a.get_title() for a in figure.axes))
    figures.attention_metrics(stage_table, ["spiral"], tmp_path / "metrics.png", 40)
    assert [t for t in titles if t] == [m.label for m in scalar_metrics()] and FAR.label in titles
