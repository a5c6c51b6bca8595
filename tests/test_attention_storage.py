"""What an attention run leaves on disk: log8 storage of the .npz against float64 oracles, the files agree with
what is stored, the last epoch is written once (attention_final), and large blocks' t-SNE is named as left out."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch

import patchorder.models  # noqa: F401  (registers the VMamba presets with timm)
from patchorder.attention.export import LOG8_FLOOR, AttentionExport, BlockAttention, load, save, stored
from patchorder.attention.log8 import log8_relative_error
from patchorder.attention.metrics import metrics_table
from patchorder.callbacks import AttentionLogger
from patchorder.artifacts import AttentionOptions, write_attention_artifacts
from test_callbacks_units import ProbeData


def wide_range_export(signed_block: bool = True) -> AttentionExport:
    rng = np.random.default_rng(3)
    routes = np.arange(16)[None]
    blocks = [BlockAttention(0, 0, (4, 4), "row_major", rng.lognormal(-4, 3, (3, 16, 16)).astype(np.float32), routes),
              BlockAttention(0, 1, (4, 4), "row_major", rng.lognormal(-4, 3, (3, 2, 16, 16)).astype(np.float32),
                             np.stack([routes[0], routes[0][::-1]]))]
    if signed_block:
        blocks.append(BlockAttention(1, 0, (2, 2), "row_major", rng.normal(0, 1, (3, 4, 4)).astype(np.float32),
                                     np.arange(4)[None]))
    images = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    return AttentionExport(blocks, images, model="synthetic", ordering="row_major", labels=[0, 1, 2])


def test_log8_npz_is_within_its_bound_and_loads_as_stored(tmp_path):
    export = wide_range_export()
    path = save(tmp_path / "a.npz", export, dtype="log8")
    back = load(path)
    for original, read in zip(export.blocks, back.blocks):
        truth = original.attn.astype(np.float64)
        assert read.attn.dtype == np.float32 and read.attn.shape == truth.shape
        if truth.min() < 0:  # signed: float16
            np.testing.assert_allclose(read.attn, truth, rtol=2.0 ** -11, atol=1e-7)
            continue
        row_max = truth.max(axis=-1, keepdims=True)
        kept = truth >= LOG8_FLOOR * row_max
        error = np.abs(read.attn - truth)
        assert np.all(error[kept] <= (log8_relative_error(LOG8_FLOOR) + 1e-6) * truth[kept])
        assert np.all(error[~kept] <= LOG8_FLOOR * np.broadcast_to(row_max, truth.shape)[~kept])
    # stored() is exactly what load returns, and storing it again changes nothing
    for a, b in zip(stored(export, "log8").blocks, back.blocks):
        np.testing.assert_array_equal(a.attn, b.attn)
    again = load(save(tmp_path / "b.npz", back, dtype="log8"))
    for a, b in zip(back.blocks, again.blocks):
        np.testing.assert_array_equal(a.attn, b.attn)
    assert stored(export, np.float32) is export


def test_log8_npz_is_a_quarter_of_float32_or_less(tmp_path):
    rng = np.random.default_rng(4)
    attn = rng.lognormal(-4, 3, (2, 1024, 1024)).astype(np.float32)  # a 32x32 grid: row scales cost little
    export = AttentionExport([BlockAttention(0, 0, (32, 32), "row_major", attn, np.arange(1024)[None])],
                             rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8))
    small = save(tmp_path / "log8.npz", export, dtype="log8").stat().st_size
    full = save(tmp_path / "f32.npz", export, dtype=np.float32).stat().st_size
    values = sum(b.attn.size for b in export.blocks)
    assert small < full / 3.5
    assert small < values * 1.0 + 20_000  # one byte a value plus a float32 per row and the zip's overhead


def test_files_describe_the_stored_values(tmp_path):
    export = wide_range_export()
    options = AttentionOptions(num_images=3, npz_dtype="log8", methods=["pca"], query_patches=["centre"])
    result = write_attention_artifacts(export, tmp_path, "attention_final", options)
    document = json.loads(result.paths["metrics"].read_text())
    assert document["blocks"] == metrics_table(load(result.paths["npz"]))
    assert document["blocks"] != metrics_table(export)  # the quantisation is visible in the metrics, so they were
    # computed from the stored values, not the float32 ones


def test_the_last_epoch_is_written_once_as_attention_final(tmp_path):
    torch.manual_seed(0)
    module = SimpleNamespace(model=timm.create_model("vmamba_micro", num_classes=10).eval())
    trainer = SimpleNamespace(is_global_zero=True, current_epoch=0, global_step=3, default_root_dir=str(tmp_path),
                              loggers=[], datamodule=ProbeData(), max_epochs=2)
    callback = AttentionLogger(every_n_epochs=1, report=False, num_images=2, stages=[3], methods=["pca"])
    callback.setup(trainer, module, "fit")
    callback.on_train_epoch_end(trainer, module)  # epoch 0 of 2: written
    trainer.current_epoch, trainer.global_step = 1, 6
    callback.on_train_epoch_end(trainer, module)  # epoch 1, the last: left to on_train_end
    trainer.current_epoch = 2
    callback.on_train_end(trainer, module)
    names = sorted(p.name for p in (tmp_path / "attention").glob("*.npz"))
    assert names == ["attention_epoch000.npz", "attention_final.npz"]
    assert [w.paths["npz"].name for w in callback.written] == names


@pytest.mark.parametrize("limit, expect_tsne", [(1024, {"s0b0", "s0b1", "s1b0"}), (10, {"s1b0"})])
def test_report_leaves_large_blocks_to_pca_and_says_so(tmp_path, limit, expect_tsne):
    from test_explore_data import embedded_payload

    from patchorder.explore import write_report

    report = write_report(wide_range_export(), tmp_path / "r.html", methods=("pca", "tsne"), max_layout_points=limit)
    payload, _ = embedded_payload(report.path)
    blocks = payload["sides"][0]["variants"][0]["blocks"]
    assert {b["key"] for b in blocks if "tsne" in b["patch_embedding"]} == expect_tsne
    for b in blocks:
        assert "pca" in b["patch_embedding"]
        if b["key"] not in expect_tsne:
            assert f"tsne of this block's 16 patches was not computed" in b["patch_embedding_notes"]["tsne"]
            assert "--max-layout-points 16" in b["patch_embedding_notes"]["tsne"]
