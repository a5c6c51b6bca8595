"""experiments/benchmarks/gpu_check.py without a GPU: its --dry-run runs the same parts on the CPU with tiny
shapes (the scan through the Triton interpreter), so the JSON writing, the time limits and the figures' keys are
checked here; only the sizes and the device differ on a GPU machine."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from test_scan import ROOT

SCRIPT = ROOT / "experiments" / "benchmarks" / "gpu_check.py"
spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def run_check(tmp_path, *args, timeout=1800):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_dry_run_measures_every_figure_and_time_boxes_a_part(tmp_path):
    report = run_check(tmp_path, "--parts", "environment", "scan_benchmark", "inference", "attention_block",
                       "train_eager", "--budget", "1700", "--timeout", "inference=0.5",
                       # generous limits: a shared CPU machine can be 10x slower than an idle one
                       *(f"{part}=300" for part in ("environment", "scan_benchmark", "attention_block", "train_eager")))
    parts = report["parts"]
    assert report["dry_run"] is True and "finished" in report
    assert parts["environment"]["status"] == "ok"
    assert parts["environment"]["figures"]["triton_importable"] is True

    scan = parts["scan_benchmark"]
    assert scan["status"] == "ok", scan.get("error")
    expected = {f"n{n}_L16_{kind}_ms_{method}" for n in (1, 4) for kind in ("fwd", "fwd_bwd")
                for method in ("triton", "torch")}
    assert expected <= scan["figures"].keys()
    assert all(scan["figures"][key] > 0 for key in expected)

    assert parts["inference"]["status"] == "timeout"  # 0.5 s: not even enough to import torch
    assert parts["inference"]["seconds"] < 30

    attention = parts["attention_block"]
    assert attention["status"] == "ok", attention.get("error")
    assert attention["figures"]["grid"] == [8, 8] and attention["figures"]["shape"] == [1, 64, 64]
    assert attention["figures"]["finite"] is True

    train = parts["train_eager"]
    assert train["status"] == "ok", train.get("error")
    assert train["figures"]["loss_finite"] is True and train["figures"]["images_per_s"] > 0

    summary = report["summary"]
    assert summary["train_images_per_s_best"] == train["figures"]["images_per_s"]
    assert "triton_speedup_over_torch_L3136_fwd_bwd" not in summary  # no L=3136 in a dry run


def test_a_failing_or_hanging_part_is_reported_and_the_json_kept(tmp_path):
    figures = tmp_path / "figures.json"
    figures.write_text(json.dumps({"measured": 1.5}))
    failed = gpu_check.run_timed([sys.executable, "-c", "raise SystemExit('broken kernel')"], 60, figures)
    assert failed["status"] == "failed" and "broken kernel" in failed["error"]
    assert failed["figures"] == {"measured": 1.5}  # what the part recorded before failing survives
    hung = gpu_check.run_timed([sys.executable, "-c", "import time; time.sleep(60)"], 1, tmp_path / "none.json")
    assert hung["status"] == "timeout" and hung["seconds"] < 30 and "figures" not in hung


def test_summary_checks_the_targets():
    parts = {
        "scan_benchmark": {"figures": {"n1_L3136_fwd_bwd_ms_torch": 300.0, "n1_L3136_fwd_bwd_ms_triton": 20.0,
                                       "n16_L3136_fwd_bwd_ms_torch": 900.0, "n16_L3136_fwd_bwd_ms_triton": 100.0}},
        "train_eager": {"figures": {"images_per_s": 500.0}},
        "train_compiled": {"figures": {"images_per_s": 600.0}},
    }
    summary = gpu_check.summarize(parts)
    assert summary["triton_speedup_over_torch_L3136_fwd_bwd"] == {"n1_L3136": 15.0, "n16_L3136": 9.0}
    assert summary["triton_target_met"] is False  # n=16 is only 9x
    assert summary["train_images_per_s_best"] == 600.0 and summary["train_target_met"] is True


def test_bad_timeout_override_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path / "x.json"),
                           "--timeout", "nonsense=3"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--timeout takes PART=SECONDS" in proc.stderr
    assert not (tmp_path / "x.json").exists()
