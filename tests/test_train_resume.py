"""In-process training runs: an interrupted-then-resumed run ends with bit-identical weights to an uninterrupted
one, a NaN loss stops the run and keeps the last good checkpoint, config errors end with a message."""
from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from train_support import CONF_DIR, TINY, read_json, state_dict_of

from patchorder.training import evaluate as evaluate_job
from patchorder.training import run as train_job

pytestmark = pytest.mark.slow

# Every source of randomness a step has: shuffled order, per-sample shift augmentation (digits), Mixup/CutMix,
# DropPath; plus EMA weights. 2 epochs of 2 batches, a checkpoint after every step, killed after step 3 (in the
# middle of epoch 1).
RESUME = [
    *TINY, "data.batch_size=16", "trainer.limit_train_batches=2", "data.drop_last_train=true", "logger=none",
    "test=false",
    "trainer.limit_val_batches=1", "trainer.deterministic=true", "trainer.enable_progress_bar=false",
    "model.drop_path_rate=0.2", "+module.mixup.mixup_alpha=0.8", "+module.mixup.cutmix_alpha=1.0",
    "module.ema.enabled=true", "module.ema.decay=0.9",
    "callbacks.model_checkpoint.every_n_train_steps=1", "callbacks.model_summary=null",
]


PERTURBED = "model.classifier.head.bias"


def cfg_for(root, name, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"paths.root_dir={root}", f"paths.output_dir={root}/outputs/day/{name}",
                                           *overrides])


@pytest.fixture(scope="module")
def resume_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    full = train_job.train(cfg_for(root, "full", *RESUME))
    with pytest.raises(Exception, match="killed before step 4"):
        train_job.train(cfg_for(root, "killed", *RESUME, "+callbacks.kill._target_=train_support.KillAtStep",
                                "+callbacks.kill.step=3"))
    resumed = train_job.train(cfg_for(root, "resumed", *RESUME, "ckpt_path=last"))
    # The killed run's checkpoint with one weight moved: a resume that really starts from the file carries it.
    checkpoint = torch.load(root / "outputs/day/killed/checkpoints/last.ckpt", weights_only=True)
    checkpoint["state_dict"][PERTURBED] += 1.0
    torch.save(checkpoint, root / "perturbed.ckpt")
    train_job.train(cfg_for(root, "perturbed", *RESUME, f"ckpt_path={root / 'perturbed.ckpt'}"))
    return root, full, read_json(root / "outputs/day/killed/results.json"), resumed


def test_interrupted_run_was_recorded(resume_runs):
    root, _, killed, _ = resume_runs
    assert killed["status"] == "failed" and "SimulatedKill" in killed["error"] and killed["global_step"] == 3
    checkpoint = torch.load(root / "outputs/day/killed/checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 3 and checkpoint["epoch"] == 1  # in the middle of the second epoch


def test_ckpt_path_last_finds_the_interrupted_run(resume_runs):
    root, _, _, resumed = resume_runs
    assert resumed["resumed_from"] == str((root / "outputs/day/killed/checkpoints/last.ckpt").resolve())
    assert resumed["status"] == "completed" and resumed["global_step"] == 4


def test_the_resumed_run_trains_only_what_was_left_and_starts_from_the_file(resume_runs):
    """Bitwise equality alone cannot tell a resume from a fresh run with the same seed: the resumed process must
    train exactly the one step left (16 images), and a change made to the checkpoint must still be there."""
    root, full, _, resumed = resume_runs
    assert resumed["train_images"] == 16 and full["train_images"] == 64
    carried = state_dict_of(root / "outputs/day/perturbed/checkpoints/last.ckpt")[PERTURBED]
    unperturbed = state_dict_of(root / "outputs/day/full/checkpoints/last.ckpt")[PERTURBED]
    assert torch.allclose(carried - unperturbed, torch.ones_like(carried), atol=0.05)


def test_resumed_weights_equal_the_uninterrupted_run_bitwise(resume_runs):
    root, full, _, resumed = resume_runs
    assert full["global_step"] == resumed["global_step"] == 4
    a = torch.load(root / "outputs/day/full/checkpoints/last.ckpt", weights_only=True)
    b = torch.load(root / "outputs/day/resumed/checkpoints/last.ckpt", weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert any(k.startswith("ema.") for k in a["state_dict"])
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for state_a, state_b in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert torch.equal(state_a["exp_avg"], state_b["exp_avg"]) and torch.equal(state_a["exp_avg_sq"],
                                                                                   state_b["exp_avg_sq"])


def test_eval_uses_the_trained_ordering_and_ema_weights(resume_runs, tmp_path):
    root, _, _, _ = resume_runs
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[f"ckpt_path={root}/outputs/day/full/checkpoints/last.ckpt", "split=val",
                                         f"paths.output_dir={tmp_path}", "trainer.enable_progress_bar=false"])
    results = evaluate_job.evaluate(cfg)
    assert (results["ordering"], results["trained_ordering"], results["weights"]) == ("row_major", "row_major", "ema")
    assert results["num_images"] == 270 and 0 <= results["metrics"]["acc1"] <= 1
    assert read_json(tmp_path / "results.json")["metrics"] == results["metrics"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    cfg = cfg_for(tmp_path, "nan", *TINY, "trainer.max_epochs=3", "logger=none", "test=false",
                  "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "callbacks.model_summary=null",
                  "+callbacks.nan._target_=train_support.InjectNaN", "+callbacks.nan.step=4")
    with pytest.raises(SystemExit) as stop:
        train_job.main(cfg)
    assert stop.value.code == 1
    out = capsys.readouterr().out
    assert "the loss is nan at global step 4 (epoch 1, batch 1)" in " ".join(out.split())
    assert "lower the learning rate" in out and "Traceback" not in out
    run_dir = tmp_path / "outputs/day/nan"
    results = read_json(run_dir / "results.json")
    assert results["status"] == "failed" and results["error"].startswith("NonFiniteLossError")
    last = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 3  # written at the end of epoch 0, not overwritten after the NaN
    assert all(torch.isfinite(v).all() for v in state_dict_of(run_dir / "checkpoints/last.ckpt").values()
               if v.is_floating_point())


def test_config_error_ends_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        train_job.main(cfg_for(tmp_path, "bad", "ordering.name=zigzag_unknown"))
    assert stop.value.code == 2
    out = capsys.readouterr().out
    assert "zigzag_unknown" in out and "spiral" in out and "Traceback" not in out
    results = read_json(tmp_path / "outputs/day/bad/results.json")
    assert results["status"] == "failed" and results["error"].startswith("ConfigError")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        eval_cfg = compose("eval", overrides=["ckpt_path=/nonexistent.ckpt", f"paths.output_dir={tmp_path}/eval"])
    with pytest.raises(SystemExit) as stop:
        evaluate_job.main(eval_cfg)
    assert stop.value.code == 2 and "does not exist" in capsys.readouterr().out


def test_data_errors_end_with_the_data_modules_message(tmp_path, capsys):
    cfg = cfg_for(tmp_path, "paper", "experiment=paper", "trainer=cpu", "logger=none", "data.root=/nonexistent/imagenet")
    with pytest.raises(SystemExit) as stop:
        train_job.main(cfg)
    out = " ".join(capsys.readouterr().out.split())
    assert stop.value.code == 2 and "DataConfigError" in out and "/nonexistent/imagenet" in out
    assert "Traceback" not in out
