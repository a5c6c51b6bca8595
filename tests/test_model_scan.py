"""Cross-scan / cross-merge against the official ops and as inverses, true invariances of the model, capture records."""
import copy

import pytest
import torch

import orderings
from orderings import FunctionOrdering, SCHEMES
from patchorder.models import SS2D, VMamba, capture_ssm, cross_merge, cross_scan
from patchorder.ops import selective_scan


def shuffled(height, width):
    """A user-defined ordering with no structure at all."""
    return torch.randperm(height * width, generator=torch.Generator().manual_seed(height * 1000 + width))


ALL_ORDERINGS = orderings.available() + ["custom_function"]


def resolve(name):
    return FunctionOrdering(shuffled, name="shuffled") if name == "custom_function" else orderings.get(name)


def official_cross_scan(x):
    """VMamba's CrossScan.forward: row flatten, column flatten, then both flipped. (B, C, H, W) -> (B, 4, C, L)."""
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    return torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)


def official_cross_merge(ys, height, width):
    """VMamba's CrossMerge.forward: (B, 4, C, L) -> (B, C, L), un-flip, un-transpose, sum."""
    batch, _, channels, length = ys.shape
    pairs = ys[:, 0:2] + ys[:, 2:4].flip(-1)
    cols = pairs[:, 1].view(batch, channels, width, height).transpose(2, 3).reshape(batch, channels, length)
    return pairs[:, 0] + cols


def tiny_model(**kwargs):
    defaults = dict(depths=(1, 1, 2, 1), dims=8, num_classes=5, drop_path_rate=0.0)
    return VMamba(**{**defaults, **kwargs}).eval()


@pytest.mark.parametrize("grid", [(5, 7), (4, 4), (1, 6)])
def test_row_major_cross4_is_the_official_cross_scan_and_merge(grid):
    height, width = grid
    x = torch.randn(2, 3, height, width)
    op = SS2D(d_model=4, ordering="row_major", scan_scheme="cross4")
    routes, inverse = op.route_indices(height, width, x.device)
    xs = cross_scan(x.flatten(2), routes)
    assert torch.equal(xs, official_cross_scan(x))
    ys = torch.randn(2, 4, 3, height * width)
    torch.testing.assert_close(cross_merge(ys, inverse), official_cross_merge(ys, height, width), rtol=0, atol=1e-6)


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("name", ALL_ORDERINGS)
def test_merge_of_scan_is_k_times_identity(name, scheme):
    for height, width in [(6, 10), (7, 3)]:
        op = SS2D(d_model=4, ordering=resolve(name), scan_scheme=scheme)
        routes, inverse = op.route_indices(height, width, torch.device("cpu"))
        K = SCHEMES[scheme]
        assert routes.shape == inverse.shape == (K, height * width)
        x = torch.randn(2, 3, height * width, dtype=torch.float64)
        xs = cross_scan(x, routes)
        for k in range(K):  # route k carries the features in its own visiting order
            assert torch.equal(xs[:, k], x[:, :, routes[k]])
        torch.testing.assert_close(cross_merge(xs, inverse), K * x, rtol=1e-15, atol=0)


def swap_routes(model, order):
    """A copy of ``model`` whose per-route parameters are re-indexed route k <- route order[k]."""
    model = copy.deepcopy(model)
    index = torch.tensor(order)
    with torch.no_grad():
        for op in model.ss2d_blocks():
            K, D = op.num_routes, op.d_inner
            for p in (op.x_proj_weight, op.dt_projs_weight, op.dt_projs_bias):
                p.copy_(p[index])
            op.A_logs.copy_(op.A_logs.view(K, D, -1)[index].reshape(K * D, -1))
            op.Ds.copy_(op.Ds.view(K, D)[index].reshape(-1))
    return model


@pytest.mark.parametrize("name", ["spiral", "hilbert", "custom_function"])
def test_transposed_image_with_transposed_weights_gives_the_same_logits(name):
    """Transposing the image swaps each route with its transposed partner (route 0 <-> 1, 2 <-> 3 in cross4),
    for any ordering on any grid; with conv kernels transposed too the network computes the same logits."""
    torch.manual_seed(0)
    model = tiny_model(ordering=resolve(name)).double()
    twin = swap_routes(model, [1, 0, 3, 2])
    with torch.no_grad():
        for module in twin.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.copy_(module.weight.transpose(2, 3).clone())
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        transposed = twin(x.transpose(2, 3))
    torch.testing.assert_close(transposed, expected, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(model(x.transpose(2, 3)), expected, atol=1e-3)  # the swap is what makes it equal


@pytest.mark.parametrize("scheme, order", [("cross4", [2, 3, 0, 1]), ("bidirectional", [1, 0])])
def test_reversed_ordering_equals_route_swapped_parameters(scheme, order):
    """Routes of reverse(O) are the routes of O in another order; per-route parameters must follow their route."""
    torch.manual_seed(1)
    spiral = orderings.get("spiral")
    backwards = FunctionOrdering(lambda h, w: spiral(h, w).flip(0), name="spiral_reversed")
    model = tiny_model(ordering=spiral, scan_scheme=scheme).double()
    twin = swap_routes(model, order)
    for op in twin.ss2d_blocks():
        op.ordering = backwards  # route tables are cached on the ordering: the new one brings its own
    twin._checked_inputs.clear()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_capture_records_shapes_and_a_scan_recomputed_from_them(scheme):
    torch.manual_seed(2)
    stage_orderings = [resolve(name) for name in ["spiral", "hilbert", "custom_function", "row_major"]]
    model = tiny_model(ordering=stage_orderings, scan_scheme=scheme)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad(), capture_ssm(model) as records:
        logits = model(x)
    K = SCHEMES[scheme]
    expected_blocks = [(0, 0), (1, 0), (2, 0), (2, 1), (3, 0)]
    assert [(r.stage, r.block) for r in records] == expected_blocks
    for record in records:
        height, width = 64 // 2 ** (record.stage + 2), 96 // 2 ** (record.stage + 2)
        d, n, L = 8 * 2**record.stage, 1, height * width
        assert record.grid == (height, width)
        assert record.scheme == scheme and record.num_routes == K and record.channels_per_route == d
        assert record.ordering == stage_orderings[record.stage].label
        assert torch.equal(record.routes, orderings.routes(stage_orderings[record.stage], height, width, scheme))
        assert record.u.shape == record.delta.shape == record.y.shape == (2, K * d, L)
        assert record.A.shape == (K * d, n) and record.D.shape == (K * d,)
        assert record.B.shape == record.C.shape == (2, K, n, L)
        assert (record.delta > 0).all() and (record.A < 0).all()
        assert not any(t.requires_grad for t in (record.u, record.delta, record.B, record.C, record.y))
        # Every route scans the same features, each in its own order: back in raster order they agree.
        inverse = torch.argsort(record.routes, dim=1)
        raster = [record.u.view(2, K, d, L)[:, k][..., inverse[k]] for k in range(K)]
        for k in range(1, K):
            assert torch.equal(raster[k], raster[0])
        recomputed = selective_scan(record.u.double(), record.delta.double(), record.A.double(), record.B.double(),
                                    record.C.double(), record.D.double(), backend="reference")
        torch.testing.assert_close(recomputed.float(), record.y, rtol=1e-4, atol=1e-5)
    assert logits.shape == (2, 5)


def test_capture_can_be_limited_and_leaves_nothing_behind():
    model = tiny_model(ordering="diagonal")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        with capture_ssm(model, stages=[2], blocks=[1]) as records:
            model(x)
        assert [(r.stage, r.block) for r in records] == [(2, 1)]
        with capture_ssm(model, stages=[0, 3]) as records:
            model(x)
            model(x)  # each forward appends
        assert [(r.stage, r.block) for r in records] == [(0, 0), (3, 0)] * 2
        model(x)  # capture off: the old list does not grow
    assert len(records) == 4
    for op in model.ss2d_blocks():
        assert op.capture_sink is None
        kept = [k for k, v in vars(op).items() if isinstance(v, torch.Tensor)]
        assert kept == []  # no tensors outside parameters, buffers and the route cache
    assert all(len(m._forward_hooks) == 0 and len(m._forward_pre_hooks) == 0 for m in model.modules())


def test_capture_is_switched_off_after_an_error_and_rejects_bad_requests():
    model = tiny_model()
    with pytest.raises(ValueError, match="not divisible"):
        with capture_ssm(model):
            model(torch.randn(1, 3, 60, 64))
    assert all(op.capture_sink is None for op in model.ss2d_blocks())
    with pytest.raises(ValueError, match=r"no SS2D block matches stages=\[7\]"):
        with capture_ssm(model, stages=[7]):
            pass
    with capture_ssm(model, stages=[0]):
        with pytest.raises(RuntimeError, match="nested"):
            with capture_ssm(model):
                pass
    with pytest.raises(ValueError, match="has no SS2D block"):
        with capture_ssm(torch.nn.Linear(2, 2)):
            pass
