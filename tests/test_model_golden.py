"""Fidelity to the official VMamba: golden logits, official key layout and parameter count, checkpoint loading."""
import json
import re
from argparse import Namespace
from pathlib import Path

import pytest
import timm
import torch

from patchorder.models import OfficialCheckpointError, VMamba, load_official_vmamba

GOLDEN = Path(__file__).parent / "golden"
SMALL = GOLDEN / "vmamba_official_small_v05_noz.pt"
TINY_SHAPES = GOLDEN / "vmamba_tiny_s1l8_state_dict_shapes.json"


@pytest.fixture(scope="module")
def golden():
    return torch.load(SMALL, map_location="cpu", weights_only=True)


def build_like_golden(config, **overrides) -> VMamba:
    """Our model with the golden file's VSSM configuration (row-major ordering, cross4 routes)."""
    assert config["forward_type"] == "v05_noz" and config["norm_layer"] == "ln2d"
    assert config["downsample_version"] == "v3" and config["patchembed_version"] == "v2"
    kwargs = dict(
        num_classes=config["num_classes"], in_chans=config["in_chans"], patch_size=config["patch_size"],
        depths=config["depths"], dims=config["dims"], d_state=config["ssm_d_state"], ssm_ratio=config["ssm_ratio"],
        d_conv=config["ssm_conv"], conv_bias=config["ssm_conv_bias"], mlp_ratio=config["mlp_ratio"],
        ordering="row_major", scan_scheme="cross4",
    )
    return VMamba(**{**kwargs, **overrides}).eval()


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_golden_logits(golden, backend):
    model = build_like_golden(golden["config"], scan_backend=backend)
    load_official_vmamba(model, golden)
    assert [tuple(x.shape) for x in golden["inputs"]] == [(2, 3, 64, 64), (1, 3, 64, 96)]
    with torch.no_grad():
        for x, expected in zip(golden["inputs"], golden["logits"]):
            logits = model(x)
            assert logits.shape == expected.shape
            torch.testing.assert_close(logits, expected, rtol=0, atol=3e-5)


def test_state_dict_keys_follow_official_order(golden):
    model = build_like_golden(golden["config"])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    official = {k: tuple(v.shape) for k, v in golden["state_dict"].items()}
    assert list(ours) == list(official)
    assert ours == official


def test_tiny_s1l8_has_official_keys_shapes_and_parameter_count():
    reference = json.loads(TINY_SHAPES.read_text())
    model = timm.create_model("vmamba_tiny_s1l8")
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == reference["state_dict_shapes"]
    assert len(shapes) == 276
    assert sum(p.numel() for p in model.parameters()) == reference["params"] == 30_249_064


def test_pretrained_path_through_timm_reproduces_golden(golden, tmp_path):
    path = tmp_path / "official.pth"
    torch.save({"model": golden["state_dict"]}, path)  # the official training script's layout
    config = golden["config"]
    model = timm.create_model(
        "vmamba_micro", pretrained=True, pretrained_path=str(path), depths=config["depths"], dims=config["dims"],
        num_classes=config["num_classes"], scan_backend="reference",
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(golden["inputs"][1]), golden["logits"][1], rtol=0, atol=3e-5)


def test_pretrained_path_with_other_class_count_keeps_fresh_head(golden, tmp_path):
    path = tmp_path / "official.pth"
    torch.save(golden["state_dict"], path)
    config = golden["config"]
    model = timm.create_model("vmamba_micro", pretrained_path=str(path), depths=config["depths"],
                              dims=config["dims"], num_classes=3)
    state = model.state_dict()
    assert state["classifier.head.weight"].shape == (3, 128)
    for key, value in golden["state_dict"].items():
        if not key.startswith("classifier.head"):
            assert torch.equal(state[key], value), key


def legacy_form(state_dict):
    """The golden weights under the legacy names the official loader still accepts, projections as 1x1 convs."""
    legacy = {}
    for key, value in state_dict.items():
        key = re.sub(r"^(layers\.\d+\.blocks\.\d+)\.norm\.", r"\1.ln_1.", key).replace(".op.", ".self_attention.")
        key = key.replace("patch_embed.0.", "patch_embed.proj.").replace("patch_embed.2.", "patch_embed.norm.")
        key = key.replace("classifier.norm.", "norm.").replace("classifier.head.", "head.")
        if key.endswith(("in_proj.weight", "out_proj.weight", "fc1.weight", "fc2.weight")):
            value = value[:, :, None, None]
        legacy["module." + key] = value
    return legacy


def test_legacy_key_forms_load_to_the_same_weights(golden):
    legacy = legacy_form(golden["state_dict"])
    assert "module.layers.0.blocks.0.ln_1.weight" in legacy and "module.head.weight" in legacy
    model = build_like_golden(golden["config"])
    load_official_vmamba(model, {"model": legacy, "epoch": 300})
    for key, value in model.state_dict().items():
        assert torch.equal(value, golden["state_dict"][key]), key


def test_mismatched_checkpoint_lists_every_problem(golden):
    state = dict(golden["state_dict"])
    del state["layers.0.blocks.0.op.Ds"]
    state["layers.9.extra"] = torch.zeros(1)
    model = build_like_golden(golden["config"], scan_scheme="bidirectional")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(OfficialCheckpointError) as info:
        load_official_vmamba(model, state)
    message = str(info.value)
    assert "missing from checkpoint (1): layers.0.blocks.0.op.Ds" in message
    assert "unexpected in checkpoint (1): layers.9.extra" in message
    assert "layers.0.blocks.0.op.x_proj_weight: checkpoint (4, 3, 16) vs model (2, 3, 16)" in message
    assert "cross4" in message  # the hint names the scheme the checkpoint needs
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing half-loaded


def test_head_mismatch_needs_skip(golden):
    model = build_like_golden(golden["config"], num_classes=4)
    with pytest.raises(OfficialCheckpointError, match="classifier.head.weight: checkpoint \\(10, 128\\) vs model"):
        load_official_vmamba(model, golden)
    load_official_vmamba(model, golden, head="skip")
    assert torch.equal(model.state_dict()["layers.3.blocks.0.op.A_logs"],
                       golden["state_dict"]["layers.3.blocks.0.op.A_logs"])


def test_checkpoint_with_python_objects_needs_explicit_trust(golden, tmp_path):
    path = tmp_path / "with_config.pth"
    torch.save({"model": golden["state_dict"], "config": Namespace(depths=[1, 1, 2, 1])}, path)
    model = build_like_golden(golden["config"])
    with pytest.raises(OfficialCheckpointError, match="if you trust the file, pass weights_only=False"):
        load_official_vmamba(model, path)
    load_official_vmamba(model, path, weights_only=False)
    assert torch.equal(model.state_dict()["layers.0.blocks.0.op.Ds"], golden["state_dict"]["layers.0.blocks.0.op.Ds"])


def test_bad_checkpoint_sources(tmp_path):
    model = VMamba(depths=(1,), dims=8, num_classes=2)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_official_vmamba(model, tmp_path / "missing.pth")
    with pytest.raises(OfficialCheckpointError, match="no state_dict in checkpoint"):
        load_official_vmamba(model, {"epoch": 3, "config": "x"})
    with pytest.raises(ValueError, match="head must be"):
        load_official_vmamba(model, {}, head="maybe")
