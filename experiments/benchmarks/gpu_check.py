"""One prepared check of the GPU path; writes one JSON of figures.

    make setup && .venv/bin/python experiments/benchmarks/gpu_check.py            # on a CUDA machine, <= 8 min
    python experiments/benchmarks/gpu_check.py --dry-run --out /tmp/check.json   # CPU smoke run of the same code

Parts, each run in its own subprocess under a time limit (a hung kernel or a crash costs that part, never the
report): the CUDA-only tests (pytest); the selective-scan benchmark at VMamba-T shapes (b=128, d=384, g=4,
n=1 and 16, L=3136 and 196; forward and forward+backward) for triton, torch and mamba-ssm when importable;
VMamba-T training images/s at batch 128 in bf16 autocast, channels-last, eager and torch.compile'd;
inference images/s; one 56x56 attention block (stage 1 of VMamba-T at 224 px); a 2-epoch micro training run
(train.py trainer=gpu experiment=quick). The JSON is rewritten after every part, and each part records its
figures as it measures them, so a part cut short still reports what it measured.

Targets (checked in "summary"): the triton scan at least 10x the torch backend at L=3136 (fwd+bwd), and
VMamba-T training at least 571 images/s (the official code's A100 figure, with its compiled kernels).
--dry-run runs every part on the CPU with tiny shapes (the scan through the Triton interpreter), to check the
script itself; its figures mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOTAL_BUDGET_S = 450  # the whole check, under the 8 minutes promised (480 s), process start-ups included
# name -> seconds it may take at most; run in this order (the most likely to run long last).
PARTS = {
    "environment": 45,
    "scan_benchmark": 100,
    "train_eager": 55,
    "inference": 30,
    "attention_block": 30,
    "micro_training": 70,
    "cuda_tests": 120,
    "train_compiled": 120,
}
TARGETS = {"triton_vs_torch_L3136_fwd_bwd": 10.0, "train_images_per_s": 571.0}
CUDA_TEST_NODES = ["tests/test_scan_cuda.py", "tests/test_scan.py::test_mamba_ssm_backend_within_float32_rounding_of_reference"]


def sizes(dry_run: bool) -> dict:
    """Shapes of every part: the real ones, or tiny CPU ones for --dry-run."""
    if dry_run:
        return dict(device="cpu", scan_batch=1, scan_channels=8, scan_states=[1, 4], scan_lengths=[16],
                    scan_repeats=1, model="vmamba_micro", image=32, batch=4, steps=2, warmup=1,
                    attention_model="vmamba_micro", attention_image=32,
                    micro=["data.image_size=32", "data.batch_size=32", "trainer.limit_train_batches=2",
                           "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0"])
    return dict(device="cuda", scan_batch=128, scan_channels=384, scan_states=[1, 16], scan_lengths=[3136, 196],
                scan_repeats=5, model="vmamba_tiny_s1l8", image=224, batch=128, steps=10, warmup=3,
                attention_model="vmamba_tiny_s1l8", attention_image=224, micro=[])


# ----------------------------------------------------------------------------------------------------
# The parts. Each runs in a fresh process and reports figures through `record` as soon as it has them.


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _median_seconds(fn, device: str, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def part_environment(cfg, record) -> None:
    import torch

    from patchorder.ops import kernels

    record("python", platform.python_version())
    record("torch", torch.__version__)
    record("cuda_available", torch.cuda.is_available())
    if torch.cuda.is_available():
        record("gpu", torch.cuda.get_device_name(0))
        record("gpu_memory_gib", round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
        record("bf16_supported", torch.cuda.is_bf16_supported())
    for name in ("triton", "mamba_ssm"):
        kernel, reason = kernels.load(name)
        record(f"{name}_importable", kernel is not None)
        if kernel is None:
            record(f"{name}_reason", str(reason))
    if kernels.available("triton"):
        import triton

        record("triton_version", triton.__version__)


def part_scan_benchmark(cfg, record) -> None:
    import torch

    from patchorder.ops import kernels, selective_scan

    device = cfg["device"]
    methods = ["triton", "torch"] + (["mamba_ssm"] if device == "cuda" and kernels.available("mamba_ssm") else [])
    b, d, groups = cfg["scan_batch"], cfg["scan_channels"], 4
    for n in cfg["scan_states"]:
        for length in cfg["scan_lengths"]:
            gen = torch.Generator(device=device).manual_seed(0)

            def rand(*shape, scale=1.0, shift=0.0):
                return (torch.randn(*shape, generator=gen, device=device) * scale + shift).requires_grad_()

            # As in training: softplus(delta + bias) ~ 0.1; A from the S4D-real init.
            args = [rand(b, d, length), rand(b, d, length, shift=-2.0),
                    (-torch.arange(1, n + 1, device=device, dtype=torch.float32).repeat(d, 1)).requires_grad_(),
                    rand(b, groups, n, length), rand(b, groups, n, length), rand(d), rand(d, scale=0.1)]
            dy = torch.randn(b, d, length, generator=gen, device=device)
            for method in methods:
                def forward(method=method):
                    with torch.no_grad():
                        selective_scan(*args, delta_softplus=True, backend=method)

                def forward_backward(method=method):
                    selective_scan(*args, delta_softplus=True, backend=method).backward(dy)

                for label, fn in (("fwd", forward), ("fwd_bwd", forward_backward)):
                    seconds = _median_seconds(fn, device, cfg["scan_repeats"])
                    record(f"n{n}_L{length}_{label}_ms_{method}", round(seconds * 1e3, 3))
            del args, dy


def _model(cfg, name: str):
    import timm
    import torch

    import patchorder.models  # noqa: F401  (registers the presets)

    model = timm.create_model(name, num_classes=1000).to(cfg["device"])
    return model.to(memory_format=torch.channels_last)


def _images(cfg, image: int):
    import torch

    images = torch.randn(cfg["batch"], 3, image, image, device=cfg["device"])
    labels = torch.randint(0, 1000, (cfg["batch"],), device=cfg["device"])
    return images.contiguous(memory_format=torch.channels_last), labels


def _train_throughput(cfg, record, compiled: bool) -> None:
    import torch

    device = cfg["device"]
    model = _model(cfg, cfg["model"]).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    forward = torch.compile(model) if compiled else model
    images, labels = _images(cfg, cfg["image"])

    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(forward(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    start = time.perf_counter()
    loss = step()  # the first step compiles (torch.compile, Triton JIT) and allocates
    _sync(device)
    record("first_step_s", round(time.perf_counter() - start, 2))
    record("loss_finite", bool(torch.isfinite(loss).item()))
    seconds = _median_seconds(step, device, cfg["steps"], warmup=cfg["warmup"])
    record("batch", cfg["batch"])
    record("images_per_s", round(cfg["batch"] / seconds, 1))
    if device == "cuda":
        record("peak_memory_gib", round(torch.cuda.max_memory_allocated() / 2**30, 2))


def part_train_eager(cfg, record) -> None:
    _train_throughput(cfg, record, compiled=False)


def part_train_compiled(cfg, record) -> None:
    _train_throughput(cfg, record, compiled=True)


def part_inference(cfg, record) -> None:
    import torch

    model = _model(cfg, cfg["model"]).eval()
    images, _ = _images(cfg, cfg["image"])

    def run():
        with torch.inference_mode(), torch.autocast(cfg["device"], dtype=torch.bfloat16):
            model(images)

    seconds = _median_seconds(run, cfg["device"], cfg["steps"], warmup=cfg["warmup"])
    record("batch", cfg["batch"])
    record("images_per_s", round(cfg["batch"] / seconds, 1))


def part_attention_block(cfg, record) -> None:
    import torch

    from patchorder.attention import block_attention
    from patchorder.models import capture_ssm

    model = _model(cfg, cfg["attention_model"]).eval()
    images = torch.randn(1, 3, cfg["attention_image"], cfg["attention_image"], device=cfg["device"])
    with torch.no_grad(), capture_ssm(model, stages=[0], blocks=[0]) as records:
        model(images)
    (block,) = records
    record("grid", list(block.grid))

    def run():
        return block_attention(block)

    attention = run()
    record("shape", list(attention.shape))
    record("finite", bool(torch.isfinite(attention).all().item()))
    record("seconds", round(_median_seconds(run, cfg["device"], 3, warmup=0), 4))


def part_micro_training(cfg, record) -> None:
    with tempfile.TemporaryDirectory() as root:
        trainer = "trainer=gpu" if cfg["device"] == "cuda" else "trainer=cpu"
        args = [sys.executable, str(ROOT / "train.py"), "experiment=quick", trainer, "trainer.max_epochs=2",
                "logger=csv", "callbacks.attention=null", "callbacks.embedding=null", *cfg["micro"]]
        env = {**os.environ, "PATCHORDER_ROOT": root, "WANDB_MODE": "offline"}
        start = time.perf_counter()
        proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True)
        record("seconds", round(time.perf_counter() - start, 1))
        record("returncode", proc.returncode)
        if proc.returncode:
            raise RuntimeError(f"train.py failed:\n{proc.stderr[-2000:]}")
        (results,) = Path(root).glob("outputs/*/*/results.json")
        data = json.loads(results.read_text())
        record("results", {k: v for k, v in data.items() if isinstance(v, (int, float, str, dict))})


def part_cuda_tests(cfg, record) -> None:
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                               f"--junitxml={report}", *CUDA_TEST_NODES], cwd=ROOT, capture_output=True, text=True)
        record("returncode", proc.returncode)
        if report.exists():
            suite = ET.parse(report).getroot()
            suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
            for key in ("tests", "failures", "errors", "skipped"):
                record(key, int(suite.get(key, 0)))
            record("failed", [case.get("classname", "") + "::" + case.get("name", "")
                              for case in suite.iter("testcase") if case.find("failure") is not None
                              or case.find("error") is not None])
        record("output_tail", proc.stdout[-1500:])
        if proc.returncode not in (0, 5):  # 5: nothing collected
            raise RuntimeError("CUDA tests failed")


PART_FUNCTIONS = {name: globals()[f"part_{name}"] for name in PARTS}


# ----------------------------------------------------------------------------------------------------
# The driver: every part in a subprocess, under its own time limit and the total budget.


def run_part_process(name: str, dry_run: bool, out: Path) -> None:
    """Body of `--part NAME`: run one part, its figures written to `out` after each one."""
    figures: dict = {}

    def record(key, value):
        figures[key] = value
        out.write_text(json.dumps(figures, indent=1))

    record("started", True)
    PART_FUNCTIONS[name](sizes(dry_run), record)


def run_timed(command: list[str], timeout: float, figures_file: Path, env: dict | None = None) -> dict:
    """Run one part's command; what it recorded, with its status, seconds and (on failure) the error tail."""
    start = time.perf_counter()
    entry: dict = {}
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(timeout, 0.1))
        entry["status"] = "ok" if proc.returncode == 0 else "failed"
        if proc.returncode:
            entry["error"] = (proc.stderr or proc.stdout)[-2500:]
    except subprocess.TimeoutExpired as expired:
        entry["status"] = "timeout"
        entry["error"] = f"stopped after {timeout:.0f} s; " + _text(expired.stderr)[-1000:]
    entry["seconds"] = round(time.perf_counter() - start, 1)
    if figures_file.exists() and figures_file.read_text():
        try:
            entry["figures"] = json.loads(figures_file.read_text())
        except json.JSONDecodeError:  # killed while writing
            entry["figures"] = None
    return entry


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def summarize(parts: dict) -> dict:
    """The two target checks, where the figures exist."""
    summary = {}
    scan = (parts.get("scan_benchmark") or {}).get("figures") or {}
    ratios = {}
    for key, torch_ms in scan.items():
        if key.endswith("_ms_torch") and "L3136_fwd_bwd" in key and key.replace("_torch", "_triton") in scan:
            ratios[key.split("_fwd_bwd")[0]] = round(torch_ms / scan[key.replace("_torch", "_triton")], 2)
    if ratios:
        target = TARGETS["triton_vs_torch_L3136_fwd_bwd"]
        summary["triton_speedup_over_torch_L3136_fwd_bwd"] = ratios
        summary["triton_target_met"] = all(r >= target for r in ratios.values())
        summary["triton_target"] = f">= {target}x"
    train = (parts.get("train_eager") or {}).get("figures") or {}
    compiled = (parts.get("train_compiled") or {}).get("figures") or {}
    best = max([f["images_per_s"] for f in (train, compiled) if "images_per_s" in f], default=None)
    if best is not None:
        summary["train_images_per_s_best"] = best
        summary["train_target_met"] = best >= TARGETS["train_images_per_s"]
        summary["train_target"] = f">= {TARGETS['train_images_per_s']} images/s (official VMamba-T on an A100)"
    return summary


def write(out: Path, report: dict) -> None:
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(out)  # never a half-written report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "gpu_check.json", help="the JSON to write")
    parser.add_argument("--dry-run", action="store_true", help="every part on the CPU with tiny shapes")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS), help="run only these")
    parser.add_argument("--budget", type=float, default=TOTAL_BUDGET_S, help="seconds for the whole check")
    parser.add_argument("--timeout", nargs="+", default=[], metavar="PART=SECONDS",
                        help="override a part's time limit")
    parser.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)  # internal: run one part
    parser.add_argument("--figures", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        run_part_process(args.part, args.dry_run, args.figures)
        return
    limits = dict(PARTS)
    for item in args.timeout:
        name, _, seconds = item.partition("=")
        if name not in PARTS or not seconds:
            parser.error(f"--timeout takes PART=SECONDS with PART one of {', '.join(PARTS)}; got {item!r}")
        limits[name] = float(seconds)

    deadline = time.monotonic() + args.budget
    report = {"dry_run": args.dry_run, "budget_s": args.budget, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "parts": {name: {"status": "pending"} for name in args.parts}}
    write(args.out, report)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT),
                                                                      os.environ.get("PYTHONPATH")]))}
    if args.dry_run:  # the CPU has no GPU to compile the Triton kernels for: interpret them
        env["TRITON_INTERPRET"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.parts:
            remaining = deadline - time.monotonic()
            if remaining < 5:
                report["parts"][name] = {"status": "skipped", "error": "the total budget was spent"}
                continue
            figures = Path(tmp) / f"{name}.json"
            command = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--figures", str(figures)]
            command += ["--dry-run"] if args.dry_run else []
            try:
                report["parts"][name] = run_timed(command, min(limits[name], remaining), figures, env)
            except Exception:  # never lose the report to the driver itself
                report["parts"][name] = {"status": "failed", "error": traceback.format_exc()[-2500:]}
            report["summary"] = summarize(report["parts"])
            write(args.out, report)
            print(f"{name}: {report['parts'][name]['status']} ({report['parts'][name].get('seconds', 0)} s)",
                  flush=True)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    write(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
