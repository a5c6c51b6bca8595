"""The selective-scan backends against the float64 sequential reference, plus the dispatcher's choices."""
from __future__ import annotations

import importlib
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

import patchorder.ops.kernels as kernels
import patchorder.ops.fast as fast
from patchorder.ops import BACKENDS, selective_scan
from patchorder.ops.fast import selective_scan_fast
from patchorder.ops.reference import selective_scan_reference

dispatch = importlib.import_module("patchorder.ops.selective_scan")  # the package re-exports a same-named function
ROOT = Path(__file__).resolve().parents[1]
EPS32 = torch.finfo(torch.float32).eps
NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")

# mamba-ssm's kernel needs a GPU and the package (and has no float64); where they are missing its test is
# reported as skipped, never counted as passed.
needs_cuda_kernel = pytest.mark.skipif(
    not (torch.cuda.is_available() and kernels.mamba_ssm_available()), reason="needs CUDA and mamba-ssm"
)


def extreme_decay_inputs(b, d, n, g, length):
    """delta from 0 to 50 (exact zeros and 1e-4 among them), A from 0 to -1e3: decays from 1 to underflow."""
    gen = torch.Generator().manual_seed(3)
    delta = 50 * torch.rand(b, d, length, generator=gen)
    delta[..., ::7] = 0.0
    delta[..., 3::11] = 1e-4
    A = -torch.logspace(-3, 3, d * n).view(d, n)
    A[0, 0] = 0.0
    return {"u": torch.randn(b, d, length, generator=gen), "delta": delta, "A": A,
            "B": torch.randn(b, g, n, length, generator=gen), "C": torch.randn(b, g, n, length, generator=gen),
            "D": torch.randn(d, generator=gen), "delta_bias": None}


def make_inputs(b, d, n, g, length, *, with_D=True, with_bias=True, softplus=True, dtype=torch.float64, seed=0):
    """Random arguments in the scan's domain: A <= 0 and, without softplus, delta >= 0."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=dtype)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    delta = randn(b, d, length) if softplus else 2 * rand(b, d, length)
    return {
        "u": randn(b, d, length),
        "delta": delta,
        "A": -2 * rand(d, n),
        "B": randn(b, g, n, length),
        "C": randn(b, g, n, length),
        "D": randn(d) if with_D else None,
        "delta_bias": 0.3 * randn(d) if with_bias else None,
    }


def run_with_grads(fn, inputs: dict, softplus: bool, dy: torch.Tensor | None = None, device="cpu"):
    """y and the gradients of a fixed random loss <y, dy> w.r.t. every tensor argument."""
    leaves = {k: v.detach().to(device).requires_grad_() for k, v in inputs.items() if v is not None}
    args = [leaves.get(k) for k in NAMES]
    y = fn(*args, delta_softplus=softplus)
    if dy is None:
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(y.dtype)
    grads = torch.autograd.grad(y, list(leaves.values()), dy.to(device))
    return y.cpu(), {k: g.cpu() for k, g in zip(leaves, grads)}


def backend_fn(name):
    return lambda *args, delta_softplus: selective_scan(*args, delta_softplus=delta_softplus, backend=name)


@pytest.fixture(params=["tuned", "time-last-blocks-of-7", "time-major-blocks-of-7"])
def scan_settings(request, monkeypatch):
    """Run with the tuned settings, and with blocks of 7 steps in each buffer layout, so that every test
    crosses block boundaries, ends on a partial block, and covers both layouts at every d_state."""
    if request.param != "tuned":
        monkeypatch.setattr(fast, "MIN_BLOCK_STEPS", 7)
        monkeypatch.setattr(fast, "MAX_BLOCK_STEPS", 7)
        time_major = request.param.startswith("time-major")
        monkeypatch.setattr(fast, "TIME_MAJOR_MIN_STATE", 1 if time_major else 10**9)
    return request.param


SHAPES = [  # (b, d, n, g, l)
    (2, 8, 1, 4, 37),  # VMamba's layout: 4 groups, d_state 1, odd length
    (1, 6, 16, 1, 23),  # one group shared by all channels, d_state 16
    (2, 4, 3, 4, 1),  # g = d, a single step
    (2, 6, 16, 6, 30),  # g = d with d_state 16
    (3, 12, 2, 3, 50),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}d{}n{}g{}l{}".format(*s))
@pytest.mark.parametrize("with_D,with_bias,softplus", [(True, True, True), (False, False, False),
                                                       (True, False, False), (False, True, True)])
def test_torch_backend_matches_reference_in_float64(shape, with_D, with_bias, softplus, scan_settings):
    inputs = make_inputs(*shape, with_D=with_D, with_bias=with_bias, softplus=softplus)
    y, grads = run_with_grads(backend_fn("torch"), inputs, softplus)
    y_ref, grads_ref = run_with_grads(selective_scan_reference, inputs, softplus)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    assert grads.keys() == grads_ref.keys()
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-9, atol=1e-10, msg=f"d{name}")


@pytest.mark.parametrize("time_major", [False, True], ids=["time-last", "time-major"])
@pytest.mark.parametrize("softplus", [True, False])
@pytest.mark.parametrize("shape", [(1, 4, 2, 2, 6), (2, 2, 1, 1, 5)], ids=["n2g2", "n1g1"])
def test_gradcheck(shape, softplus, time_major, monkeypatch):
    monkeypatch.setattr(fast, "MIN_BLOCK_STEPS", 2)  # three blocks, the last one partial
    monkeypatch.setattr(fast, "MAX_BLOCK_STEPS", 2)
    monkeypatch.setattr(fast, "TIME_MAJOR_MIN_STATE", 1 if time_major else 10**9)
    inputs = make_inputs(*shape, softplus=softplus)
    args = [inputs[k].clone().requires_grad_() for k in NAMES]
    assert torch.autograd.gradcheck(lambda *a: selective_scan_fast(*a, delta_softplus=softplus), args)


def test_only_requested_gradients_are_computed_and_correct():
    """Autograd asks only for what needs it (here u, A and delta_bias); those must still match."""
    inputs = make_inputs(2, 8, 2, 4, 20)
    leaves = {k: v.clone().requires_grad_(k in ("u", "A", "delta_bias")) for k, v in inputs.items()}
    y = selective_scan_fast(*[leaves[k] for k in NAMES], delta_softplus=True)
    y.sum().backward()
    _, grads_ref = run_with_grads(selective_scan_reference, inputs, True, dy=torch.ones_like(y))
    for name, leaf in leaves.items():
        if name in ("u", "A", "delta_bias"):
            torch.testing.assert_close(leaf.grad, grads_ref[name], rtol=1e-9, atol=1e-10)
        else:
            assert leaf.grad is None


def test_non_contiguous_inputs():
    inputs = make_inputs(2, 8, 4, 2, 19)
    strided = {k: v.transpose(0, -1).contiguous().transpose(0, -1) if v.dim() > 1 else v for k, v in inputs.items()}
    assert not strided["u"].is_contiguous() and not strided["B"].is_contiguous()
    y, grads = run_with_grads(selective_scan_fast, strided, True)
    y_ref, grads_ref = run_with_grads(selective_scan_reference, inputs, True)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-9, atol=1e-10)


def magnitude_scale(inputs: dict, softplus: bool) -> torch.Tensor:
    """The scan of |u|, |B|, |C|, |D|: the size of the terms summed into y, to which float error is proportional."""
    absolute = {k: (v.abs() if v is not None and k in ("u", "B", "C", "D") else v) for k, v in inputs.items()}
    return selective_scan_reference(*[absolute[k] for k in NAMES], delta_softplus=softplus)


def assert_float32_close(inputs32: dict, softplus: bool, fn=selective_scan_fast, device="cpu"):
    """float32 fast vs float64 reference on the same (float32) inputs.

    Tolerances, in float32 epsilons (eps = 1.2e-7): y within 32 eps of the magnitude scale (the same scan on
    absolute values, so cancellation in y cannot make the check flaky): each step adds a few roundings (exp,
    softplus, product, sum), and decays <= 1 keep earlier errors from growing. Gradients within 128 eps of
    their largest entry: dA, dD and d delta_bias are sums over batch x length terms (pairwise summation error
    grows like log2 of that count, ~13 here) on top of the per-step roundings. Measured errors are 1-4 eps;
    a wrong formula or index is off by O(1).
    """
    inputs64 = {k: None if v is None else v.double() for k, v in inputs32.items()}
    y32, grads32 = run_with_grads(fn, inputs32, softplus, device=device)
    y64, grads64 = run_with_grads(selective_scan_reference, inputs64, softplus)
    assert y32.dtype == torch.float32 and torch.isfinite(y32).all()
    scale = magnitude_scale(inputs64, softplus)
    error = (y32.double() - y64).abs()
    assert (error <= 32 * EPS32 * scale + 1e-30).all(), f"max error / scale {(error / scale).max():.2e}"
    for name, expected in grads64.items():
        actual = grads32[name]
        assert actual.dtype == torch.float32 and torch.isfinite(actual).all(), name
        # (An all-zero expected gradient, such as dA at length 1, must then be matched exactly.)
        worst = (actual.double() - expected).abs().max() / expected.abs().max().clamp_min(torch.finfo().tiny)
        assert worst <= 128 * EPS32, f"d{name}: max error / max |grad| = {worst:.2e}"


@pytest.mark.parametrize("shape", [(2, 8, 1, 4, 300), (2, 8, 16, 2, 300)], ids=["n1", "n16"])
def test_float32_within_rounding_of_float64_reference(shape, scan_settings):
    inputs = make_inputs(*shape, dtype=torch.float32)
    assert_float32_close(inputs, softplus=True)


@needs_cuda_kernel
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}d{}n{}g{}l{}".format(*s))
def test_mamba_ssm_backend_within_float32_rounding_of_reference(shape):
    inputs = make_inputs(*shape, dtype=torch.float32)
    assert_float32_close(inputs, softplus=True, fn=backend_fn("mamba_ssm"), device="cuda")


@pytest.mark.slow
def test_long_sequence_with_extreme_decays_stays_finite_and_exact():
    """L = 4096, delta from 0 to 50 and A from 0 to -1e3: decays from exactly 1 to underflow (exp(-5e4))."""
    inputs = extreme_decay_inputs(1, 4, 4, 2, 4096)
    assert_float32_close(inputs, softplus=False)
    # float64 fast against float64 reference: identical up to float64 rounding.
    inputs64 = {k: None if v is None else v.double() for k, v in inputs.items()}
    y, grads = run_with_grads(selective_scan_fast, inputs64, False)
    y_ref, grads_ref = run_with_grads(selective_scan_reference, inputs64, False)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    for name in grads_ref:
        assert torch.isfinite(grads[name]).all()
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shape", [(0, 8, 2, 4, 10), (2, 8, 2, 4, 0)], ids=["empty-batch", "empty-sequence"])
def test_empty_inputs_give_empty_outputs_and_zero_parameter_gradients(shape):
    inputs = make_inputs(*shape)
    y, grads = run_with_grads(selective_scan_fast, inputs, True)
    assert y.shape == shape[:2] + shape[-1:]
    for name in ("A", "D", "delta_bias"):
        assert torch.equal(grads[name], torch.zeros_like(inputs[name])), name


def test_output_dtype_is_that_of_u():
    inputs = make_inputs(1, 4, 2, 2, 9, dtype=torch.float32)
    bf16 = {k: v.to(torch.bfloat16) if k == "u" else v for k, v in inputs.items()}
    y = selective_scan_fast(*[bf16[k] for k in NAMES], delta_softplus=True)
    assert y.dtype == torch.bfloat16
    y_ref = selective_scan_reference(*[bf16[k] for k in NAMES], delta_softplus=True)  # float32 inside
    torch.testing.assert_close(y, y_ref.to(torch.bfloat16))
    assert selective_scan_fast(*[make_inputs(1, 4, 2, 2, 9)[k] for k in NAMES]).dtype == torch.float64


def test_fast_softplus_matches_torch_softplus_to_rounding():
    x = torch.linspace(-700, 20, 400_001, dtype=torch.float64)
    expected = torch.nn.functional.softplus(x)
    assert ((fast.softplus(x) - expected) / expected).abs().max() <= 4 * torch.finfo(torch.float64).eps
    x32 = torch.linspace(-80, 20, 100_001)  # float32 softplus stays normal down to -80
    truth = torch.nn.functional.softplus(x32.double())
    assert ((fast.softplus(x32).double() - truth) / truth).abs().max() <= 4 * EPS32
    above = torch.linspace(20, 1e4, 1001, dtype=torch.float64)  # F.softplus returns x here; the true value is x + e^-x
    assert (fast.softplus(above) - above).abs().max() <= 2.1e-9
    special = fast.softplus(torch.tensor([-float("inf"), float("inf"), float("nan")]))
    assert special[0] == 0 and special[1] == float("inf") and special[2].isnan()


# ----------------------------------------------------------------------------------------------------
# Argument checks and the dispatcher.


@pytest.mark.parametrize(
    "name,bad",
    [
        ("u", torch.zeros(2, 8)),
        ("delta", torch.zeros(2, 8, 9)),
        ("A", torch.zeros(4, 2)),
        ("B", torch.zeros(2, 4, 3, 10)),  # d_state 3 instead of 2
        ("B", torch.zeros(2, 3, 2, 10)),  # 3 groups do not divide 8 channels
        ("C", torch.zeros(2, 4, 2, 11)),
        ("D", torch.zeros(4)),
        ("delta_bias", torch.zeros(8, 1)),
    ],
)
@pytest.mark.parametrize("entry", [selective_scan, selective_scan_fast], ids=["dispatcher", "fast-directly"])
def test_shape_errors_name_the_argument(name, bad, entry):
    inputs = make_inputs(2, 8, 2, 4, 10)
    inputs[name] = bad
    with pytest.raises(ValueError, match=rf"selective_scan: {name} must "):
        entry(*[inputs[k] for k in NAMES])


def test_auto_on_cpu_uses_the_torch_backend(monkeypatch):
    calls = []
    original = BACKENDS["torch"]
    monkeypatch.setitem(BACKENDS, "torch", lambda *a, **k: calls.append(1) or original(*a, **k))
    inputs = make_inputs(2, 8, 1, 4, 12)
    y = selective_scan(*[inputs[k] for k in NAMES], delta_softplus=True, backend="auto")
    assert calls == [1]
    torch.testing.assert_close(y, selective_scan_reference(*[inputs[k] for k in NAMES], delta_softplus=True))


def test_unknown_backend_is_a_clear_error():
    inputs = make_inputs(1, 4, 1, 1, 3)
    with pytest.raises(ValueError, match=r"unknown selective-scan backend 'cuda'; choose auto, reference, torch, "
                                         r"triton, mamba_ssm"):
        selective_scan(*[inputs[k] for k in NAMES], backend="cuda")


# The mamba-ssm guard logic. No GPU here, so these tests simulate the two facts the guard reads: whether
# mamba-ssm imports (by replacing the cached loader) and whether u is a CUDA tensor (by a stand-in object).


def simulate_kernels(monkeypatch, **kernel_or_none):
    """Replace the optional-kernel loader: name=callable simulates an importable kernel, name=None a missing
    package; names not given load as they really do."""
    real = kernels.load

    def load(name):
        if name not in kernel_or_none:
            return real(name)
        kernel = kernel_or_none[name]
        return (kernel, None) if kernel is not None else (None, ImportError(f"No module named {name!r}"))

    monkeypatch.setattr(kernels, "load", load)


def _without_mamba_ssm(monkeypatch):
    simulate_kernels(monkeypatch, mamba_ssm=None)


def _with_fake_mamba_ssm(monkeypatch):
    calls = []

    def fake_kernel(*args, **kwargs):
        calls.append((args, kwargs))
        return "kernel output"

    simulate_kernels(monkeypatch, mamba_ssm=fake_kernel)
    return calls


CUDA_STAND_IN = types.SimpleNamespace(is_cuda=True, device="cuda:0")


def test_simulated_cuda_without_mamba_ssm_and_triton_auto_picks_torch_and_warns_once(monkeypatch):
    simulate_kernels(monkeypatch, mamba_ssm=None, triton=None)
    monkeypatch.setattr(dispatch, "_warned_fallbacks", set())
    with pytest.warns(UserWarning, match=r"mamba-ssm is not installed.*pip install"):
        assert dispatch._auto(CUDA_STAND_IN) == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dispatch._auto(CUDA_STAND_IN) == "torch"


def test_simulated_mamba_ssm_is_chosen_for_cuda_tensors_only(monkeypatch):
    _with_fake_mamba_ssm(monkeypatch)
    assert kernels.mamba_ssm_available()
    assert dispatch._auto(CUDA_STAND_IN) == "mamba_ssm"
    assert dispatch._auto(torch.zeros(1, 1, 1)) == "torch"


def test_explicit_mamba_ssm_without_the_package_is_a_clear_error(monkeypatch):
    _without_mamba_ssm(monkeypatch)
    assert not kernels.mamba_ssm_available()
    inputs = make_inputs(1, 4, 1, 1, 3)
    with pytest.raises(RuntimeError, match=r"mamba-ssm cannot be imported.*pip install -e '\.\[cuda\]'.*'torch'"):
        selective_scan(*[inputs[k] for k in NAMES], backend="mamba_ssm")


def test_explicit_mamba_ssm_on_cpu_tensors_is_a_clear_error(monkeypatch):
    calls = _with_fake_mamba_ssm(monkeypatch)
    inputs = make_inputs(1, 4, 1, 1, 3)
    with pytest.raises(ValueError, match=r"CUDA tensors only, but u is on cpu.*backend='auto' or 'torch'"):
        selective_scan(*[inputs[k] for k in NAMES], backend="mamba_ssm")
    assert calls == []


def test_simulated_mamba_ssm_call_passes_arguments_through(monkeypatch):
    calls = _with_fake_mamba_ssm(monkeypatch)
    args = [CUDA_STAND_IN, "delta", "A", "B", "C", "D", "bias"]
    assert kernels.selective_scan_mamba_ssm(*args[:6], delta_bias="bias", delta_softplus=True) == "kernel output"
    (positional, keywords), = calls
    assert positional == tuple(args[:6])
    assert keywords == {"z": None, "delta_bias": "bias", "delta_softplus": True}


def test_importing_the_ops_never_imports_mamba_ssm():
    code = ("import sys, patchorder.ops, patchorder.ops.kernels, patchorder.ops.fast; "
            "assert 'mamba_ssm' not in sys.modules, 'imported at module import time'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_bench_scan_quick_smoke():
    """The benchmark runs end to end and prints a row with finite positive times for every method."""
    result = subprocess.run(
        [sys.executable, "experiments/benchmarks/bench_scan.py", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[2:3] in (["torch"], ["pscan"], ["reference"], ["loop"])]
    assert sorted({(r[0], r[2]) for r in rows}) == [(n, m) for n in ("1", "16") for m in ("loop", "pscan", "reference", "torch")]
    for row in rows:
        forward_ms, forward_backward_ms = float(row[3]), float(row[5])
        assert 0 < forward_ms < 60_000 and 0 < forward_backward_ms < 60_000
    assert "n=1, L=32, fwd+bwd:" in result.stdout and "n=16, L=32, fwd+bwd:" in result.stdout
