"""VMamba presets registered with timm: ``timm.create_model("vmamba_tiny_s1l8", ordering="spiral")``.

Registration happens when this module is imported (``import patchorder.models`` does it). Nothing is ever
downloaded: ``pretrained=True`` needs ``pretrained_path`` pointing at an official checkpoint file (a file that
pickles more than tensors, e.g. a training config, also needs ``pretrained_weights_only=False``: trust it first).
"""
from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from patchorder.models.official import load_official_vmamba
from patchorder.models.vmamba import VMamba

def _cfg(**overrides: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.0",
        "classifier": "classifier.head",
        "license": "mit",
        **overrides,
    }


default_cfgs = generate_default_cfgs({
    "vmamba_micro": _cfg(input_size=(3, 64, 64), pool_size=(2, 2), crop_pct=1.0),
    "vmamba_long_range": _cfg(input_size=(3, 64, 64), pool_size=(8, 8), crop_pct=1.0),
    "vmamba_tiny_s1l8": _cfg(),
    "vmamba_small_s1l20": _cfg(),
})


def _create(variant: str, preset: dict[str, Any], pretrained: bool = False, pretrained_path: str | None = None,
            pretrained_weights_only: bool = True, **kwargs: Any) -> VMamba:
    """The one builder: ``preset`` (the registered function's architecture) updated by the caller's ``kwargs``."""
    if pretrained and not pretrained_path:
        raise ValueError(
            f"{variant}: pretrained=True needs pretrained_path=<official VMamba checkpoint .pth>; patchorder never "
            f"downloads weights. Download the file yourself (github.com/MzeroMiko/VMamba releases) and pass its path."
        )
    if kwargs.get("features_only"):
        raise ValueError(f"{variant}: features_only is not supported; use model.forward_features(images) "
                         f"(last stage, channels-last) or patchorder.models.capture_ssm for per-block quantities")
    model_kwargs = {**preset, **kwargs}
    model = build_model_with_cfg(VMamba, variant, pretrained=False, **model_kwargs)
    if pretrained_path:
        # The checkpoint's classifier is kept only if it fits num_classes (as timm does for fine-tuning).
        load_official_vmamba(model, pretrained_path, head="auto", weights_only=pretrained_weights_only)
    return model


# Each registered function carries its own architecture (as timm's model files do); official ones follow
# MzeroMiko/VMamba's vmamba.py (vmamba_tiny_s1l8, vmamba_small_s1l20), all v05_noz.
@register_model
def vmamba_micro(pretrained: bool = False, **kwargs: Any) -> VMamba:
    """CPU-sized VMamba: the four-stage tiny architecture at 1/3 of its width and 5 of its 14 blocks (dims
    32-64-128-256, depths 1-1-2-1; 1.5 M parameters at 10 classes) for 32-64 px images. At 64 px its grids are
    16x16, 8x8, 4x4 and 2x2, so orderings still differ where most of the work is."""
    preset = dict(depths=(1, 1, 2, 1), dims=32, d_state=1, ssm_ratio=1.0, mlp_ratio=4.0, drop_path_rate=0.0)
    return _create("vmamba_micro", preset, pretrained, **kwargs)


@register_model
def vmamba_long_range(pretrained: bool = False, **kwargs: Any) -> VMamba:
    """CPU-sized VMamba for tasks its scan must carry (experiment=long_range): two stages (dims 32-64, grids 16x16
    and 8x8 at 64 px), depths 2-4 (four blocks in one stage, so blocks within a stage can be compared), d_state 4,
    one route (scan_scheme single), and the scan-ready init: under the official init the scan starts at ~1e-4 of
    the D skip and, in a run of minutes, often never starts to mix patches. 0.22 M parameters at 4 classes."""
    preset = dict(depths=(2, 4), dims=32, d_state=4, ssm_ratio=1.0, mlp_ratio=4.0, drop_path_rate=0.0,
                  scan_scheme="single", init="scan_ready")
    return _create("vmamba_long_range", preset, pretrained, **kwargs)


@register_model
def vmamba_tiny_s1l8(pretrained: bool = False, **kwargs: Any) -> VMamba:
    """Official VMamba-T (s1l8): dims 96, depths 2-2-8-2, d_state 1, ssm_ratio 1; 30.2 M parameters."""
    preset = dict(depths=(2, 2, 8, 2), dims=96, d_state=1, ssm_ratio=1.0, mlp_ratio=4.0, drop_path_rate=0.2)
    return _create("vmamba_tiny_s1l8", preset, pretrained, **kwargs)


@register_model
def vmamba_small_s1l20(pretrained: bool = False, **kwargs: Any) -> VMamba:
    """Official VMamba-S (s1l20): dims 96, depths 2-2-20-2, d_state 1, ssm_ratio 1."""
    preset = dict(depths=(2, 2, 20, 2), dims=96, d_state=1, ssm_ratio=1.0, mlp_ratio=4.0, drop_path_rate=0.3)
    return _create("vmamba_small_s1l20", preset, pretrained, **kwargs)
