"""trainer=ddp_cpu for real: two processes (gloo) share each epoch, and only rank 0 logs and writes results; EMA on
(as experiment=paper has it: its parameters must take no gradients under DDP)."""
from __future__ import annotations

import math

import pytest
import torch
from train_support import read_csv_rows, read_json, run_dirs, run_script, state_dict_of

pytestmark = pytest.mark.slow


def test_ddp_cpu_two_processes(tmp_path):
    batch = 32
    # A small training split (10% of digits) so one whole epoch is cheap. The default callbacks stay on: the
    # rank-0-only attention and embedding loggers must not stall the other process.
    proc = run_script("train.py", ["trainer=ddp_cpu", "trainer.max_epochs=1", f"data.batch_size={batch}",
                                   "data.image_size=32", "data.val_fraction=0.1", "data.test_fraction=0.8", "trainer.limit_val_batches=1",
                                   "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=1", "test=false",
                                   "module.ema.enabled=true", "module.ema.decay=0.9"],
                      tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    results = read_json(run_dir / "results.json")
    assert results["status"] == "completed"
    assert (results["world_size"], results["strategy"], results["process_group_backend"]) == (2, "DDPStrategy", "gloo")
    # Each process trains on half of the training images, not the whole set.
    per_rank = math.ceil(results["data"]["counts"]["train"] / 2)
    assert results["train_batches_per_epoch"] == math.ceil(per_rank / batch) == results["global_step"]
    assert results["train_images"] == 2 * per_rank
    # Rank 1 ran in its own process (Lightning re-launched train.py; Hydra gave it its own log file) ...
    assert (run_dir / "train_ddp_process_1.log").is_file()
    # ... but only rank 0 logged: one W&B run, one CSV, one results.json, one set of checkpoints.
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    rows = read_csv_rows(run_dir / "csv" / "metrics.csv")
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps == sorted(set(steps)) and len(steps) == results["global_step"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir())[-1] == "last.ckpt"
    state = state_dict_of(run_dir / "checkpoints" / "last.ckpt")
    ema = {k[len("ema.module."):]: v for k, v in state.items() if k.startswith("ema.module.")}
    model = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    assert ema.keys() == model.keys() and any(not torch.equal(ema[k], model[k]) for k in model)
