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

# Official configurations (MzeroMiko/VMamba vmamba.py: vmamba_tiny_s1l8, vmamba_small_s1l20), all v05_noz.
PRESETS: dict[str, dict[str, Any]] = {
    # CPU-sized: the four-stage tiny architecture at 1/3 of its width and 5 of its 14 blocks (1.5 M parameters at
    # 10 classes).
    # One core trains it at about 230 images/s at 64 px (500 at 32 px), so a few thousand images take seconds
    # per epoch; at 64 px its grids are 16x16, 8x8, 4x4 and 2x2, so orderings still differ where most work is.
    "vmamba_micro": dict(depths=(1, 1, 2, 1), dims=32, d_state=1, ssm_ratio=1.0, mlp_ratio=4.0, drop_path_rate=0.0),
    # CPU-sized, for tasks the scan must carry (experiment=long_range): two stages (grids 16 and 8 at 64 px), four
    # blocks in the second so blocks within a stage can be compared, d_state 4, one route, and the scan-ready init
    # (with the official init its scan starts at 1e-4 of the D skip and often never wakes up in minutes).
    "vmamba_long_range": dict(depths=(2, 4), dims=32, d_state=4, ssm_ratio=1.0, mlp_ratio=4.0, drop_path_rate=0.0,
                              scan_scheme="single", init="scan_ready"),
    "vmamba_tiny_s1l8": dict(depths=(2, 2, 8, 2), dims=96, d_state=1, ssm_ratio=1.0, mlp_ratio=4.0,
                             drop_path_rate=0.2),
    "vmamba_small_s1l20": dict(depths=(2, 2, 20, 2), dims=96, d_state=1, ssm_ratio=1.0, mlp_ratio=4.0,
                               drop_path_rate=0.3),
}


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


def _create(variant: str, pretrained: bool = False, pretrained_path: str | None = None,
            pretrained_weights_only: bool = True, **kwargs: Any) -> VMamba:
    if pretrained and not pretrained_path:
        raise ValueError(
            f"{variant}: pretrained=True needs pretrained_path=<official VMamba checkpoint .pth>; patchorder never "
            f"downloads weights. Download the file yourself (github.com/MzeroMiko/VMamba releases) and pass its path."
        )
    if kwargs.get("features_only"):
        raise ValueError(f"{variant}: features_only is not supported; use model.forward_features(images) "
                         f"(last stage, channels-last) or patchorder.models.capture_ssm for per-block quantities")
    model_kwargs = {**PRESETS[variant], **kwargs}
    model = build_model_with_cfg(VMamba, variant, pretrained=False, **model_kwargs)
    if pretrained_path:
        # The checkpoint's classifier is kept only if it fits num_classes (as timm does for fine-tuning).
        load_official_vmamba(model, pretrained_path, head="auto", weights_only=pretrained_weights_only)
    return model


@register_model
def vmamba_micro(pretrained: bool = False, **kwargs: Any) -> VMamba:
    """CPU-sized VMamba (dims 32-64-128-256, depths 1-1-2-1) for 32-64 px images."""
    return _create("vmamba_micro", pretrained, **kwargs)


@register_model
def vmamba_long_range(pretrained: bool = False, **kwargs: Any) -> VMamba:
    """Two-stage CPU-sized VMamba (dims 32-64, depths 2-4, d_state 4, single route) for long-range tasks."""
    return _create("vmamba_long_range", pretrained, **kwargs)


@register_model
def vmamba_tiny_s1l8(pretrained: bool = False, **kwargs: Any) -> VMamba:
    """Official VMamba-T (s1l8): dims 96, depths 2-2-8-2, d_state 1, ssm_ratio 1; 30.2 M parameters."""
    return _create("vmamba_tiny_s1l8", pretrained, **kwargs)


@register_model
def vmamba_small_s1l20(pretrained: bool = False, **kwargs: Any) -> VMamba:
    """Official VMamba-S (s1l20): dims 96, depths 2-2-20-2, d_state 1, ssm_ratio 1."""
    return _create("vmamba_small_s1l20", pretrained, **kwargs)
