"""``eval.py ckpt_path=... attention.attribution=true`` end to end: a short real training run, then eval.py as a
user runs it, writing the relevance maps, their faithfulness curves and the ERFs of a checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest
from train_support import TINY, run_script

pytestmark = pytest.mark.slow

MAPS = ("rollout", "attribution", "input_gradient", "random")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("attr_train")
    run = run_script("train.py", [*TINY, "trainer.max_epochs=1", "test=false", "logger=csv",
                                  f"paths.output_dir={root}/run"], root)
    assert run.returncode == 0, run.stderr[-3000:]
    return root / "run/checkpoints/last.ckpt"


def test_eval_writes_relevance_maps_curves_and_erfs(checkpoint, tmp_path):
    run = run_script("eval.py", [f"ckpt_path={checkpoint}", f"paths.output_dir={tmp_path}", "split=val",
                                 "trainer.limit_test_batches=1", "attention.attribution=true",
                                 "attention.num_images=3", "attention.attribution_steps=8"], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    paths = results["attention"]
    assert "npz" not in paths  # only the relevance views were asked for
    data = np.load(paths["relevance_npz"])
    summary = json.loads(open(paths["relevance_json"]).read())
    assert data["images"].shape == (3, 32, 32, 3) and data["labels"].shape == (3,)
    for name in MAPS:
        assert data[f"map_{name}"].shape == (3, 8, 8) and (data[f"map_{name}"] >= 0).all()
        deletion, insertion = data[f"deletion_{name}"], data[f"insertion_{name}"]
        assert deletion.shape == insertion.shape == (3, 9)
        # nothing deleted = everything inserted = the untouched image; everything deleted = nothing inserted
        np.testing.assert_allclose(deletion[:, 0], insertion[:, -1], rtol=1e-5)
        np.testing.assert_allclose(deletion[:, -1], insertion[:, 0], rtol=1e-5)
        np.testing.assert_allclose(deletion[:, 0], data["deletion_rollout"][:, 0], rtol=1e-5)
    for name in ("rollout", "attribution"):
        np.testing.assert_allclose(data[f"map_{name}"].sum((1, 2)), 1.0, rtol=1e-4)
    np.testing.assert_allclose(data["fractions"], np.arange(9) / 8)
    for stage in range(4):
        erf = data[f"erf_stage{stage}"]
        assert erf.shape == (32, 32) and (erf >= 0).all() and erf.sum() > 0
    table = summary["faithfulness"]
    assert sorted(r["map"] for r in table) == sorted(MAPS)
    assert [r["deletion_auc"] for r in table] == sorted(r["deletion_auc"] for r in table)
    for row in table:
        np.testing.assert_allclose(row["deletion_auc"], np.trapezoid(data[f"deletion_{row['map']}"], dx=1 / 8).mean())
    assert [r["stage"] for r in summary["erf"]] == [0, 1, 2, 3]


def test_bad_attribution_steps_fail_before_any_work(checkpoint, tmp_path):
    run = run_script("eval.py", [f"ckpt_path={checkpoint}", f"paths.output_dir={tmp_path}",
                                 "attention.attribution=true", "attention.attribution_steps=0"], tmp_path)
    assert run.returncode != 0
    assert "attention.attribution_steps=0" in run.stderr + run.stdout
