"""The Triton backend against the float64 reference, run by Triton's interpreter on CPU tensors.

triton.jit decides when a kernel is defined whether it is compiled for a GPU or interpreted, so TRITON_INTERPRET
must be set when patchorder.ops.triton_scan is first imported, not merely before the call (triton itself may
already be imported: lightning imports it). This module sets it, imports the kernels, and re-imports them if an
earlier import in this process compiled them for a GPU. The interpreter runs each kernel operation in numpy,
at a fixed cost per operation per time step: the shapes are small, the lengths those the kernels must get right.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import torch

_previous = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"
triton_scan = importlib.import_module("patchorder.ops.triton_scan")
if not triton_scan.INTERPRETED:  # compiled for a GPU by an earlier import in this process
    triton_scan = importlib.reload(triton_scan)
    importlib.import_module("patchorder.ops.kernels").load.cache_clear()  # it holds the compiled module's function
if _previous is None:  # leave the rest of the session as it was
    del os.environ["TRITON_INTERPRET"]
else:
    os.environ["TRITON_INTERPRET"] = _previous

from test_scan import (NAMES, ROOT, assert_float32_close, backend_fn, extreme_decay_inputs,  # noqa: E402
                       make_inputs, run_with_grads)

from patchorder.ops import selective_scan  # noqa: E402
from patchorder.ops.reference import selective_scan_reference  # noqa: E402

TRITON = backend_fn("triton")  # through the dispatcher, as a model calls it


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_scan.INTERPRETED


CHUNK = triton_scan.CHUNK
# (b, d, n, g, length, chunk): every n in {1, 4, 16} and g in {1, 2, 4}; lengths 1, 7, 300 and above two chunks,
# at the real chunk size and at a small one (so short runs cross several saved states, ending on a partial chunk);
# d_state 3 (padded to 4) and 80 channels in one group (three channel blocks, the last partial) for the masks.
CASES = [
    (2, 8, 1, 4, 7, CHUNK),  # VMamba's layout: 4 groups, d_state 1
    (1, 4, 4, 2, 1, CHUNK),
    (2, 4, 16, 1, 19, 8),  # above two chunks of 8
    (1, 8, 4, 4, 2 * CHUNK + 3, CHUNK),  # above two chunks of the real size
    (1, 4, 16, 2, 300, CHUNK),
    (1, 6, 1, 2, 300, 32),
    (1, 6, 3, 3, 7, CHUNK),
    (1, 80, 1, 1, 7, CHUNK),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}d{}n{}g{}l{}c{}".format(*c))
def test_values_and_gradients_match_the_float64_reference(case, monkeypatch):
    *shape, chunk = case
    monkeypatch.setattr(triton_scan, "CHUNK", chunk)
    assert_float32_close(make_inputs(*shape, dtype=torch.float32), softplus=True, fn=TRITON)


@pytest.mark.parametrize("with_D,with_bias,softplus", [(False, False, False), (True, False, False), (False, True, True)])
def test_optional_arguments(with_D, with_bias, softplus, monkeypatch):
    monkeypatch.setattr(triton_scan, "CHUNK", 4)
    inputs = make_inputs(2, 4, 2, 2, 9, with_D=with_D, with_bias=with_bias, softplus=softplus, dtype=torch.float32)
    assert_float32_close(inputs, softplus=softplus, fn=TRITON)


def test_long_sequence_with_extreme_decays_stays_finite_and_exact():
    """L = 4096, delta from 0 to 50 and A from 0 to -1e3: decays from exactly 1 to underflow (exp(-5e4)).
    One program (one group, 8 channels) keeps the interpreter's step count at the minimum."""
    inputs = extreme_decay_inputs(1, 8, 4, 1, 4096)
    assert_float32_close(inputs, softplus=False, fn=TRITON)


def test_half_precision_inputs_keep_a_float32_state():
    """bf16 and fp16 u, delta, B, C: y and the gradients come back in the inputs' dtypes and equal, to one
    rounding, the float64 scan of the same (rounded) values; a half-precision state would be far off."""
    for dtype in (torch.bfloat16, torch.float16):
        inputs = make_inputs(1, 4, 4, 2, 40, dtype=torch.float32)
        inputs = {k: (v.to(dtype) if k in ("u", "delta", "B", "C") else v) for k, v in inputs.items()}
        y, grads = run_with_grads(TRITON, inputs, True)
        exact = {k: None if v is None else v.double() for k, v in inputs.items()}
        y64, grads64 = run_with_grads(selective_scan_reference, exact, True)
        eps = torch.finfo(dtype).eps
        assert y.dtype == dtype
        scale = y64.abs().max()
        assert (y.double() - y64).abs().max() <= eps * scale, f"{dtype}: y"
        for name, expected in grads64.items():
            assert grads[name].dtype == inputs[name].dtype, name
            assert (grads[name].double() - expected).abs().max() <= eps * expected.abs().max(), f"{dtype}: d{name}"


def test_non_contiguous_inputs_and_only_requested_gradients():
    inputs = make_inputs(2, 8, 4, 2, 11, dtype=torch.float32)
    strided = {k: v.transpose(0, -1).contiguous().transpose(0, -1) if v.dim() > 1 else v for k, v in inputs.items()}
    assert not strided["u"].is_contiguous() and not strided["B"].is_contiguous()
    leaves = {k: v.clone().requires_grad_(k in ("delta", "C", "D")) for k, v in strided.items()}
    y = selective_scan(*[leaves[k] for k in NAMES], delta_softplus=True, backend="triton")
    y.sum().backward()
    exact = {k: v.double().requires_grad_() for k, v in inputs.items()}
    y64 = selective_scan_reference(*[exact[k] for k in NAMES], delta_softplus=True)
    y64.sum().backward()
    torch.testing.assert_close(y.double(), y64.detach(), rtol=1e-5, atol=1e-5)
    for name, leaf in leaves.items():
        if name in ("delta", "C", "D"):
            torch.testing.assert_close(leaf.grad.double(), exact[name].grad, rtol=1e-5, atol=1e-5)
        else:
            assert leaf.grad is None, name


@pytest.mark.parametrize("shape", [(0, 8, 2, 4, 10), (2, 8, 2, 4, 0)], ids=["empty-batch", "empty-sequence"])
def test_empty_inputs(shape):
    inputs = make_inputs(*shape, dtype=torch.float32)
    y, grads = run_with_grads(TRITON, inputs, True)
    assert y.shape == shape[:2] + shape[-1:]
    for name in ("A", "D", "delta_bias"):
        assert torch.equal(grads[name], torch.zeros_like(inputs[name])), name


def test_float64_is_refused_with_the_backends_that_take_it():
    inputs = make_inputs(1, 4, 1, 1, 3)
    with pytest.raises(TypeError, match=r"'triton' takes float32, bfloat16 or float16.*u is torch.float64.*'torch'"):
        selective_scan(*[inputs[k] for k in NAMES], backend="triton")


def test_without_the_interpreter_cpu_tensors_are_a_clear_error():
    """A fresh process without TRITON_INTERPRET: the kernels are compiled for a GPU, and CPU tensors are refused
    before any launch, with what to do instead."""
    code = (
        "import torch\n"
        "from patchorder.ops import selective_scan\n"
        "x = torch.rand(1, 2, 3)\n"
        "B = torch.rand(1, 1, 1, 3)\n"
        "try:\n"
        "    selective_scan(x, x, -torch.rand(2, 1), B, B, backend='triton')\n"
        "except ValueError as error:\n"
        "    print(error)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120, check=True)
    assert "only under the Triton interpreter" in result.stdout
    assert "TRITON_INTERPRET=1" in result.stdout and "backend='auto' or 'torch'" in result.stdout
