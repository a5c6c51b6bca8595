"""Training works, not only runs: on the bundled digits a short run beats chance by a wide margin (loss falls,
accuracy rises), and the learning rate of every optimizer step follows linear warmup then cosine, computed here
from the formula (not from timm's scheduler)."""
from __future__ import annotations

import math

import pytest
from hydra import compose, initialize_config_dir
from train_support import CONF_DIR, read_csv_rows

from patchorder.training import run as train_job

pytestmark = pytest.mark.slow

LR, WARMUP_RATIO, MIN_RATIO = 3e-3, 0.1, 0.01
EPOCHS, BATCHES = 3, 12  # 36 optimizer steps of 32 images, 12 of them warmup


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("learns")
    overrides = [
        f"paths.root_dir={root}", f"paths.output_dir={root}/run", "logger=csv", "callbacks.attention=null",
        "callbacks.embedding=null", "callbacks.model_summary=null", "trainer.enable_progress_bar=false",
        "data.image_size=32", "data.batch_size=32", f"trainer.max_epochs={EPOCHS}",
        f"trainer.limit_train_batches={BATCHES}", "trainer.log_every_n_steps=1", "test=false",
        "trainer.num_sanity_val_steps=0", f"module.optimizer.lr={LR}", "module.scheduler.warmup_epochs=1",
        f"module.scheduler.warmup_lr_ratio={WARMUP_RATIO}", f"module.scheduler.min_lr_ratio={MIN_RATIO}",
        "module.label_smoothing=0.0",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    results = train_job.train(cfg)
    return results, read_csv_rows(results["csv"])


def test_a_short_run_beats_chance_by_a_margin(short_run):
    results, rows = short_run
    val = [float(r["val/acc1"]) for r in rows if r.get("val/acc1")]
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(val) == EPOCHS and len(losses) == EPOCHS * BATCHES
    chance = 1 / 10
    assert val[-1] >= chance + 0.4, val  # 10 balanced classes: chance is 10%
    assert val[-1] > val[0]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert first > math.log(10) - 0.3 and last < first - 0.8, (first, last)  # starts near ln(10), falls


def expected_lr(step: int, total: int, warmup: int) -> float:
    start, low = LR * WARMUP_RATIO, LR * MIN_RATIO
    if step < warmup:
        return start + (LR - start) * step / warmup
    return low + 0.5 * (LR - low) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_the_learning_rate_follows_warmup_then_cosine(short_run):
    _, rows = short_run
    logged = {int(r["step"]): float(r["lr"]) for r in rows if r.get("lr")}
    total, warmup = EPOCHS * BATCHES, BATCHES
    assert sorted(logged) == list(range(total))
    for step, lr in logged.items():
        assert lr == pytest.approx(expected_lr(step, total, warmup), rel=1e-6), step
    assert max(logged.values()) == pytest.approx(LR, rel=1e-6)
