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
    run = run_script("train.py", [*TINY, "trainer.max_epochs=1", "test=false", "logger=csv", "cpu_threads=1",
                                  f"paths.output_dir={root}/run"], root, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return root / "run/checkpoints/last.ckpt"


def test_eval_writes_relevance_maps_curves_and_erfs(checkpoint, tmp_path):
    run = run_script("eval.py", [f"ckpt_path={checkpoint}", f"paths.output_dir={tmp_path}", "split=val",
                                 "trainer.limit_test_batches=1", "attention.attribution=true",
                                 "attention.num_images=3", "attention.attribution_steps=8", "cpu_threads=1"],
                     tmp_path, timeout=900)
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
                                 "attention.attribution=true", "attention.attribution_steps=0", "cpu_threads=1"],
                     tmp_path, timeout=900)
    assert run.returncode != 0
    assert "attention.attribution_steps=0" in run.stderr + run.stdout


def test_attention_callback_logs_relevance_overlays_and_scalars(tmp_path):
    """A real training run with callbacks.attention.attribution=true, W&B offline (read back with wandb's reader):
    the overlays are logged per map and image, the AUCs and ERF areas equal the written JSON, CSV has them too."""
    from hydra import compose, initialize_config_dir
    from train_support import CONF_DIR, read_csv_rows, wandb_records

    from patchorder.training import run as train_job

    run_dir = tmp_path / "run"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.root_dir={tmp_path}", f"paths.output_dir={run_dir}", "data.batch_size=32", "data.image_size=32",
            "cpu_threads=1", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
            "trainer.num_sanity_val_steps=0", "test=false", "trainer.enable_progress_bar=false",
            "callbacks.embedding=null", "callbacks.attention.every_n_epochs=0", "callbacks.attention.report=false",
            "callbacks.attention.num_images=2", "callbacks.attention.attribution=true"])
    results = train_job.train(cfg)
    assert results["status"] == "completed"
    summary = json.loads((run_dir / "attention/attention_final_relevance.json").read_text())
    history = [r["history"]["item"] for r in wandb_records(results["wandb"]["run_file"]) if r["type"] == "history"]
    rows = [item for item in history if "attention/relevance/rollout._type" in item
            or "attention/relevance/rollout" in item]
    assert len(rows) == 1
    row = rows[0]
    for name in MAPS:
        assert any(k.startswith(f"attention/relevance/{name}") for k in row), name
    csv_rows = read_csv_rows(run_dir / "csv/metrics.csv")
    for entry in summary["faithfulness"]:
        key = f"attention/faithfulness/{entry['map']}/deletion_auc"
        np.testing.assert_allclose(row[key], entry["deletion_auc"], rtol=1e-6)
        assert any(r.get(key) not in (None, "") and np.isclose(float(r[key]), entry["deletion_auc"]) for r in csv_rows)
    assert "attention/erf/stage3/area_50" in row


def test_overlay_blends_the_enlarged_colour_map_over_the_image():
    from matplotlib import colormaps

    from patchorder.attention.relevance import overlay

    image = np.full((4, 4, 3), 200, dtype=np.uint8)
    relevance = np.array([[0.0, 2.0], [1.0, 0.5]])
    picture = overlay(image, relevance, alpha=0.5)
    expected_cell = (0.5 * 200 / 255 + 0.5 * np.array(colormaps["inferno"](0.5)[:3])) * 255
    np.testing.assert_array_equal(picture[2:4, 0:2], np.broadcast_to(expected_cell.round(), (2, 2, 3)))
    assert picture.dtype == np.uint8 and picture.shape == (4, 4, 3)


def test_eval_explorer_shows_the_relevance_it_wrote(checkpoint, tmp_path):
    """attention.report=true with attribution: the relevance file is written first, so the explorer embeds it."""
    import re

    run = run_script("eval.py", [f"ckpt_path={checkpoint}", f"paths.output_dir={tmp_path}", "split=val",
                                 "trainer.limit_test_batches=1", "attention.attribution=true", "attention.report=true",
                                 "attention.num_images=2", "attention.attribution_steps=4", "attention.stages=[3]",
                                 "cpu_threads=1"], tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    paths = json.loads((tmp_path / "results.json").read_text())["attention"]
    page = open(paths["report"]).read()
    payload = json.loads(re.search(r'<script id="explorer-data" type="application/json">(.*?)</script>', page,
                                   re.S).group(1))
    relevance = payload["sides"][0]["relevance"]
    assert relevance is not None and "problem" not in relevance
    assert sorted(relevance["names"]) == sorted(MAPS) and relevance["grid"] == [8, 8]
    assert [e["stage"] for e in relevance["erf"]] == [0, 1, 2, 3]
    data = np.load(paths["relevance_npz"])
    for entry in relevance["erf"]:
        np.testing.assert_allclose(entry["sum"], data[f"erf_stage{entry['stage']}"].sum(), rtol=1e-5)
