"""The scan ablation against a model whose scans return exactly D * u, and the scan-usage diagnostics against
values computed by hand from captured blocks and from twin models built with the swapped ordering."""
import copy

import pytest
import torch

import patchorder.models.ss2d as ss2d_module
from patchorder.attention.scan_usage import scan_share, scan_usage
from patchorder.models import VMamba, capture_ssm, scan_ablation


def tiny_model(**kwargs):
    torch.manual_seed(0)
    defaults = dict(depths=(2, 1), dims=8, num_classes=5, drop_path_rate=0.0, d_state=2)
    model = VMamba(**{**defaults, **kwargs}).double().eval()
    # At initialisation the scan's mixing term C (sum delta B u) is third order in the tiny activations of
    # in_proj (std 0.02 weights), so it is negligible beside D u; scale up to trained-like magnitudes.
    with torch.no_grad():
        for op in model.ss2d_blocks():
            op.in_proj.weight.mul_(50.0)
            op.x_proj_weight.mul_(3.0)
            op.dt_projs_bias.add_(5.0)
            op.A_logs.sub_(2.0)
            op.Ds.copy_(torch.linspace(0.5, 1.5, op.Ds.numel()))  # not all ones: D must enter every formula
    return model


def images(n=3, side=32):
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("scheme", ["cross4", "bidirectional", "single"])
def test_ablation_equals_scans_that_return_d_times_u(monkeypatch, scheme):
    model = tiny_model(scan_scheme=scheme)
    x = images()
    with torch.no_grad():
        op, block_input = model.ss2d_blocks()[0], torch.randn(2, 8, 8, 8, dtype=torch.float64)
        normal, block_output = model(x), op(block_input)
        with scan_ablation(model):
            ablated, ablated_block_output = model(x), op(block_input)
        again = model(x)  # the switch is off again after the with block
        calls = []

        def skip_only(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, backend="auto"):
            calls.append(u.shape)
            return u * D[None, :, None]

        monkeypatch.setattr(ss2d_module, "selective_scan", skip_only)
        oracle = model(x)
    assert len(calls) == 3
    # The ablation changes what a block computes (at initialisation the blocks barely move the logits).
    assert (block_output - ablated_block_output).norm() > 0.1 * block_output.norm()
    torch.testing.assert_close(ablated, oracle, rtol=0, atol=1e-12)
    torch.testing.assert_close(again, normal, rtol=0, atol=0)


def test_ablation_of_a_model_without_ss2d_is_an_error():
    with pytest.raises(ValueError, match="no SS2D"):
        with scan_ablation(torch.nn.Linear(2, 2)):
            pass


def hand_share(record):
    """Scatter each route back to raster order position by position, then compare the norms."""
    b, kd, length = record.u.shape
    K = record.num_routes
    d = kd // K
    skip = torch.zeros(b, d, length, dtype=torch.float64)
    mix = torch.zeros(b, d, length, dtype=torch.float64)
    for k in range(K):
        for s in range(length):
            r = int(record.routes[k, s])
            u = record.u[:, k * d:(k + 1) * d, s].double()
            y = record.y[:, k * d:(k + 1) * d, s].double()
            D = record.D[k * d:(k + 1) * d].double()
            skip[:, :, r] += D * u
            mix[:, :, r] += y - D * u
    return float(mix.norm() / (mix.norm() + skip.norm()))


def test_scan_share_against_a_hand_computation():
    model = tiny_model(ordering="spiral")
    with torch.no_grad(), capture_ssm(model) as records:
        model(images(2, 32))
    for record in records:
        share = scan_share(record)
        assert share == pytest.approx(hand_share(record), rel=1e-9)
        assert 0.05 < share < 1.0
    with torch.no_grad(), scan_ablation(model), capture_ssm(model) as ablated:
        model(images(2, 32))
    assert all(scan_share(r) == 0.0 for r in ablated)


def test_swap_sensitivity_against_twin_models():
    model = tiny_model(ordering="row_major")
    x = images()
    usage = scan_usage(model, x, swap="spiral")
    twin = tiny_model(ordering="spiral")
    twin.load_state_dict(model.state_dict())
    # Inputs of each block in the original model, fed to the twin's block (which scans with spiral).
    inputs = {}
    ops, twin_ops = model.ss2d_blocks(), twin.ss2d_blocks()
    hooks = [op.register_forward_hook(lambda m, a, o: inputs.__setitem__(m, a[0])) for op in ops]
    with torch.no_grad():
        logits = model(x)
        for hook in hooks:
            hook.remove()
        for row, op, twin_op in zip(usage["blocks"], ops, twin_ops):
            expected = float((twin_op(inputs[op]) - op(inputs[op])).norm() / op(inputs[op]).norm())
            assert (row["stage"], row["block"]) == (op.stage, op.block)
            assert row["swap_change"] == pytest.approx(expected, rel=1e-9)
            assert row["swap_change"] > 1e-3
        twin_logits = twin(x)
    assert usage["logit_change"] == pytest.approx(float((twin_logits - logits).norm() / logits.norm()), rel=1e-9)
    assert usage["prediction_agreement"] == float((twin_logits.argmax(1) == logits.argmax(1)).double().mean())
    assert usage["swap"] == "spiral"
    # The model is left as it was: same ordering, same outputs.
    assert [op.ordering.label for op in ops] == ["row_major"] * len(ops)
    with torch.no_grad():
        torch.testing.assert_close(model(x), logits, rtol=0, atol=0)


def test_swap_to_itself_and_ablated_scans_change_nothing():
    model = tiny_model(ordering="diagonal")
    x = images()
    same = scan_usage(model, x, swap="diagonal")
    assert all(row["swap_change"] == 0.0 for row in same["blocks"])
    assert same["logit_change"] == 0.0 and same["prediction_agreement"] == 1.0
    with scan_ablation(model):
        ablated = scan_usage(model, x, swap="random")
    assert all(row["swap_change"] < 1e-12 and row["scan_share"] == 0.0 for row in ablated["blocks"])
    assert ablated["logit_change"] < 1e-12
    assert scan_usage(model, x, swap="random")["swap_change_mean"] > 1e-3


def test_scan_ready_init_starts_the_scan_mixing_where_the_official_init_does_not():
    x = images(2, 64).float()
    shares = {}
    for init in ("vmamba", "scan_ready"):
        torch.manual_seed(0)
        model = VMamba(depths=(2, 4), dims=32, d_state=4, num_classes=4, scan_scheme="single", init=init).eval()
        shares[init] = scan_usage(model, x)["scan_share_mean"]
    assert shares["vmamba"] < 1e-3 < 0.05 < shares["scan_ready"]
    with pytest.raises(ValueError, match="unknown init"):
        VMamba(depths=(1,), dims=8, init="xavier")


def test_metrics_table_rows_carry_the_scan_usage_of_the_export():
    from patchorder.attention import extract_attention, metrics_table

    model = tiny_model().float()
    x = images(2, 32).float()
    export = extract_attention(model, x)
    assert all(row["scan_share"] is None for row in metrics_table(export))  # not measured: no value, no guess
    export.extra["scan_usage"] = usage = scan_usage(model, x)
    rows = {(row["stage"], row["block"]): row for row in metrics_table(export)}
    for block in usage["blocks"]:
        row = rows[(block["stage"], block["block"])]
        assert (row["scan_share"], row["swap_change"]) == (block["scan_share"], block["swap_change"])
