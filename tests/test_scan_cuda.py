"""The GPU path, on a real GPU: the Triton kernels compiled for it, auto's choice, a bf16 training step.

Skipped (reported as skipped, never passed) without CUDA; run on a GPU machine by
experiments/benchmarks/gpu_check.py, which reports the counts. The same kernels are checked on CPU, through the
Triton interpreter, by test_scan_triton.py.
"""
from __future__ import annotations

import importlib
import math
import warnings

import pytest
import timm
import torch
from test_scan import NAMES, assert_float32_close, backend_fn, extreme_decay_inputs, make_inputs, run_with_grads

import patchorder.models  # noqa: F401  (registers the presets with timm)
from patchorder.ops import kernels, selective_scan
from patchorder.ops.reference import selective_scan_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
TRITON = backend_fn("triton")
dispatch = importlib.import_module("patchorder.ops.selective_scan")


def reference_of(inputs):
    return selective_scan_reference(*[inputs[k] for k in NAMES], delta_softplus=True)


@pytest.mark.parametrize("shape", [(2, 8, 1, 4, 37), (1, 6, 16, 1, 300), (2, 96, 1, 4, 130), (2, 80, 3, 1, 65),
                                   (1, 4, 4, 2, 1)], ids=lambda s: "b{}d{}n{}g{}l{}".format(*s))
def test_triton_on_cuda_within_float32_rounding_of_the_reference(shape):
    assert_float32_close(make_inputs(*shape, dtype=torch.float32), softplus=True, fn=TRITON, device="cuda")


def test_triton_on_cuda_long_sequence_with_extreme_decays():
    inputs = extreme_decay_inputs(2, 16, 4, 2, 4096)
    assert_float32_close(inputs, softplus=False, fn=TRITON, device="cuda")


@pytest.mark.parametrize("d_state", [1, 16])
def test_triton_and_torch_backends_agree_at_vmamba_tiny_sizes(d_state):
    """Stage 1 of VMamba-T: 4 routes x 96 channels, 56 x 56 patches."""
    inputs = make_inputs(2, 384, d_state, 4, 3136, dtype=torch.float32)
    y, grads = run_with_grads(TRITON, inputs, True, device="cuda")
    y_ref, grads_ref = run_with_grads(backend_fn("torch"), inputs, True, device="cuda")
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    for name in grads_ref:
        scale = grads_ref[name].abs().max()
        assert (grads[name] - grads_ref[name]).abs().max() <= 1e-4 * scale, name


def test_triton_on_cuda_takes_bf16_inputs():
    inputs = make_inputs(2, 8, 4, 4, 200, dtype=torch.float32)
    inputs = {k: (v.to(torch.bfloat16) if k in ("u", "delta", "B", "C") else v) for k, v in inputs.items()}
    y, _ = run_with_grads(TRITON, inputs, True, device="cuda")
    exact = {k: None if v is None else v.double() for k, v in inputs.items()}
    y64 = reference_of(exact)
    assert y.dtype == torch.bfloat16
    assert (y.double() - y64).abs().max() <= torch.finfo(torch.bfloat16).eps * y64.abs().max()


def test_auto_on_cuda_picks_mamba_ssm_or_else_triton(monkeypatch):
    monkeypatch.setattr(dispatch, "_warned_fallbacks", set())
    expected = "mamba_ssm" if kernels.available("mamba_ssm") else "triton"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert dispatch._auto(torch.zeros(1, device="cuda")) == expected
    assert len(caught) == (expected == "triton")  # the fallback from mamba-ssm is said
    inputs = make_inputs(1, 8, 1, 4, 20, dtype=torch.float32)
    y = selective_scan(*[None if inputs[k] is None else inputs[k].cuda() for k in NAMES], delta_softplus=True)
    torch.testing.assert_close(y.cpu(), reference_of(inputs), rtol=1e-5, atol=1e-5)


def test_bf16_training_step_on_cuda_with_the_triton_scan():
    torch.manual_seed(0)
    model = timm.create_model("vmamba_micro", num_classes=10, scan_backend="triton").cuda()
    model = model.to(memory_format=torch.channels_last)
    images = torch.randn(8, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (8,), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    assert math.isfinite(loss.item())
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    with torch.no_grad():
        for op in model.ss2d_blocks():
            op.scan_backend = "torch"
        reference = model(images)
        for op in model.ss2d_blocks():
            op.scan_backend = "triton"
        torch.testing.assert_close(model(images), reference, rtol=1e-3, atol=1e-3)
