"""The model's user-facing surface: timm presets, per-stage orderings, clear errors, training gradients."""
import pytest
import timm
import torch
from omegaconf import OmegaConf
from timm.data import resolve_data_config

import orderings
from orderings import OrderingError
from patchorder.models import VMamba


def small_model(**kwargs):
    defaults = dict(depths=(1, 1, 2, 1), dims=8, num_classes=5, drop_path_rate=0.0)
    return VMamba(**{**defaults, **kwargs})


class Untouchable(torch.nn.Module):
    """Stands in for the stem: any call means the model started working before rejecting its input."""

    def forward(self, x):
        raise AssertionError("the model did work before raising the input error")


@pytest.mark.parametrize("name, depths, dims, classes", [
    ("vmamba_micro", [1, 1, 2, 1], [32, 64, 128, 256], 10),
    ("vmamba_tiny_s1l8", [2, 2, 8, 2], [96, 192, 384, 768], 7),
    ("vmamba_small_s1l20", [2, 2, 20, 2], [96, 192, 384, 768], 3),
])
def test_timm_create_model_for_every_preset(name, depths, dims, classes):
    model = timm.create_model(name, ordering="spiral", num_classes=classes, drop_path_rate=0.05)
    assert isinstance(model, VMamba)
    assert model.depths == depths and model.dims == dims
    assert model.get_classifier().out_features == classes == model.num_classes
    assert {op.ordering.name for op in model.ss2d_blocks()} == {"spiral"}
    assert len(model.ss2d_blocks()) == sum(depths)
    assert model.layers[-1].blocks[-1].drop_path.drop_prob == pytest.approx(0.05)
    assert all(op.num_routes == 4 and op.d_state == 1 and op.d_inner == op.in_proj.in_features
               for op in model.ss2d_blocks())
    config = resolve_data_config({}, model=model)
    assert config["interpolation"] == "bicubic" and config["crop_pct"] == (1.0 if name == "vmamba_micro" else 0.875)
    assert config["input_size"] == ((3, 64, 64) if name == "vmamba_micro" else (3, 224, 224))
    if name != "vmamba_small_s1l20":  # (a forward of the 48 M model adds seconds and nothing new)
        with torch.no_grad():
            assert model.eval()(torch.randn(1, 3, 64, 96)).shape == (1, classes)


def test_pretrained_without_a_path_and_features_only_are_clear_errors():
    with pytest.raises(ValueError, match="pretrained=True needs pretrained_path"):
        timm.create_model("vmamba_tiny_s1l8", pretrained=True)
    with pytest.raises(ValueError, match="features_only is not supported"):
        timm.create_model("vmamba_micro", features_only=True)


def test_per_stage_orderings_and_schemes():
    model = small_model(ordering=["row_major", "spiral", orderings.get("random", seed=3), "hilbert"],
                        scan_scheme="bidirectional")
    assert [o.name for o in model.orderings] == ["row_major", "spiral", "random", "hilbert"]
    for stage, layer in enumerate(model.layers):
        for block in layer.blocks:
            assert block.op.ordering is model.orderings[stage]  # one ordering (and route cache) per stage
            assert block.op.x_proj_weight.shape[0] == 2 and block.op.A_logs.shape[0] == 2 * block.op.d_inner
    # Hydra passes lists and _target_ mappings as OmegaConf containers.
    spec = OmegaConf.create(["snake", {"_target_": "orderings.get", "name": "morton"}, "diagonal", "row_major"])
    assert [o.name for o in small_model(ordering=spec).orderings] == ["snake", "morton", "diagonal", "row_major"]
    single = small_model(scan_scheme="single")
    assert single.layers[0].blocks[0].op.dt_projs_bias.shape == (1, 8)
    assert single(torch.randn(1, 3, 32, 64)).shape == (1, 5)


def test_bad_input_sizes_are_rejected_before_any_work():
    model = small_model()
    model.patch_embed = Untouchable()
    with pytest.raises(ValueError, match=r"input size 64x80 .* not divisible by the model's total stride 32"):
        model(torch.randn(1, 3, 64, 80))
    with pytest.raises(ValueError, match=r"input size 48x64 .*stride 32.* e\.g\. 32x64"):
        model(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match=r"expects images \(batch, 3, height, width\), got shape \(1, 1, 64, 64\)"):
        model(torch.randn(1, 1, 64, 64))
    three_stages = small_model(depths=(1, 1, 1), dims=8)
    assert three_stages.stride == 16
    assert three_stages(torch.randn(1, 3, 16, 48)).shape == (1, 5)


def test_bad_orderings_and_options_give_clear_errors():
    with pytest.raises(OrderingError, match="unknown ordering 'zigzag'; available: .*row_major"):
        small_model(ordering="zigzag")
    with pytest.raises(ValueError, match="ordering list has 3 entries but the model has 4 stages"):
        small_model(ordering=["row_major"] * 3)
    with pytest.raises(ValueError, match="unknown scan_scheme 'cross8'; choose one of single, bidirectional, cross4"):
        small_model(scan_scheme="cross8")
    with pytest.raises(TypeError, match="unexpected arguments: ordring"):
        small_model(ordring="spiral")
    broken = small_model(ordering=lambda h, w: [0] * (h * w))  # visits patch 0 every time
    broken.patch_embed = Untouchable()
    with pytest.raises(OrderingError, match=r"ordering '<lambda>' on grid 16x16 .* repeats raster index 0"):
        broken(torch.randn(1, 3, 64, 64))


def test_one_training_step_gives_finite_gradients_for_every_parameter():
    torch.manual_seed(0)
    model = timm.create_model("vmamba_micro", num_classes=4, ordering="hilbert", drop_path_rate=0.1)
    images, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
    assert model.no_weight_decay() == {n for n, _ in model.named_parameters() if n.endswith(("A_logs", "Ds"))}


def test_default_backend_gradients_match_the_reference_scan():
    torch.manual_seed(0)
    model = small_model(ordering="spiral").double()
    images = torch.randn(2, 3, 64, 32, dtype=torch.float64)
    grads = {}
    for backend in ("auto", "reference"):
        model.zero_grad()
        for op in model.ss2d_blocks():
            op.scan_backend = backend
        model(images).square().sum().backward()
        grads[backend] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for name, grad in grads["reference"].items():
        torch.testing.assert_close(grads["auto"][name], grad, rtol=1e-8, atol=1e-10, msg=name)
