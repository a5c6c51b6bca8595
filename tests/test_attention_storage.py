"""What an attention run leaves on disk: log8 storage of the .npz against float64 oracles and its size against the
model's geometry, the files agree with what is stored, the last epoch is written once (attention_final), and large blocks' t-SNE is named as left out."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch

import patchorder.models  # noqa: F401  (registers the VMamba presets with timm)
from patchorder.attention.export import LOG8_FLOOR, AttentionExport, BlockAttention, load, log8_codes, save, stored
from patchorder.attention import extract_attention
from patchorder.attention.log8 import difference_codes, log8_relative_error, quantise_log8, undo_difference_codes
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


def test_threads_change_nothing_in_codes_values_or_metrics(tmp_path):
    """Quantising, decoding and the row metrics run a few matrices at a time on threads; every result must be
    bit for bit what one thread computes (each matrix is done whole by one thread)."""
    rng = np.random.default_rng(5)
    routes = np.arange(64)[None]
    export = AttentionExport([BlockAttention(0, 0, (8, 8), "row_major",
                                             rng.lognormal(-4, 3, (6, 64, 64)).astype(np.float32), routes)],
                             rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), model="synthetic", ordering="row_major")
    threads = torch.get_num_threads()

    def everything(count: int, name: str):
        torch.set_num_threads(count)
        try:
            codes = log8_codes(export)["s0b0"]
            back = load(save(tmp_path / f"{name}.npz", export, dtype="log8")).blocks[0].attn
            return codes, stored(export, "log8", {"s0b0": codes}).blocks[0].attn, back, metrics_table(stored(export, "log8"))
        finally:
            torch.set_num_threads(threads)

    one, four = everything(1, "one"), everything(4, "four")
    for a, b in zip(one[0] + one[1:3], four[0] + four[1:3]):
        np.testing.assert_array_equal(a, b)
    assert one[3] == four[3]
    # and they are the single-matrix functions applied to each matrix
    np.testing.assert_array_equal(one[0][0], np.stack([quantise_log8(m, LOG8_FLOOR)[0] for m in export.blocks[0].attn]))


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
    phases = document["phase_seconds"]  # each step's wall time, as the benchmark prints them
    assert phases == result.phases
    assert set(phases) == {"storage_rounding", "npz", "pictures", "metrics", "embeddings", "png_csv", "files_wait"}
    assert all(seconds >= 0 for seconds in phases.values())


def test_the_explorer_reuses_the_files_work_and_is_what_it_would_be_alone(tmp_path, monkeypatch):
    from dataclasses import replace

    from test_attention_embedding import counting
    from test_explore_data import quantised_values

    from patchorder.artifacts.files import _write_embeddings_csv
    from patchorder.artifacts.render import render_attention
    from patchorder.explore import build_report

    export = wide_range_export()  # s0b0 merged, s0b1 routes apart, s1b0 signed (float16)
    options = AttentionOptions(num_images=3, npz_dtype="log8", methods=["pca", "tsne"], query_patches=["centre"])
    rows, grams, quantised = (counting(monkeypatch, "_components_from_rows"),
                              counting(monkeypatch, "_components_from_gram"), quantised_values(monkeypatch))
    result = write_attention_artifacts(export, tmp_path / "a", "attention_final", options, report=True)
    assert (len(rows), len(grams)) == (3, 2)  # one projection per block and per stage, for the files and the explorer
    # quantised again: the image means (s0b0; s0b1 merged and per route) and s0b1's per-image sums of its routes;
    # its per-route per-image matrices are the .npz's codes
    L2 = 16 * 16
    assert sum(quantised) == L2 + (L2 + 2 * L2 + 3 * L2)
    # the same files computed from the stored values without reusing anything
    shown = stored(export, "log8")
    source = replace(shown, extra={**shown.extra, "source": str(result.paths["npz"])})
    alone = build_report(source, tmp_path / "alone.html", methods=options.report_methods, seed=options.seed,
                         metrics=result.rendered.metrics, colour_scale=options.scale, log_floor=options.log_floor)
    assert alone.read_text(encoding="utf-8") == result.paths["report"].read_text(encoding="utf-8")
    csv = _write_embeddings_csv(tmp_path / "alone.csv", render_attention(shown, options).embeddings)
    assert csv.read_text() == result.paths["embeddings"].read_text()


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


def test_difference_codes_are_the_2d_differences_and_undo_exactly():
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (2, 3, 5, 7), dtype=np.uint8)
    padded = np.pad(codes.astype(np.int64), ((0, 0), (0, 0), (1, 0), (1, 0)))  # zeros outside the matrix
    brute = padded[..., 1:, 1:] - padded[..., :-1, 1:] - padded[..., 1:, :-1] + padded[..., :-1, :-1]
    np.testing.assert_array_equal(difference_codes(codes), brute % 256)
    np.testing.assert_array_equal(undo_difference_codes(difference_codes(codes)), codes)


def test_log8_npz_size_of_a_real_model_is_what_its_geometry_says(tmp_path):
    """vmamba_micro at 64 px (stage grids 16, 8, 4, 2; depths 1-1-2-1): every block on 2 images is stored at one
    byte a value or less, each block in the layout (codes or their 2-D differences) that deflates smaller."""
    import zipfile
    import zlib

    torch.manual_seed(0)
    model = timm.create_model("vmamba_micro", num_classes=10).eval()
    export = extract_attention(model, torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    export.images = np.zeros((2, 64, 64, 3), np.uint8)
    grids = model.stage_grids(64, 64)
    lengths = [h * w for s, (h, w) in enumerate(grids) for _ in range(model.depths[s])]
    assert [b.attn.shape for b in export.blocks] == [(2, n, n) for n in lengths]  # every block, merged routes
    path = save(tmp_path / "micro.npz", export, dtype="log8")
    values, rows = 2 * sum(n * n for n in lengths), 2 * sum(lengths)
    routes, images = 4 * sum(4 * n for n in lengths), export.images.size
    entries = 3 * len(lengths) + 2  # codes, scales and routes per block; images; meta
    expected = values + 4 * rows + routes + images + entries * 400  # 400: an .npy header and its zip entry
    assert path.stat().st_size <= expected
    with zipfile.ZipFile(path) as archive:
        stored_sizes = {info.filename: info.compress_size for info in archive.infolist()}
    layouts = {}
    for b in export.blocks:
        (name,) = [n for n in stored_sizes if n.startswith(f"{b.key}/attn_log8")]
        codes = np.stack([quantise_log8(m, LOG8_FLOOR)[0] for m in b.attn])
        either = [len(zlib.compress(c.tobytes(), 6)) for c in (codes, difference_codes(codes))]
        assert stored_sizes[name] <= min(either) + 200  # the smaller layout (+ its .npy header)
        layouts[b.key] = name.split("/")[1].removesuffix(".npy")
    assert layouts["s0b0"] == "attn_log8_diff" and layouts["s2b0"] == "attn_log8"  # 16x16: differences pay
    back = load(path)
    codes = log8_codes(export)  # what write_attention_artifacts quantises once and hands to stored and save
    with_codes = load(save(tmp_path / "with_codes.npz", stored(export, "log8", codes), dtype="log8", codes=codes))
    for a, b, c in zip(stored(export, "log8").blocks, back.blocks, with_codes.blocks):
        np.testing.assert_array_equal(a.attn, b.attn)
        np.testing.assert_array_equal(a.attn, c.attn)
