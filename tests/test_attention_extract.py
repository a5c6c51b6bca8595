"""extract_attention on a real VMamba: the attention reproduces the model's own block outputs; export round trip."""
import numpy as np
import pytest
import timm
import torch

import orderings
from patchorder.attention import block_attention, hidden_attention, load, save
from patchorder.attention.extract import extract_attention, images_to_uint8
from patchorder.models import SS2D, capture_ssm


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    model = timm.create_model("vmamba_micro", ordering="spiral", num_classes=5)
    images = torch.randn(2, 3, 64, 64)
    return model, images


def test_export_holds_every_block_with_its_routes_and_display_images(micro):
    model, images = micro
    model.train()
    export = extract_attention(model, images, labels=[3, 1], class_names=list("abcde"))
    assert model.training  # the caller's mode is restored
    assert [(b.stage, b.block, b.grid) for b in export.blocks] == [
        (0, 0, (16, 16)), (1, 0, (8, 8)), (2, 0, (4, 4)), (2, 1, (4, 4)), (3, 0, (2, 2))]
    for b in export.blocks:
        L = b.grid[0] * b.grid[1]
        assert b.attn.shape == (2, L, L) and b.attn.dtype == np.float32 and (b.attn >= 0).all()
        np.testing.assert_array_equal(b.routes, orderings.routes("spiral", *b.grid, "cross4").numpy())
        assert b.ordering == "spiral"
    assert (export.model, export.ordering, export.scheme, export.merge, export.reduce) == (
        "vmamba_micro", "spiral", "cross4", "sum", "mean_abs")
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    expected = ((images * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]).clamp(0, 1) * 255)
    expected = expected.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(export.images, expected)
    assert export.labels == [3, 1] and export.class_names == list("abcde")


def test_export_matches_block_attention_of_the_captured_records(micro):
    model, images = micro
    export = extract_attention(model, images, stages=[2], blocks=[1], merge="none", reduce="mean")
    assert [b.key for b in export.blocks] == ["s2b1"]
    model.eval()
    with torch.no_grad(), capture_ssm(model, stages=[2], blocks=[1]) as records:
        model(images)
    expected = block_attention(records[0], merge="none", reduce="mean").numpy()
    assert export.blocks[0].attn.shape == (2, 4, 16, 16)
    np.testing.assert_allclose(export.blocks[0].attn, expected, rtol=1e-6, atol=1e-7)


def test_attention_reproduces_each_routes_scan_output(micro):
    """y - D u == alpha @ u for every route of a real block (float32 rounding relative to |y|)."""
    model, images = micro
    model.eval()
    with torch.no_grad(), capture_ssm(model, stages=[0]) as records:
        model(images)
    r = records[0]
    d = r.channels_per_route
    for k in range(r.num_routes):
        rows = slice(k * d, (k + 1) * d)
        alpha = hidden_attention(r.delta[:, rows], r.A[rows], r.B[:, k:k + 1], r.C[:, k:k + 1], reduce="none")
        reconstructed = torch.einsum("bcij,bcj->bci", alpha.double(), r.u[:, rows].double())
        reconstructed += r.D[rows].double()[None, :, None] * r.u[:, rows].double()
        scale = r.y[:, rows].abs().max().item()
        assert (reconstructed - r.y[:, rows].double()).abs().max().item() < 2e-6 * scale


@pytest.mark.parametrize("ordering,scheme", [("hilbert", "cross4"), ("diagonal", "bidirectional")])
def test_merged_attention_reproduces_the_models_cross_merged_output(ordering, scheme):
    """The model's own SS2D.scan output == (merged attention) x + (sum of the routes' D) x, per channel."""
    torch.manual_seed(1)
    model = timm.create_model("vmamba_micro", ordering=ordering, scan_scheme=scheme, num_classes=3).eval()
    op = next(m for m in model.modules() if isinstance(m, SS2D) and m.stage == 1)
    seen = {}
    original = op.scan

    def recording_scan(x):
        seen["x"], seen["y"] = x, original(x)
        return seen["y"]

    op.scan = recording_scan
    with torch.no_grad(), capture_ssm(model, stages=[1]) as records:
        model(torch.randn(2, 3, 64, 64))
    x = seen["x"].flatten(2).double()  # (b, D, L) raster order
    y = seen["y"].permute(0, 3, 1, 2).flatten(2).double()  # (b, D, L)
    record = records[0]
    K, d = record.num_routes, record.channels_per_route
    attn = block_attention(record, merge="sum", reduce="none").double()  # (b, d, L, L)
    skip = record.D.double().view(K, d).sum(0)[None, :, None] * x
    reconstructed = torch.einsum("bcqk,bck->bcq", attn, x) + skip
    assert (reconstructed - y).abs().max().item() < 2e-6 * y.abs().max().item()


def test_save_and_load_round_trip(micro, tmp_path):
    model, images = micro
    export = extract_attention(model, images, stages=[1, 3], merge="none", labels=[0, 4])
    path = save(tmp_path / "attention.npz", export)
    back = load(path)
    assert [b.key for b in back.blocks] == ["s1b0", "s3b0"]
    for a, b in zip(export.blocks, back.blocks):
        np.testing.assert_array_equal(a.attn, b.attn)
        np.testing.assert_array_equal(a.routes, b.routes)
        assert (a.stage, a.block, tuple(a.grid), a.ordering) == (b.stage, b.block, tuple(b.grid), b.ordering)
    np.testing.assert_array_equal(back.images, export.images)
    assert (back.model, back.ordering, back.scheme, back.merge, back.reduce, back.labels, back.extra) == (
        export.model, export.ordering, export.scheme, export.merge, export.reduce, export.labels, export.extra)
    half = load(save(tmp_path / "half.npz", export, dtype=np.float16))
    np.testing.assert_allclose(half.blocks[0].attn, export.blocks[0].attn, rtol=1e-3, atol=1e-6)


def test_min_max_display_without_normalisation_and_bad_requests(micro):
    images = torch.stack([torch.linspace(-2, 6, 3 * 4 * 4).view(3, 4, 4)])
    out = images_to_uint8(images)
    assert out.shape == (1, 4, 4, 3) and out.min() == 0 and out.max() == 255
    model, batch = micro
    with pytest.raises(ValueError, match="reduce must be one of .*block_attention"):
        extract_attention(model, batch, reduce="none")
    with pytest.raises(ValueError, match="labels has 1 entries but there are 2 images"):
        extract_attention(model, batch, labels=[1])
    with pytest.raises(ValueError, match="unknown merge 'mean'"):
        extract_attention(model, batch, merge="mean")


def test_a_forward_that_runs_no_chosen_block_is_a_clear_error(micro):
    class SkipsTheBlocks(torch.nn.Module):  # holds the VMamba but its forward never calls it
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return x.mean(dim=(2, 3))

    with pytest.raises(ValueError, match="ran none of the selected SS2D blocks"):
        extract_attention(SkipsTheBlocks(micro[0]), micro[1])


def test_the_export_records_the_models_stage_grids(micro):
    model, _ = micro
    export = extract_attention(model, torch.randn(1, 3, 32, 64), stages=[1])
    assert export.extra["stage_grids"] == [list(g) for g in model.stage_grids(32, 64)] == [[8, 16], [4, 8],
                                                                                           [2, 4], [1, 2]]
