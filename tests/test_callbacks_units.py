"""Unit tests of the logging callbacks' parts: pictures against colour-map constants and brute-force layouts, query
patches against grid containment, files against metrics_table / PCA of the saved export, rank-0-only behaviour,
W&B payloads and artifacts with a recording run, pooled features against the model's own logits."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

import patchorder.models  # noqa: F401  registers the VMamba presets with timm
from patchorder.attention import AttentionExport, BlockAttention, load, metrics_table, stage_summary
from patchorder.artifacts import (
    AttentionOptions, check_selection, make_options, pictures, write_attention_artifacts,
)
from patchorder.artifacts.render import BLOCK_COLUMNS, PATCH_COLUMNS
from patchorder.callbacks import AttentionLogger, EmbeddingLogger
from patchorder.callbacks.embedding import pooled_features
from patchorder.callbacks.wandb_media import attention_payload, log_attention
from patchorder.errors import ConfigError

VIRIDIS_0, VIRIDIS_1 = (68, 1, 84), (253, 231, 37)  # matplotlib's viridis end points (published values)


# --- pictures ------------------------------------------------------------------------------------------------
def test_normalise_log_and_linear_scales():
    values = np.array([0.0, -5e-4, 5e-3, 5 * 10**-1.5, -5.0])  # |.| / max = 0, 1e-4, 1e-3, 10^-1.5, 1
    assert pictures.normalise(values, "log", 1e-3) == pytest.approx([0, 0, 0, 0.5, 1])
    assert pictures.normalise(values, "log", 1e-2) == pytest.approx([0, 0, 0, 0.25, 1])
    assert pictures.normalise(values, "linear") == pytest.approx([0, 1e-4, 1e-3, 10**-1.5, 1])
    assert not pictures.normalise(np.zeros(3)).any()  # no mass: all zero, no division by zero


def test_colorize_gives_uint8_colours_of_the_map():
    out = pictures.colorize(np.array([[0.0, 1.0], [-3.0, 7.0]]), "viridis")  # out-of-range values are clipped
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert [tuple(p) for p in out.reshape(-1, 3)] == [VIRIDIS_0, VIRIDIS_1, VIRIDIS_0, VIRIDIS_1]


def test_matrix_picture_enlarges_small_matrices_cell_by_cell():
    matrix = np.array([[1.0, 0.0], [0.0, 0.0]])
    pic = pictures.matrix_picture(matrix, cmap="viridis", scale="linear", min_px=8, max_px=64)
    assert pic.shape == (8, 8, 3) and pic.dtype == np.uint8
    assert (pic[:4, :4] == VIRIDIS_1).all() and (pic[4:, :] == VIRIDIS_0).all() and (pic[:, 4:] == VIRIDIS_0).all()


def test_matrix_picture_pools_large_matrices_over_tiles():
    rng = np.random.default_rng(0)
    matrix = rng.random((10, 10))
    pic = pictures.matrix_picture(matrix, cmap="viridis", scale="linear", min_px=1, max_px=4)  # tiles of 3 x 3
    assert pic.shape == (4, 4, 3)
    pooled = np.array([[matrix[3 * i:3 * i + 3, 3 * j:3 * j + 3].mean() for j in range(4)] for i in range(4)])
    assert np.array_equal(pic, pictures.colorize(pooled / pooled.max(), "viridis"))


def test_heatmap_blends_the_query_row_over_the_image_and_outlines_the_query():
    image = np.full((8, 8, 3), 100, dtype=np.uint8)
    row = np.array([0.0, 0.0, 0.0, 1.0])  # 2 x 2 grid: all attention on patch (1, 1)
    pic = pictures.heatmap_picture(image, row, (2, 2), query=(0, 0), cmap="viridis", scale="linear", alpha=0.5,
                                 min_px=16)
    assert pic.shape == (16, 16, 3) and pic.dtype == np.uint8  # enlarged x2; one patch = 8 x 8 pixels
    blend = lambda colour: np.round(0.5 * 100 + 0.5 * np.array(colour))  # noqa: E731
    assert (pic[9:15, 9:15] == blend(VIRIDIS_1)).all()  # inside patch (1, 1)
    assert (pic[9:15, 1:7] == blend(VIRIDIS_0)).all()  # inside patch (1, 0)
    assert (pic[0, 0:8] == 255).all() and (pic[0:8, 7] == 255).all()  # white outline of the query patch (0, 0)
    assert (pic[2:6, 2:6] == blend(VIRIDIS_0)).all()  # its inside keeps the heatmap


def test_strip_puts_pictures_side_by_side_with_gaps():
    a, b = np.zeros((3, 2, 3), np.uint8), np.ones((3, 4, 3), np.uint8)
    out = pictures.strip([a, b], gap=2)
    assert out.shape == (3, 8, 3) and (out[:, 2:4] == 255).all() and (out[:, 4:] == 1).all()


def test_query_cells_follow_the_stage0_patch_through_coarser_grids():
    for r in range(8):
        for c in range(8):
            (point,) = pictures.resolve_queries([[r, c]], (8, 8))
            for side in (8, 4, 2, 1):  # brute force: the cell whose pixel span contains the stage-0 patch
                assert pictures.query_cell(point, (side, side)) == (r * side // 8, c * side // 8)
    named = pictures.resolve_queries(["centre", "corner", "bottom_right", [0.5, 0.25], [1.0, 0.0]], (8, 8))
    assert [pictures.query_cell(p, (8, 8)) for p in named] == [(4, 4), (0, 0), (7, 7), (4, 2), (7, 0)]
    assert [pictures.query_cell(p, (6, 4)) for p in named] == [(3, 2), (0, 0), (5, 3), (3, 1), (5, 0)]


@pytest.mark.parametrize("spec, message", [
    ([8, 0], "outside the stage-0 grid of 8 x 8"), ("middle", "unknown query patch 'middle'"),
    ([1.5, 0.2], "must lie in"), ([1, 2, 3], "must be a name"), ([-1, 0], ">= 0"), ([True, 0], "must be a name"),
])
def test_bad_query_patches_are_rejected_with_the_reason(spec, message):
    with pytest.raises(ValueError, match=message):
        pictures.resolve_queries([spec], (8, 8))


@pytest.mark.parametrize("settings, message", [
    ({"colour": "red"}, r"unknown setting\(s\) \['colour'\]"), ({"num_images": 0}, "positive integer"),
    ({"merge": "mean"}, "merge='mean'"), ({"methods": ["mds"]}, "unknown"), ({"npz_dtype": "int8"}, "npz_dtype"),
    ({"stages": [-1]}, "indices >= 0"), ({"stages": "all"}, "list of indices"),
    ({"min_px": 64, "max_px": 32}, "min_px"),
    ({"scale": "sqrt"}, "colour scale"), ({"cmap": "nope"}, "colour map"), ({"log_floor": 2.0}, "log_floor"),
    ({"query_patches": ["middle"]}, "unknown query patch"), ({"embeddings": True, "methods": []}, "at least one"),
])
def test_bad_options_fail_with_a_config_error(settings, message):
    with pytest.raises(ConfigError, match=message):
        make_options(settings, "test")


# --- files from a synthetic export -----------------------------------------------------------------------------
def synthetic_export(num_images: int = 3) -> AttentionExport:
    """Stage 0 (4 x 4 grid, 2 blocks) and stage 1 (2 x 2, 1 block), snake order in stage 0, known labels."""
    rng = np.random.default_rng(1)
    snake = np.array([0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11, 15, 14, 13, 12])
    blocks = [BlockAttention(0, b, (4, 4), "snake", rng.random((num_images, 16, 16)).astype(np.float32),
                             np.stack([snake, snake[::-1]])) for b in range(2)]
    blocks.append(BlockAttention(1, 0, (2, 2), "snake", rng.random((num_images, 4, 4)).astype(np.float32),
                                 np.array([[0, 1, 3, 2]])))
    images = rng.integers(0, 256, (num_images, 16, 16, 3), dtype=np.uint8)
    return AttentionExport(blocks, images, model="synthetic", ordering="snake", labels=[2, 0, 1][:num_images],
                           class_names=["zero", "one", "two"])


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    export = synthetic_export()
    options = AttentionOptions(num_images=3, query_patches=["centre", [0, 3]], per_image_matrices=True,
                               methods=["pca"], min_px=64)
    out = tmp_path_factory.mktemp("files")
    return export, write_attention_artifacts(export, out, "attention_final", options, meta={"epoch": 4}), out


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def test_written_files_and_pictures(written):
    export, result, out = written
    assert {p.name for p in out.iterdir()} == {"attention_final.npz", "attention_final_metrics.json",
                                              "attention_final_embeddings.csv", "attention_final_images"}
    images = result.paths["images"]
    # centre -> (2, 2) in 4 x 4 and (1, 1) in 2 x 2; stage-0 patch (0, 3) -> (0, 3) and (0, 1)
    assert set(images) == {"s0b0/matrix", "s0b1/matrix", "s1b0/matrix", "s0b0/matrix_per_image",
                           "s0b1/matrix_per_image", "s1b0/matrix_per_image", "s0b0/patch_r2c2", "s0b0/patch_r0c3",
                           "s0b1/patch_r2c2", "s0b1/patch_r0c3", "s1b0/patch_r1c1", "s1b0/patch_r0c1"}
    matrix = read_png(images["s0b0/matrix"])
    assert matrix.shape == (64, 64, 3) and matrix.dtype == np.uint8 and matrix.std() > 0
    # Cell (q, k) of the picture is the colour of the image-mean attention (log scale, floor 1e-3).
    mean = export.blocks[0].attn.astype(np.float64).mean(axis=0)
    expected = pictures.colorize(np.clip(1 + np.log10(np.maximum(mean / mean.max(), 1e-3)) / 3, 0, 1), "inferno")
    assert np.array_equal(matrix[2::4, 2::4], expected)
    heat = read_png(images["s0b0/patch_r0c3"])  # three panels of 64 px, 2 px gaps
    assert heat.shape == (64, 3 * 64 + 2 * 2, 3)
    assert read_png(images["s0b0/matrix_per_image"]).shape == (64, 3 * 64 + 2 * 2, 3)


def test_written_npz_metrics_and_embeddings_agree_with_the_export(written):
    export, result, out = written
    loaded = load(out / "attention_final.npz")
    for a, b in zip(export.blocks, loaded.blocks):
        assert a.key == b.key and np.array_equal(a.attn, b.attn) and np.array_equal(a.routes, b.routes)
    document = json.loads((out / "attention_final_metrics.json").read_text())
    rows = metrics_table(loaded)
    assert document["blocks"] == rows and document["stages"] == stage_summary(rows)
    assert document["epoch"] == 4 and document["labels"] == [2, 0, 1] and document["npz"] == "attention_final.npz"
    scalars = result.rendered.scalars()
    assert scalars["s0b1/distance"] == rows[1]["distance"] and scalars["s0b1/similarity_previous"] == \
        rows[1]["similarity_previous"]
    assert "s0b0/similarity_previous" not in scalars  # None (first block of its stage) is not a number
    assert scalars["stage0/neighbour_mass_r1"] == pytest.approx(np.mean([r["neighbour_mass_r1"] for r in rows[:2]]))

    with open(out / "attention_final_embeddings.csv", newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    patches = [r for r in csv_rows if r["mode"] == "patches" and r["stage"] == "0" and r["block"] == "1"]
    assert len(patches) == 16 and [int(r["patch"]) for r in patches] == list(range(16))
    snake = export.blocks[1].routes[0]
    for r in patches:  # seq_pos: where the forward route visits the patch
        assert snake[int(r["seq_pos"])] == int(r["patch"]) and int(r["row"]) * 4 + int(r["col"]) == int(r["patch"])
    # x, y: the first two principal components of the image-mean attention rows (up to sign)
    rows_mean = export.blocks[1].mean_attention().astype(np.float64)
    centred = rows_mean - rows_mean.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    coords = np.array([[float(r["x"]), float(r["y"])] for r in patches])
    assert np.abs(coords) == pytest.approx(np.abs(u[:, :2] * s[:2]), abs=1e-5)
    blocks = [r for r in csv_rows if r["mode"] == "blocks" and r["stage"] == "0"]
    assert [(r["block"], r["image"], r["label"], r["class_name"]) for r in blocks] == \
        [(str(b), str(i), str(lab), name) for b in (0, 1) for i, (lab, name) in enumerate([(2, "two"), (0, "zero"),
                                                                                        (1, "one")])]
    tables = result.rendered.embeddings
    assert tables["s0b1/patches_pca"].columns == PATCH_COLUMNS and len(tables["s1b0/patches_pca"].rows) == 4
    assert tables["stage1/blocks_pca"].columns == BLOCK_COLUMNS and len(tables["stage1/blocks_pca"].rows) == 3


# --- W&B payload with a recording run ---------------------------------------------------------------------------
class RecordingRun:
    def __init__(self, offline: bool):
        self.offline, self.disabled, self.id = offline, False, "abc123"
        self.logged, self.artifacts = [], []

    def log(self, payload):
        self.logged.append(payload)

    def log_artifact(self, artifact, aliases=()):
        self.artifacts.append((artifact, list(aliases)))


def test_wandb_payload_holds_uint8_images_scalars_and_scatter_tables(written):
    import wandb

    _, result, _ = written
    payload = attention_payload(result.rendered)
    matrix = payload["attention/s0b0/matrix"]
    assert isinstance(matrix, wandb.Image) and matrix.image.mode == "RGB" and matrix.image.size == (64, 64)
    panels = payload["attention/s1b0/patch_r1c1"]
    assert [p._caption for p in panels] == ["image 0: two", "image 1: zero", "image 2: one"]
    assert payload["attention/stage1/distance"] == result.rendered.stages[1]["distance"]
    chart = payload["attention/s0b0/patches_pca"]
    assert chart.table.columns == PATCH_COLUMNS and len(chart.table.data) == 16


@pytest.mark.parametrize("offline", [True, False])
def test_artifact_only_for_online_runs(written, offline):
    _, result, _ = written
    run = RecordingRun(offline)
    log_attention(run, result.rendered, result.paths, step=7, tag="attention_final")
    assert len(run.logged) == 1 and run.logged[0]["trainer/global_step"] == 7
    if offline:
        assert run.artifacts == []
    else:
        (artifact, aliases), = run.artifacts
        assert artifact.type == "attention" and aliases == ["attention_final", "latest"]
        assert set(artifact.manifest.entries) == {"attention_final.npz", "attention_final_metrics.json"}


# --- a real micro VMamba ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return timm.create_model("vmamba_micro", num_classes=10).eval()


def test_selection_errors_name_what_exists(micro):
    check_selection(micro, AttentionOptions(stages=[0, 2], blocks=[1], query_patches=[[7, 7]]), (32, 32))
    with pytest.raises(ConfigError, match=r"stages \[4\] do not exist: the model has stages \[0, 1, 2, 3\]"):
        check_selection(micro, AttentionOptions(stages=[0, 4]), (32, 32))
    with pytest.raises(ConfigError, match=r"blocks \[1\] exist in none of the chosen stages"):
        check_selection(micro, AttentionOptions(stages=[0, 1], blocks=[1]), (32, 32))
    with pytest.raises(ConfigError, match="outside the stage-0 grid of 8 x 8"):
        check_selection(micro, AttentionOptions(query_patches=[[8, 0]]), (32, 32))


def test_pooled_features_are_what_the_head_classifies(micro):
    images = torch.randn(5, 3, 32, 32)
    micro.train()
    features, logits = pooled_features(micro, images, batch_size=2)
    assert micro.training  # mode restored
    micro.eval()
    with torch.no_grad():
        expected = micro(images)
        pre = micro.forward_head(micro.forward_features(images), pre_logits=True)
    # Another batch split than the reference pass: equal up to float32 rounding.
    assert features.shape == (5, micro.num_features) and np.allclose(features, pre.numpy(), atol=1e-5)
    assert np.allclose(logits, expected.numpy(), atol=1e-4)


class ProbeData:
    """The data-module surface the callbacks use; counts probe_batch calls."""

    class_names = [str(d) for d in range(10)]

    def __init__(self, val_size: int = 100):
        self.calls, self.val_size = 0, val_size

    def val_dataloader(self):
        return SimpleNamespace(dataset=range(self.val_size))

    def probe_batch(self, n):
        self.calls += 1
        generator = torch.Generator().manual_seed(3)
        return torch.randn(n, 3, 32, 32, generator=generator), torch.arange(n) % 10

    def to_display(self, images):
        return (images.clamp(-1, 1) * 127.5 + 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


class Untouchable:
    def __getattr__(self, name):
        raise AssertionError(f"a non-zero rank touched pl_module.{name}")


def fake_trainer(root: Path, rank_zero: bool, loggers=(), val_size: int = 100):
    return SimpleNamespace(is_global_zero=rank_zero, current_epoch=0, global_step=5, default_root_dir=str(root),
                           loggers=list(loggers), datamodule=ProbeData(val_size))


def test_other_ranks_do_nothing(tmp_path):
    trainer = fake_trainer(tmp_path, rank_zero=False)
    callbacks = [AttentionLogger(every_n_epochs=1, num_images=2), EmbeddingLogger(num_samples=4, every_n_epochs=1)]
    for callback in callbacks:
        callback.setup(trainer, Untouchable(), "fit")
        callback.on_train_epoch_end(trainer, Untouchable())
        callback.on_train_end(trainer, Untouchable())
        assert callback.written == []
    assert trainer.datamodule.calls == 0 and list(tmp_path.iterdir()) == []


def test_rank_zero_without_wandb_writes_files_and_csv_scalars(tmp_path, micro):
    csv_logger = CSVLogger(tmp_path, name="csv", version="")
    trainer = fake_trainer(tmp_path, rank_zero=True, loggers=[csv_logger])
    module = SimpleNamespace(model=micro)
    torch.manual_seed(11)
    before = torch.rand(3)
    torch.manual_seed(11)
    callback = AttentionLogger(every_n_epochs=1, report=False, num_images=2, stages=[1, 2], methods=["pca"])
    callback.setup(trainer, module, "fit")
    callback.on_train_epoch_end(trainer, module)
    assert torch.equal(torch.rand(3), before)  # training's random stream is untouched
    callback.on_train_end(trainer, module)  # same step: the export is reused, the files are written again
    csv_logger.save()
    assert trainer.datamodule.calls == 1  # the probe batch is fixed at setup
    epoch, final = (tmp_path / "attention" / f"attention_{t}.npz" for t in ("epoch000", "final"))
    a, b = load(epoch), load(final)
    assert [x.key for x in a.blocks] == ["s1b0", "s2b0", "s2b1"] and a.blocks[0].attn.shape == (2, 16, 16)
    assert all(np.array_equal(x.attn, y.attn) for x, y in zip(a.blocks, b.blocks))
    assert np.array_equal(a.images, trainer.datamodule.to_display(trainer.datamodule.probe_batch(2)[0]).numpy())
    with open(tmp_path / "csv" / "metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("attention/s1b0/distance")]
    assert len(rows) == 1 and float(rows[0]["attention/s1b0/distance"]) == pytest.approx(
        metrics_table(a)[0]["distance"], rel=1e-12)


def test_embedding_sample_shrinks_to_a_small_validation_split_and_says_so(tmp_path, micro):
    trainer = fake_trainer(tmp_path, rank_zero=True, val_size=3)
    callback = EmbeddingLogger(num_samples=5, every_n_epochs=1)
    with pytest.warns(UserWarning, match="validation split has 3 images, fewer than num_samples=5"):
        callback.setup(trainer, SimpleNamespace(model=micro), "fit")
    callback.on_train_epoch_end(trainer, SimpleNamespace(model=micro))
    saved = np.load(tmp_path / "embeddings" / "features_epoch000.npz")
    images, labels = trainer.datamodule.probe_batch(3)
    features, logits = pooled_features(micro, images)
    assert np.array_equal(saved["features"], features) and np.array_equal(saved["labels"], labels.numpy())
    assert np.array_equal(saved["predictions"], logits.argmax(1))
    with open(tmp_path / "embeddings" / "features_epoch000.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:6] == ["sample", "label", "class_name", "prediction", "predicted_class", "correct"]
    assert len(rows) == 4 and len(rows[1]) == 6 + micro.num_features
