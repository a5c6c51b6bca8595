"""The explorer's data side: encodings against float64 oracles, the size budget, input resolution and the CLI."""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import orderings
from patchorder.attention.export import AttentionExport, BlockAttention, log8_codes, save, stored
from patchorder.explore import ExplorerInputError, build_report, find_export, to_wandb_html
from patchorder.explore.__main__ import main as cli_main
from patchorder.explore.packing import (Packer, decode_matrix, dequantise_log8, encode_matrix, log8_relative_error,
                                        quantise_log8)

REPO = Path(__file__).resolve().parents[1]


def synthetic_export(grids=((8, 8), (4, 4)), depths=(1, 2), images=2, per_route=False, ordering="row_major",
                     seed=0) -> AttentionExport:
    """Random non-negative attention with a wide dynamic range, real routes of ``ordering``."""
    rng = np.random.default_rng(seed)
    blocks = []
    for stage, ((h, w), depth) in enumerate(zip(grids, depths)):
        routes = orderings.routes(ordering, h, w, "cross4").numpy()
        shape = (images, 4, h * w, h * w) if per_route else (images, h * w, h * w)
        for block in range(depth):
            attn = rng.lognormal(-3, 2, size=shape).astype(np.float32)
            blocks.append(BlockAttention(stage, block, (h, w), ordering, attn, routes))
    pixels = rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
    return AttentionExport(blocks, pixels, model="synthetic", ordering=ordering, labels=list(range(images)),
                           class_names=[f"class {i}" for i in range(images)], merge="none" if per_route else "sum")


def embedded_payload(html_path: Path) -> tuple[dict, bytes]:
    text = html_path.read_text(encoding="utf-8")
    data = re.search(r'<script id="explorer-data" type="application/json">(.*?)</script>', text, re.S).group(1)
    binary = re.search(r'<script id="explorer-binary" type="text/plain">(.*?)</script>', text, re.S).group(1)
    return json.loads(data), base64.b64decode(binary)


def unpack(payload: dict, blob: bytes, array_id: int, dtype) -> np.ndarray:
    entry = payload["arrays"][array_id]
    stored = blob[entry["o"]:entry["o"] + entry["z"]]
    return np.frombuffer(zlib.decompress(stored) if entry["c"] else stored, dtype=dtype)


# ---------- encodings ----------

@pytest.mark.parametrize("floor", [1e-4, 1e-2])
def test_log8_error_is_bounded_against_float64(floor):
    rng = np.random.default_rng(1)
    values = rng.lognormal(0, 3, size=(6, 300))  # ~8 decades per row
    values[2] = 0.0  # an all-zero row
    values[3, :5] = 0.0
    codes, scales = quantise_log8(values, floor)
    decoded = dequantise_log8(codes, scales, floor).astype(np.float64)
    row_max = values.max(axis=1, keepdims=True)
    kept = values >= floor * row_max
    bound = log8_relative_error(floor) + 1e-6  # + float32 rounding of the scale
    assert np.all(np.abs(decoded - values)[kept] <= bound * values[kept])
    assert np.all(np.abs(decoded - values)[~kept] <= floor * np.broadcast_to(row_max, values.shape)[~kept])
    assert np.array_equal(decoded[2], np.zeros(300)) and np.all(decoded[3, :5] == 0)
    # each row's maximum comes back as its scale, exactly to float32
    np.testing.assert_array_equal(decoded.max(axis=1), values.max(axis=1).astype(np.float32))


def test_log8_relative_error_formula():
    # 254 geometric steps over 4 decades: half a step is exp(ln(1e4) / 508) - 1
    assert log8_relative_error(1e-4) == pytest.approx(np.exp(np.log(1e4) / 508) - 1, rel=1e-12)
    assert 0.018 < log8_relative_error(1e-4) < 0.0185


def test_log8_rejects_what_it_cannot_store():
    with pytest.raises(ValueError, match="non-negative"):
        quantise_log8(np.array([[1.0, -0.5]]), 1e-4)
    with pytest.raises(ValueError, match="floor"):
        quantise_log8(np.ones((2, 2)), 1.5)


def test_f16_encoding_of_signed_values():
    rng = np.random.default_rng(2)
    values = (rng.standard_normal((3, 40, 40)) * 1e5).astype(np.float32)  # beyond float16's range unscaled
    packer = Packer()
    ref = encode_matrix(packer, values, "f16", 1e-4)
    decoded = decode_matrix(packer, ref, values.shape)
    peak = np.abs(values).max()
    assert np.all(np.abs(decoded - values) <= 2.0 ** -11 * np.abs(values) + 2.0 ** -24 * peak)


def test_packer_roundtrip_truncate_and_base64():
    packer = Packer()
    arrays = [(np.arange(10, dtype=np.int32), "i32"), (np.zeros(5000, np.uint8), "u8"),
              (np.linspace(0, 1, 1000, dtype=np.float32), "f32")]
    ids = [packer.add(a, tag) for a, tag in arrays]
    assert packer.entries[0]["c"] == 0 and packer.entries[1]["c"] == 1  # tiny stays raw, zeros compress
    blob = base64.b64decode(packer.encoded())
    assert len(packer.encoded()) == packer.encoded_size()
    payload = {"arrays": packer.entries}
    for (array, tag), array_id in zip(arrays, ids):
        np.testing.assert_array_equal(unpack(payload, blob, array_id, array.dtype), array)
    packer.add(np.ones(100, np.float32), "f32")
    packer.truncate(2)
    assert len(packer.entries) == 2 and packer.offset == sum(e["z"] for e in packer.entries)


# ---------- inputs ----------

def test_find_export_takes_the_newest_in_a_run_dir(tmp_path):
    export = synthetic_export()
    old = save(tmp_path / "run" / "a" / "attention_epoch0.npz", export)
    new = save(tmp_path / "run" / "b" / "attention_epoch3.npz", export)
    os.utime(old, (1_000, 1_000))
    os.utime(new, (2_000, 2_000))
    (tmp_path / "run" / "other.npz").write_bytes(b"not ours")
    assert find_export(tmp_path / "run") == new
    assert find_export(old) == old


def test_find_export_says_what_is_missing(tmp_path):
    with pytest.raises(ExplorerInputError, match=r"no attention export \(attention\*\.npz\) under run directory"):
        find_export(tmp_path)
    with pytest.raises(ExplorerInputError, match="does not exist"):
        find_export(tmp_path / "nope.npz")


def test_incompatible_comparison_is_refused(tmp_path):
    with pytest.raises(ValueError, match="blocks/grids differ"):
        build_report(synthetic_export(), tmp_path / "x.html", compare=synthetic_export(grids=((4, 4), (2, 2))),
                     methods=("pca",))


# ---------- the file ----------

def test_report_is_self_contained_and_goes_to_wandb_unchanged(tmp_path):
    out = build_report(synthetic_export(), tmp_path / "r.html", methods=("pca",), title="<b>x</b> & y")
    text = out.read_text(encoding="utf-8")
    # nothing a browser would fetch: no external script, style, image or import
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?https?:""", text)
    assert text.count("<script") == 3 and "<title>&lt;b&gt;x&lt;/b&gt; &amp; y</title>" in text
    assert to_wandb_html(out).html == text  # no stylesheet injected


# ---------- budget ----------

def test_everything_fits_a_generous_budget(tmp_path):
    export = synthetic_export(per_route=True, images=2)
    out = build_report(export, tmp_path / "r.html", methods=("pca",), max_mb=20)
    payload, blob = embedded_payload(out)
    assert payload["omitted"] == []
    side = payload["sides"][0]["variants"][0]
    for block, original in zip(side["blocks"], export.blocks):
        L = original.grid[0] * original.grid[1]
        assert set(block["views"]) == {"merged", "0", "1", "2", "3"}
        for k in range(4):
            view = block["views"][str(k)]
            # the stored per-image matrix of route k decodes to the export's values within the log8 bound
            codes = unpack(payload, blob, view["images"]["codes"], np.uint8).reshape(2, L, L)
            scales = unpack(payload, blob, view["images"]["scales"], np.float32).reshape(2, L)
            decoded = dequantise_log8(codes, scales, view["images"]["floor"])
            truth = original.attn[:, k]
            kept = truth >= 1e-4 * truth.max(axis=-1, keepdims=True)
            err = np.abs(decoded - truth)
            assert np.all(err[kept] <= (log8_relative_error(1e-4) + 1e-6) * truth[kept])


def test_tight_budget_keeps_the_file_small_and_names_what_it_left_out(tmp_path):
    export = synthetic_export(grids=((16, 16), (8, 8)), depths=(1, 1), per_route=True, images=2)
    full = build_report(export, tmp_path / "full.html", methods=("pca",), max_mb=50)
    budget_mb = full.stat().st_size / 1e6 * 0.6
    out = build_report(export, tmp_path / "tight.html", methods=("pca",), max_mb=budget_mb)
    assert out.stat().st_size <= budget_mb * 1e6
    payload, _ = embedded_payload(out)
    omitted = payload["omitted"]
    assert omitted, "a budget 40% below the full size must leave something out"
    # the cheapest tier (per-image merged) survives before per-route per-image matrices
    assert not any("per-image matrices (merged)" in o for o in omitted)
    assert any("per-image matrices of route" in o for o in omitted)
    blocks = payload["sides"][0]["variants"][0]["blocks"]
    assert all(b["views"]["merged"]["mean"] is not None for b in blocks)  # always stored


def test_a_budget_the_required_views_fill_leaves_every_option_out_unmeasured_and_bounds_the_fix(tmp_path, monkeypatch):
    """When the always-stored views alone exceed the budget, no optional view can fit: they are left out without
    being quantised or deflated, and the --max-mb the page suggests (from their uncompressed size) keeps them all."""
    export = synthetic_export(grids=((16, 16), (8, 8)), depths=(1, 1), per_route=True, images=2)
    counted = quantised_values(monkeypatch)
    tiny = build_report(export, tmp_path / "tiny.html", methods=("pca",), max_mb=0.01)
    payload, _ = embedded_payload(tiny)
    optional = 2 * (1 + 2 * 4)  # per block: per-image merged, and per route the image mean and per-image matrices
    assert len(payload["omitted"]) == optional
    means = sum(b.attn[:, 0].size // 2 for b in export.blocks)  # the merged image means, one (L, L) per block
    assert sum(counted) == means  # nothing else was quantised
    counted.clear()
    roomy = build_report(export, tmp_path / "roomy.html", methods=("pca",), max_mb=payload["needed_mb"])
    assert embedded_payload(roomy)[0]["omitted"] == []
    assert roomy.stat().st_size <= payload["needed_mb"] * 1e6


# ---------- work already done, reused ----------

def quantised_values(monkeypatch) -> list[int]:
    """How many values the report quantises (patchorder.explore.packing.quantise_log8 as encode_matrix calls it)."""
    from patchorder.explore import packing

    counted = []
    original = packing.quantise_log8

    def counting(values, floor):
        counted.append(int(np.size(values)))
        return original(values, floor)

    monkeypatch.setattr(packing, "quantise_log8", counting)
    return counted


@pytest.mark.parametrize("per_route", [False, True])
def test_the_exports_own_log8_codes_are_stored_as_they_are_and_change_nothing(tmp_path, monkeypatch, per_route):
    export = synthetic_export(grids=((8, 8), (4, 4)), depths=(1, 2), images=2, per_route=per_route)
    codes = log8_codes(export)
    shown = stored(export, "log8", codes)  # what write_attention_artifacts hands the explorer, with these codes
    counted = quantised_values(monkeypatch)

    def report(name, **options):
        counted.clear()
        path = build_report(shown, tmp_path / name, methods=("pca",), max_mb=50, **options)
        return path.read_text(encoding="utf-8"), sum(counted)

    plain, everything = report("plain.html")
    assert embedded_payload(tmp_path / "plain.html")[0]["omitted"] == []  # every per-image view is in the file
    size = {b.key: b.attn.size for b in shown.blocks}
    # the per-image matrices (per route when kept apart) are the codes as given; image means are still quantised
    assert report("reused.html", codes=codes) == (plain, everything - sum(size.values()))
    # codes of another block (same shapes) or of another floor are not used: the file is still the same
    swapped = {**codes, "s1b0": codes["s1b1"], "s1b1": codes["s1b0"]}
    assert report("swapped.html", codes=swapped) == (plain, everything - size["s0b0"])
    assert report("floor.html", codes=codes, floor=1e-3) == report("floor_plain.html", floor=1e-3)


# ---------- command line ----------

def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "patchorder.explore", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_cli_writes_a_report_from_a_run_dir(tmp_path):
    save(tmp_path / "run" / "attention.npz", synthetic_export())
    result = run_cli(tmp_path / "run", "-o", tmp_path / "x.html", "--methods", "pca")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and (tmp_path / "x.html").stat().st_size > 0
    payload, _ = embedded_payload(tmp_path / "x.html")
    assert payload["sides"][0]["label"].endswith(str(tmp_path / "run" / "attention.npz"))


@pytest.mark.parametrize("case", ["missing", "text", "foreign_npz", "empty_run_dir", "bad_method"])
def test_cli_bad_input_exits_2_with_a_clear_message(tmp_path, capsys, case):
    target = tmp_path / "in.npz"
    extra = []
    expected = {
        "missing": "does not exist",
        "text": "is not a readable patchorder attention export",
        "foreign_npz": "is not a readable patchorder attention export",
        "empty_run_dir": "no attention export",
        "bad_method": "methods must be a non-empty subset of pca, tsne, umap",
    }[case]
    if case == "text":
        target.write_text("hello")
    elif case == "foreign_npz":
        np.savez(target, weights=np.ones(3))
    elif case == "empty_run_dir":
        target = tmp_path / "run"
        target.mkdir()
    elif case == "bad_method":
        save(target, synthetic_export())
        extra = ["--methods", "pca,lda"]
    assert cli_main([str(target), "-o", str(tmp_path / "x.html"), *extra]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


def test_cli_process_exit_code_on_bad_input(tmp_path):
    result = run_cli(tmp_path / "missing.npz")
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
