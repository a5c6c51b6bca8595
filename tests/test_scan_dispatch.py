"""What backend="auto" picks on CUDA with each optional kernel present or absent, each fallback said once;
the Triton guard; one shape check per call. No GPU here: a stand-in object plays a CUDA tensor for the choice,
and the optional-kernel loader is replaced to simulate which packages import."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
import types
import warnings

import pytest
import torch
from test_scan import NAMES, ROOT, make_inputs, simulate_kernels

import patchorder.ops.fast as fast
import patchorder.ops.kernels as kernels
from patchorder.ops import selective_scan

dispatch = importlib.import_module("patchorder.ops.selective_scan")
CUDA_STAND_IN = types.SimpleNamespace(is_cuda=True, device="cuda:0")


def fake(name):
    return lambda *args, **kwargs: f"{name} output"


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(dispatch, "_warned_fallbacks", set())


@pytest.mark.parametrize(
    "mamba_ssm,triton,expected,warning",
    [
        (True, True, "mamba_ssm", None),
        (True, False, "mamba_ssm", None),
        (False, True, "triton", r"mamba-ssm is not installed .*: CUDA tensors use patchorder's Triton kernels.*pip"),
        (False, False, "torch", r"mamba-ssm is not installed .* and Triton is unavailable .*: CUDA tensors use "
                                r"patchorder's pure-PyTorch scan"),
    ],
    ids=["both", "mamba-ssm-only", "triton-only", "neither"],
)
def test_auto_on_cuda_prefers_mamba_ssm_then_triton_then_torch(mamba_ssm, triton, expected, warning, monkeypatch):
    simulate_kernels(monkeypatch, mamba_ssm=fake("mamba_ssm") if mamba_ssm else None,
                     triton=fake("triton") if triton else None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert dispatch._auto(CUDA_STAND_IN) == expected
        assert dispatch._auto(CUDA_STAND_IN) == expected  # the second call says nothing
    messages = [str(w.message) for w in caught]
    if warning is None:
        assert messages == []
    else:
        assert len(messages) == 1 and re.search(warning, messages[0]), messages


def test_auto_on_cpu_is_torch_without_trying_the_optional_kernels(monkeypatch):
    tried = []
    monkeypatch.setattr(kernels, "load", lambda name: tried.append(name) or (fake(name), None))
    assert dispatch._auto(torch.zeros(1, 1, 1)) == "torch"
    assert tried == []


def test_explicit_triton_without_the_package_is_a_clear_error(monkeypatch):
    simulate_kernels(monkeypatch, triton=None)
    inputs = make_inputs(1, 4, 1, 1, 3, dtype=torch.float32)
    with pytest.raises(RuntimeError, match=r"'triton' was requested but triton cannot be imported.*'torch'"):
        selective_scan(*[inputs[k] for k in NAMES], backend="triton")


def test_explicit_triton_on_cpu_without_the_interpreter_is_refused_before_the_kernel(monkeypatch):
    calls = []
    simulate_kernels(monkeypatch, triton=lambda *a, **k: calls.append(1))
    triton_scan = types.SimpleNamespace(INTERPRETED=False)
    monkeypatch.setitem(sys.modules, "patchorder.ops.triton_scan", triton_scan)
    monkeypatch.setattr("patchorder.ops.triton_scan", triton_scan, raising=False)
    inputs = make_inputs(1, 4, 1, 1, 3, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"only under the Triton interpreter.*TRITON_INTERPRET=1"):
        selective_scan(*[inputs[k] for k in NAMES], backend="triton")
    assert calls == []


def test_triton_call_passes_arguments_through(monkeypatch):
    calls = []
    simulate_kernels(monkeypatch, triton=lambda *args, **kwargs: calls.append((args, kwargs)) or "kernel output")
    args = [CUDA_STAND_IN, "delta", "A", "B", "C", "D"]
    assert kernels.selective_scan_triton(*args, delta_bias="bias", delta_softplus=True) == "kernel output"
    (positional, keywords), = calls
    assert positional == tuple(args) and keywords == {"delta_bias": "bias", "delta_softplus": True}


def test_shapes_are_checked_once_per_call(monkeypatch):
    counted = []
    for module in (dispatch, fast):
        original = module.check_scan_shapes
        monkeypatch.setattr(module, "check_scan_shapes", lambda *a, _f=original, **k: counted.append(1) or _f(*a, **k))
    inputs = make_inputs(1, 4, 2, 2, 5)
    selective_scan(*[inputs[k] for k in NAMES], backend="torch")
    assert counted == [1]
    fast.selective_scan_fast(*[inputs[k] for k in NAMES])  # the torch backend called directly checks too
    assert counted == [1, 1]


def test_importing_the_ops_imports_no_optional_kernel():
    code = ("import sys, patchorder.ops, patchorder.attention; "
            "assert not {'mamba_ssm', 'triton', 'patchorder.ops.triton_scan'} & set(sys.modules), 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
