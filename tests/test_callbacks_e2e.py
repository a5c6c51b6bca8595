"""The logging callbacks in real training runs (in-process, vmamba_micro on 32 px digits, 2 batches, 1 epoch) and
eval.py's attention export: the offline W&B run (read back with wandb's own reader) and the run directory agree
with each other, with metrics_table of the saved .npz, with colour maps applied by hand, and with features
recomputed from the checkpoint."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from matplotlib import colormaps
from PIL import Image
from train_support import CONF_DIR, read_csv_rows, read_json, wandb_records

from patchorder.attention import load, metrics_table
from patchorder.artifacts.render import BLOCK_COLUMNS, PATCH_COLUMNS
from patchorder.callbacks.embedding import LABEL_COLUMNS, pooled_features
from patchorder.training import evaluate as evaluate_job
from patchorder.training import run as train_job
from patchorder.training.checkpoints import load_hyper_parameters

pytestmark = pytest.mark.slow

GRIDS = {"s0b0": (8, 8), "s1b0": (4, 4), "s2b0": (2, 2), "s2b1": (2, 2), "s3b0": (1, 1)}  # micro at 32 px
NUM_IMAGES, NUM_SAMPLES = 4, 40
QUERIES = "[centre,corner,[3,5],[0.25,0.75]]"
RUN = [
    "data.batch_size=32", "data.image_size=32", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0", "test=false",
    "trainer.enable_progress_bar=false", "callbacks.model_summary=null",
    f"callbacks.attention.num_images={NUM_IMAGES}", f"callbacks.attention.query_patches={QUERIES}",
    f"callbacks.embedding.num_samples={NUM_SAMPLES}",
]


def compose_cfg(name: str, root: Path, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=[f"paths.root_dir={root}", *overrides])


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    """W&B (offline) + CSV, attention after epoch 0 and at the end (same weights: max_steps ends the run after
    epoch 0 of 2), explorer report on."""
    root = tmp_path_factory.mktemp("cb_wandb")
    run_dir = root / "outputs/day/run"
    results = train_job.train(compose_cfg("train", root, [
        f"paths.output_dir={run_dir}", *RUN, "trainer.max_epochs=2", "trainer.max_steps=2",
        "callbacks.attention.every_n_epochs=1",
        "callbacks.attention.per_image_matrices=true",
        "callbacks.attention.report_methods=[pca]"]))
    assert results["status"] == "completed"
    records = wandb_records(results["wandb"]["run_file"])
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    return run_dir, results, history, Path(results["wandb"]["run_dir"]) / "files"


def logged(history: list[dict], key: str) -> list[dict]:
    """Every history row that logged ``key`` (a media value appears as key._type, key.path, ...)."""
    return [{k[len(key) + 1:] if k.startswith(key + ".") else k: v for k, v in item.items()}
            for item in history if key in item or f"{key}._type" in item]


def png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def log_colours(values: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """inferno of |v| / max on a log scale with the given floor, as uint8 (what the pictures promise)."""
    v = np.abs(values.astype(np.float64))
    unit = np.clip(1 + np.log10(np.maximum(v / v.max(), floor)) / -np.log10(floor), 0, 1)
    return (colormaps["inferno"](unit)[..., :3] * 255).round().astype(np.uint8)


def test_run_directory_holds_the_exports(wandb_run):
    run_dir, _, _, _ = wandb_run
    out = run_dir / "attention"
    for tag in ("attention_epoch000", "attention_final"):
        assert (out / f"{tag}.npz").is_file() and (out / f"{tag}_metrics.json").is_file()
        assert (out / f"{tag}_embeddings.csv").is_file() and (out / f"{tag}_images").is_dir()
    assert (out / "attention_final.html").stat().st_size > 10_000
    epoch, final = load(out / "attention_epoch000.npz"), load(out / "attention_final.npz")
    assert {b.key: b.grid for b in final.blocks} == GRIDS
    for a, b in zip(epoch.blocks, final.blocks):
        L = b.grid[0] * b.grid[1]
        assert b.attn.shape == (NUM_IMAGES, L, L) and b.routes.shape == (4, L)  # cross4: four routes
        assert np.array_equal(a.attn, b.attn)  # one epoch: the final weights are the epoch-0 weights
    assert final.images.shape == (NUM_IMAGES, 32, 32, 3) and final.images.dtype == np.uint8
    assert final.labels == [0, 1, 2, 3] and final.class_names == [str(d) for d in range(10)]


def test_metrics_in_wandb_csv_and_json_equal_metrics_table_of_the_npz(wandb_run):
    run_dir, results, history, _ = wandb_run
    final = load(run_dir / "attention/attention_final.npz")
    rows = metrics_table(final)
    document = read_json(run_dir / "attention/attention_final_metrics.json")
    assert document["blocks"] == rows and (document["global_step"], document["epochs_completed"]) == (2, 1)
    assert read_json(run_dir / "attention/attention_epoch000_metrics.json")["epoch"] == 0
    (item,) = logged(history, "attention/s0b0/distance")  # once: the final log reuses epoch 0's, same step
    csv_rows = [r for r in read_csv_rows(Path(results["csv"])) if r.get("attention/s0b0/distance")]
    assert len(csv_rows) == 1
    for row in rows:
        for name in ("distance", "neighbour_mass_r1", "neighbour_mass_r2", "coherence", "similarity_previous"):
            key = f"attention/{row['key']}/{name}"
            if row[name] is None:
                assert key not in item
                continue
            assert item[key] == pytest.approx(row[name], rel=1e-9)
            assert float(csv_rows[0][key]) == pytest.approx(row[name], rel=1e-9)
    assert item["attention/stage2/distance"] == pytest.approx(np.mean([rows[2]["distance"], rows[3]["distance"]]))
    assert item["trainer/global_step"] == 2


def test_matrix_pictures_are_colour_mapped_attention(wandb_run):
    run_dir, _, history, files = wandb_run
    final = load(run_dir / "attention/attention_final.npz")
    (item,) = logged(history, "attention/s0b0/matrix")
    assert item["_type"] == "image-file" and (item["width"], item["height"]) == (256, 256)
    picture = png(files / item["path"])
    assert picture.dtype == np.uint8 and picture.std() > 10  # not blank
    assert np.array_equal(picture, png(run_dir / "attention/attention_final_images/s0b0_matrix.png"))
    mean = final.block(0, 0).attn.astype(np.float64).mean(axis=0)  # 64 x 64, enlarged x4
    assert np.array_equal(picture[2::4, 2::4], log_colours(mean))
    (per_image,) = logged(history, "attention/s1b0/matrix_per_image")
    assert per_image["_type"] == "images/separated" and per_image["count"] == NUM_IMAGES
    first = png(files / per_image["filenames"][0])
    assert np.array_equal(first[8::16, 8::16], log_colours(final.block(1, 0).attn[0]))  # 16 x 16, enlarged x16


def test_patch_heatmaps_blend_the_query_row_over_each_probe_image(wandb_run):
    run_dir, _, history, files = wandb_run
    final = load(run_dir / "attention/attention_final.npz")
    # centre -> (4, 4), corner -> (0, 0), stage-0 patch (3, 5), fractions (0.25, 0.75) -> (2, 6) on 8 x 8;
    # the same points on the 2 x 2 grid: (1, 1), (0, 0), (0, 1) (twice: logged once)
    assert {k.split(".")[0] for item in history for k in item if k.startswith("attention/s0b0/patch_")} == {
        f"attention/s0b0/patch_r{r}c{c}" for r, c in [(4, 4), (0, 0), (3, 5), (2, 6)]}
    assert {k.split(".")[0] for item in history for k in item if k.startswith("attention/s2b1/patch_")} == {
        f"attention/s2b1/patch_r{r}c{c}" for r, c in [(1, 1), (0, 0), (0, 1)]}
    (item,) = logged(history, "attention/s0b0/patch_r3c5")
    assert item["count"] == NUM_IMAGES and item["captions"] == [f"image {n}: {n}" for n in range(NUM_IMAGES)]
    panels = [png(files / name) for name in item["filenames"]]
    strip = png(run_dir / "attention/attention_final_images/s0b0_patch_r3c5.png")
    assert strip.shape == (256, NUM_IMAGES * 256 + (NUM_IMAGES - 1) * 2, 3)
    for n, panel in enumerate(panels):
        assert panel.shape == (256, 256, 3) and np.array_equal(panel, strip[:, n * 258:n * 258 + 256])
        # Expected: 0.4 * image + 0.6 * colour of the query's row; one patch = 4 image pixels = 32 panel pixels.
        row = final.block(0, 0).attn[n, 3 * 8 + 5].reshape(8, 8)
        colours = np.repeat(np.repeat(log_colours(row), 32, axis=0), 32, axis=1).astype(np.float64)
        image = np.repeat(np.repeat(final.images[n], 8, axis=0), 8, axis=1).astype(np.float64)
        expected = np.round(0.4 * image + 0.6 * colours)
        outline = np.zeros((256, 256), bool)
        outline[96:128, 160:192] = True
        outline[100:124, 164:188] = False  # the query patch's 4-pixel white frame
        assert np.array_equal(panel[~outline], expected[~outline])
        assert (panel[outline] == 255).all()


def test_embedding_tables_and_scatter_charts(wandb_run):
    run_dir, _, history, files = wandb_run
    final = load(run_dir / "attention/attention_final.npz")
    with open(run_dir / "attention/attention_final_embeddings.csv", newline="") as handle:
        saved = list(csv.DictReader(handle))
    for key, (height, width) in GRIDS.items():
        (item,) = logged(history, f"attention/{key}/patches_pca_table")
        assert (item["nrows"], item["ncols"]) == (height * width, len(PATCH_COLUMNS))
        table = json.loads((files / item["path"]).read_text())
        assert table["columns"] == PATCH_COLUMNS
        stage, block = int(key[1]), int(key[3])
        order = final.block(stage, block).routes[0]
        for patch, (s, b, p, r, c, seq, x, y, method) in enumerate(table["data"]):
            assert (s, b, p, r, c, method) == (stage, block, patch, patch // width, patch % width, "pca")
            assert order[seq] == patch  # seq_pos: where the forward route visits the patch
        mine = [r for r in saved if r["mode"] == "patches" and (r["stage"], r["block"]) == (str(stage), str(block))]
        assert np.array_equal([[float(r["x"]), float(r["y"])] for r in mine], [row[6:8] for row in table["data"]])
    (item,) = logged(history, "attention/stage2/blocks_pca_table")
    table = json.loads((files / item["path"]).read_text())
    assert table["columns"] == BLOCK_COLUMNS and len(table["data"]) == 2 * NUM_IMAGES  # blocks x images
    assert [row[1:5] for row in table["data"]] == [[b, n, n, str(n)] for b in (0, 1) for n in range(NUM_IMAGES)]
    chart_config = [r for r in wandb_records_config(run_dir) if "attention/s0b0/patches_pca" in r]
    assert chart_config, "the scatter chart's panel config is in the run config"


def wandb_records_config(run_dir: Path) -> list[str]:
    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    return [json.dumps(r["config"]) for r in wandb_records(run_file) if r["type"] == "config"]


def test_report_logged_as_html(wandb_run):
    run_dir, _, history, files = wandb_run
    (item,) = logged(history, "attention/report")
    assert item["_type"] == "html-file"
    assert (files / item["path"]).read_bytes() == (run_dir / "attention/attention_final.html").read_bytes()


def test_feature_table_equals_features_recomputed_from_the_checkpoint(wandb_run):
    run_dir, results, history, files = wandb_run
    (item,) = logged(history, "embeddings/features")
    assert (item["nrows"], item["ncols"]) == (NUM_SAMPLES, len(LABEL_COLUMNS) + 256)
    table = json.loads((files / item["path"]).read_text())
    assert table["columns"] == LABEL_COLUMNS + [f"f{d}" for d in range(256)]
    saved = np.load(run_dir / "embeddings/features_final.npz")
    assert np.allclose(np.array([row[6:] for row in table["data"]]), saved["features"], rtol=1e-6, atol=1e-6)
    assert [row[1] for row in table["data"]] == saved["labels"].tolist()
    with open(run_dir / "embeddings/features_final.csv", newline="") as handle:
        assert sum(1 for _ in csv.reader(handle)) == NUM_SAMPLES + 1
    # Oracle: the last checkpoint's model on the same sample.
    ckpt = results["checkpoints"]["last"]
    module = evaluate_job.load_module(ckpt, load_hyper_parameters(ckpt), load_hyper_parameters(ckpt)["ordering"],
                                      use_ema=False)
    from patchorder.training import builders

    datamodule = builders.build_datamodule(compose_cfg("train", run_dir, RUN).data, resumable=False)
    images, labels = datamodule.probe_batch(NUM_SAMPLES)
    features, logits = pooled_features(module.model, images)
    assert np.allclose(saved["features"], features, atol=1e-5)
    assert np.array_equal(saved["predictions"], logits.argmax(1)) and np.array_equal(saved["labels"], labels)
    (acc,) = logged(history, "embeddings/sample_acc1")
    assert acc["embeddings/sample_acc1"] == pytest.approx(float((logits.argmax(1) == labels.numpy()).mean()))


def test_eval_export_of_the_checkpoint_equals_the_final_attention(wandb_run, tmp_path):
    run_dir, results, _, _ = wandb_run
    cfg = compose_cfg("eval", tmp_path, [
        f"ckpt_path={results['checkpoints']['last']}", f"paths.output_dir={tmp_path}", "split=val",
        "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false", "attention.export=true",
        f"attention.num_images={NUM_IMAGES}", f"attention.query_patches={QUERIES}"])
    evaluated = evaluate_job.evaluate(cfg)
    paths = evaluated["attention"]
    assert read_json(tmp_path / "results.json")["attention"] == paths
    assert Path(paths["npz"]) == tmp_path / "attention/attention_eval.npz" and "report" not in paths
    ours, trained = load(paths["npz"]), load(run_dir / "attention/attention_final.npz")
    assert [b.key for b in ours.blocks] == [b.key for b in trained.blocks]
    for a, b in zip(ours.blocks, trained.blocks):  # same weights, same probe images
        assert np.allclose(a.attn, b.attn, rtol=1e-5, atol=1e-7)
    assert np.array_equal(ours.images, trained.images) and ours.labels == trained.labels
    assert read_json(Path(paths["metrics"]))["blocks"] == metrics_table(ours)
    assert set(paths["images"]) == {f"{k[:-4].replace('_', '/', 1)}" for k in
                                    (p.name for p in (run_dir / "attention/attention_final_images").iterdir())
                                    if "per_image" not in k}
    for key, path in paths["images"].items():
        assert png(Path(path)).shape[0] == 256, key
    assert evaluated["status"] == "completed" and 0 <= evaluated["metrics"]["acc1"] <= 1


def test_csv_only_run_writes_the_same_files(tmp_path):
    run_dir = tmp_path / "outputs/day/csv"
    results = train_job.train(compose_cfg("train", tmp_path, [
        f"paths.output_dir={run_dir}", *RUN, "logger=csv", "callbacks.attention.every_n_epochs=0",
        "callbacks.attention.report=false", "callbacks.attention.stages=[0,2]", "callbacks.attention.blocks=[1]"]))
    assert results["status"] == "completed" and results.get("wandb") is None
    assert not (run_dir / "wandb").exists()
    out = run_dir / "attention"
    assert sorted(p.name for p in out.iterdir()) == ["attention_final.npz", "attention_final_embeddings.csv",
                                                     "attention_final_images", "attention_final_metrics.json"]
    final = load(out / "attention_final.npz")
    assert [(b.key, b.attn.shape) for b in final.blocks] == [("s2b1", (NUM_IMAGES, 4, 4))]
    rows = metrics_table(final)
    logged_rows = [r for r in read_csv_rows(Path(results["csv"])) if r.get("attention/s2b1/distance")]
    assert len(logged_rows) == 1 and float(logged_rows[0]["attention/s2b1/distance"]) == pytest.approx(
        rows[0]["distance"], rel=1e-9)
    assert float(logged_rows[0]["attention/stage2/coherence"]) == pytest.approx(rows[0]["coherence"], rel=1e-9)
    assert png(out / "attention_final_images/s2b1_matrix.png").shape == (256, 256, 3)
    features = np.load(run_dir / "embeddings/features_final.npz")
    assert features["features"].shape == (NUM_SAMPLES, 256)
    assert torch.load(results["checkpoints"]["last"], weights_only=True)["global_step"] == 2
