"""Mixed precision: under bf16 autocast every matmul runs in bf16 but the selective scan runs in float32
(half-precision scans are where VMamba users see NaN losses). Checked on CPU, where autocast works the same way:
a training step of the model, and train.py with trainer.precision=bf16-mixed as a user would run it."""
from __future__ import annotations

import math

import pytest
import timm
import torch
from train_support import TINY, read_json, run_dirs, run_script

import patchorder.models  # noqa: F401  (registers the presets with timm)
import patchorder.models.ss2d as ss2d


def test_bf16_autocast_training_step_scans_in_float32(monkeypatch):
    seen = []
    real_scan = ss2d.selective_scan

    def recording_scan(*args, **kwargs):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        seen.append(({a.dtype for a in tensors}, torch.is_autocast_enabled("cpu")))
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(ss2d, "selective_scan", recording_scan)
    torch.manual_seed(0)
    model = timm.create_model("vmamba_micro", num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images)
        loss = torch.nn.functional.cross_entropy(logits, labels)
    assert logits.dtype == torch.bfloat16  # autocast really was on around the model
    loss.backward()
    optimizer.step()

    assert len(seen) == len(list(model.ss2d_blocks())) > 0
    for dtypes, autocast_inside in seen:
        assert dtypes == {torch.float32} and not autocast_inside
    assert math.isfinite(loss.item())
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and p.grad is not None and torch.isfinite(p.grad).all(), name
    # The bf16 forward agrees with the float32 one to bf16 precision (the scan is not what differs).
    with torch.no_grad():
        reference = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(images).float()
    assert (mixed - reference).abs().max() <= 0.05 * reference.abs().max()


@pytest.mark.slow
def test_train_py_with_bf16_mixed_precision_on_cpu(tmp_path):
    args = [*TINY, "trainer.precision=bf16-mixed", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0"]
    proc = run_script("train.py", args, tmp_path, timeout=900)  # seconds of CPU; minutes on a loaded machine
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    results = read_json(run_dir / "results.json")
    assert results["status"] == "completed"
    assert "precision: bf16-mixed" in (run_dir / "config.yaml").read_text()
    for key in ("train/loss", "val/loss"):
        assert math.isfinite(results["final"][key]), key
