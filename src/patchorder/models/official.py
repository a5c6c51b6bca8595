"""Load checkpoints of the official VMamba (MzeroMiko/VMamba, v2 ``VSSM``) into :class:`VMamba`."""
from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

# Legacy prefixes renamed by the official VSSM._load_from_state_dict (v0/v1 checkpoints).
_LEGACY_PREFIXES = [
    ("patch_embed.proj.", "patch_embed.0."),
    ("patch_embed.norm.", "patch_embed.2."),
    ("norm.", "classifier.norm."),
    ("head.", "classifier.head."),
]
_LEGACY_BLOCK_PARTS = [(".ln_1.", ".norm."), (".self_attention.", ".op.")]
# 1x1 projections some checkpoints store as conv weights (out, in, 1, 1); ours are (out, in).
_PROJECTIONS = (".op.in_proj.weight", ".op.out_proj.weight", ".mlp.fc1.weight", ".mlp.fc2.weight")
_HEAD_KEYS = ("classifier.head.weight", "classifier.head.bias")


class OfficialCheckpointError(ValueError):
    """An official checkpoint that does not fit the model; the message lists every key that differs."""


def read_checkpoint(source: str | os.PathLike | Mapping[str, Any], weights_only: bool = True) -> dict:
    """The state_dict inside an official checkpoint file or dict ("model" entry, or "state_dict", or itself)."""
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"official VMamba checkpoint not found: {os.fspath(source)!r}")
        try:
            source = torch.load(source, map_location="cpu", weights_only=weights_only)
        except pickle.UnpicklingError as err:
            raise OfficialCheckpointError(
                f"{os.fspath(source)!r} holds Python objects besides tensors (official training checkpoints keep "
                f"their config); if you trust the file, pass weights_only=False to load_official_vmamba "
                f"(pretrained_weights_only=False to timm.create_model)"
            ) from err
    if not isinstance(source, Mapping):
        raise OfficialCheckpointError(f"expected a checkpoint dict or state_dict, got {type(source).__name__}")
    if source and all(isinstance(v, torch.Tensor) for v in source.values()):
        return dict(source)
    for key in ("model", "state_dict"):
        if isinstance(source.get(key), Mapping):
            return dict(source[key])
    raise OfficialCheckpointError(
        f"no state_dict in checkpoint: expected tensors, or a 'model' or 'state_dict' entry; found keys "
        f"{sorted(source)[:10]}"
    )


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official key names (current and legacy forms) -> this package's names, which are the current official ones."""
    converted = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")  # saved from DistributedDataParallel
        for old, new in _LEGACY_PREFIXES:
            if key.startswith(old):
                key = new + key[len(old):]
        if key.startswith("layers."):
            for old, new in _LEGACY_BLOCK_PARTS:
                key = key.replace(old, new)
        if key.endswith(_PROJECTIONS) and value.dim() == 4 and value.shape[2:] == (1, 1):
            value = value.flatten(1)
        converted[key] = value
    return converted


def load_official_vmamba(
    model: nn.Module,
    checkpoint: str | os.PathLike | Mapping[str, Any],
    head: str = "load",
    weights_only: bool = True,
) -> nn.Module:
    """Copy an official VMamba v2 checkpoint (path, checkpoint dict or state_dict) into ``model``.

    ``head``: "load" (the classifier must match), "skip" (keep the model's own head, e.g. to fine-tune on other
    classes) or "auto" (load it when its shape matches, else keep the model's). Raises
    :class:`OfficialCheckpointError` listing missing, unexpected and shape-mismatched keys; nothing is copied then.
    """
    if head not in ("load", "skip", "auto"):
        raise ValueError(f"head must be 'load', 'skip' or 'auto', got {head!r}")
    state = convert_official_state_dict(read_checkpoint(checkpoint, weights_only=weights_only))
    own = model.state_dict()
    if head == "auto":
        head = "load" if all(k in state and state[k].shape == own[k].shape for k in _HEAD_KEYS if k in own) else "skip"
    if head == "skip":
        state = {k: v for k, v in state.items() if k not in _HEAD_KEYS}
        own = {k: v for k, v in own.items() if k not in _HEAD_KEYS}

    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        raise OfficialCheckpointError(_describe(model, missing, unexpected, mismatched))
    model.load_state_dict(state, strict=head == "load")
    return model


def _describe(model: nn.Module, missing: list[str], unexpected: list[str], mismatched: list[str]) -> str:
    lines = ["the official checkpoint does not fit this model:"]
    for title, keys in (("missing from checkpoint", missing), ("unexpected in checkpoint", unexpected),
                        ("shape mismatch", mismatched)):
        if keys:
            shown = keys[:20] + ([f"... and {len(keys) - 20} more"] if len(keys) > 20 else [])
            lines.append(f"  {title} ({len(keys)}): " + "; ".join(shown))
    if any(".op." in m and ("x_proj_weight" in m or "A_logs" in m) for m in mismatched):
        lines.append(
            f"  hint: official checkpoints have 4 routes per block (scan_scheme='cross4'); this model uses "
            f"{getattr(model, 'scan_scheme', '?')!r}. Per-route parameters also scale with dims, d_state and ssm_ratio."
        )
    if any(k.startswith("classifier.head") for k in missing + unexpected) or any(
        m.startswith("classifier.head") for m in mismatched
    ):
        lines.append("  hint: for a different number of classes pass head='skip' (or 'auto') to keep a fresh head")
    lines.append("  build the model with the checkpoint's configuration (depths, dims, d_state, ssm_ratio).")
    return "\n".join(lines)
