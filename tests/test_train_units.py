"""Unit checks of the training pieces against hand-computed oracles: weight-decay groups, the warmup-cosine
schedule, the resumable data order, the sweep summary, finding ``ckpt_path=last``, the non-finite guards."""
from __future__ import annotations

import json
import math
import os
import time

import pytest
import timm
import torch

import patchorder.models  # noqa: F401  registers vmamba_micro
from patchorder.data.sampling import EpochShuffleSampler
from patchorder.training import optim, sweep
from patchorder.training.checkpoints import find_last_checkpoint
from patchorder.training.data_order import ResumableLoader, ResumableSampler
from patchorder.errors import ConfigError, NonFiniteLossError, NonFiniteWeightsError
from patchorder.training.module import ClassificationModule
from patchorder.training.results import read_results, write_results


# --- optimisation -----------------------------------------------------------------------------------------------
def test_weight_decay_skips_norms_biases_A_logs_and_Ds():
    model = timm.create_model("vmamba_micro", num_classes=10)
    groups = optim.parameter_groups(model, 0.05)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    names = dict(model.named_parameters())
    # Oracle: decay exactly the >= 2-D weights that are not A_logs (SSM state matrices).
    expected = {id(p) for n, p in names.items() if p.ndim >= 2 and not n.endswith("A_logs")}
    assert decayed == expected
    assert any(n.endswith("A_logs") for n in names) and any(n.endswith("Ds") for n in names)
    assert sum(len(g["params"]) for g in groups) == len(names)


def test_warmup_cosine_schedule_matches_its_formula():
    lr, warm, total, w_ratio, m_ratio = 2e-3, 10, 110, 1e-3, 1e-2
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=lr)
    sched = optim.build_scheduler(opt, optim.ScheduleLengths(total, warm), lr, w_ratio, m_ratio)

    def oracle(step: int) -> float:
        if step < warm:
            return lr * w_ratio + (lr - lr * w_ratio) * step / warm
        t = (step - warm) / (total - warm)
        return lr * m_ratio + 0.5 * (lr - lr * m_ratio) * (1 + math.cos(math.pi * t))

    assert opt.param_groups[0]["lr"] == pytest.approx(oracle(0))
    for step in (1, 5, 10, 35, 60, 109):
        sched.step_update(step)
        assert opt.param_groups[0]["lr"] == pytest.approx(oracle(step), rel=1e-9), step


@pytest.mark.parametrize("batches, limit, accumulate, epochs, max_steps, expected", [
    (20, 1.0, 1, 10, -1, 200),
    (20, 5, 1, 3, -1, 15),       # limit_train_batches as a count
    (20, 0.5, 1, 3, -1, 30),     # ... and as a fraction
    (21, 1.0, 4, 2, -1, 12),     # accumulation rounds up per epoch
    (20, 1.0, 1, 10, 7, 7),      # max_steps wins
])
def test_schedule_lengths(batches, limit, accumulate, epochs, max_steps, expected):
    lengths = optim.schedule_lengths(batches, limit, accumulate, epochs, max_steps, warmup_epochs=1)
    assert lengths.total_steps == expected
    assert lengths.warmup_steps == min(math.ceil(min(batches, limit if isinstance(limit, int) else
                                                     int(batches * limit)) / accumulate), expected - 1)


# --- resumable data order ---------------------------------------------------------------------------------------
def test_sampler_shares_cover_the_epoch_like_distributed_sampler():
    base = EpochShuffleSampler(10, seed=3)
    base.set_epoch(2)
    order = list(base)
    padded = order + order[:2]  # 10 keys padded to 12 for 3 ranks, as DistributedSampler does
    shares = []
    for rank in range(3):
        sampler = ResumableSampler(EpochShuffleSampler(10, seed=3), num_replicas=3, rank=rank)
        sampler.set_epoch(2)
        shares.append(list(sampler))
        assert shares[-1] == padded[rank::3] and len(sampler) == 4
    assert sorted(k for share in shares for k in share) == sorted(padded)


def test_sampler_resumes_mid_epoch_and_after_a_finished_epoch():
    def fresh() -> ResumableLoader:
        return ResumableLoader(list(range(10)), batch_size=3,
                               sampler=ResumableSampler(EpochShuffleSampler(10, seed=0)))

    full = fresh()
    full.sampler.set_epoch(1)
    epoch1 = [b.tolist() for b in full]

    loader = fresh()
    loader.load_state_dict({"epoch": 1, "batches_done": 2, "epoch_finished": False})
    assert [b.tolist() for b in loader] == epoch1[2:]
    assert [b.tolist() for b in loader] == epoch1  # the next pass of the same epoch is whole again

    done = fresh()
    done.load_state_dict({"epoch": 0, "batches_done": 4, "epoch_finished": True})
    assert done.sampler.epoch == 1 and [b.tolist() for b in done] == epoch1

    state = fresh()
    state.sampler.set_epoch(5)
    state.batches_done, state.batches_per_epoch = 4, 4
    assert state.state_dict() == {"epoch": 5, "batches_done": 4, "epoch_finished": True}


def test_sampler_needs_an_epoch_seeded_base():
    with pytest.raises(TypeError, match="set_epoch"):
        ResumableSampler(torch.utils.data.RandomSampler(range(4)))


# --- sweep summary and ckpt_path=last ---------------------------------------------------------------------------
def test_sweep_summary_table(tmp_path):
    write_results(tmp_path / "0_row_major", {"job_num": 0, "task": "train", "ordering": "row_major",
                                             "status": "completed", "final": {"val/acc1": 0.5},
                                             "best": {"val/acc1": 0.75}, "test": {"test/acc1": 0.7}})
    write_results(tmp_path / "1_spiral", {"job_num": 1, "task": "train", "ordering": "spiral", "status": "failed",
                                          "error": "ConfigError: bad\nmore"})
    (tmp_path / "2_hilbert").mkdir()
    rows = sweep.collect(tmp_path)
    assert [(r["dir"], r["status"]) for r in rows] == [("0_row_major", "completed"), ("1_spiral", "failed"),
                                                      ("2_hilbert", "missing")]
    assert rows[0]["best val/acc1"] == 0.75 and rows[0]["test/acc1"] == 0.7 and rows[1]["error"] == "ConfigError: bad"
    json_path, csv_path = sweep.write_summary(tmp_path, rows)
    assert json.loads(json_path.read_text()) == rows
    assert csv_path.read_text().splitlines()[0].split(",")[:3] == ["job", "task", "ordering"]


def test_find_last_checkpoint_picks_the_newest_matching_run(tmp_path):
    def make_run(name: str, fingerprint: str, age: float):
        run = tmp_path / "outputs" / "day" / name
        write_results(run, {"config_fingerprint": fingerprint})
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
        t = time.time() - age
        os.utime(run / "checkpoints" / "last.ckpt", (t, t))
        return run / "checkpoints" / "last.ckpt"

    old, new = make_run("a", "f1", 100), make_run("b", "f1", 10)
    make_run("c", "f2", 1)
    roots = [tmp_path / "outputs", tmp_path / "multirun"]
    assert find_last_checkpoint(roots, "f1") == new
    assert find_last_checkpoint(roots, "f1", exclude=new.parents[1]) == old
    with pytest.raises(ConfigError, match="no earlier run of this configuration"):
        find_last_checkpoint(roots, "f3")


# --- the LightningModule ------------------------------------------------------------------------------------------
def micro_module(**kwargs) -> ClassificationModule:
    return ClassificationModule(model={"name": "vmamba_micro"}, ordering={"name": "row_major"}, num_classes=10,
                                class_names=[str(i) for i in range(10)], image_size=[32, 32], **kwargs)


def test_ema_weights_take_no_gradients():
    """DDP waits for a gradient of every parameter that requires one: the EMA copy must not (trainer=ddp_cpu with
    module.ema.enabled=true crashed with "parameters that were not used in producing the loss")."""
    module = micro_module(ema={"enabled": True})
    assert not any(p.requires_grad for p in module.ema.parameters())
    assert all(p.requires_grad for p in module.model.parameters())


def test_losses_label_smoothing_and_mixup():
    plain = micro_module(label_smoothing=0.1)
    logits, labels = torch.randn(4, 10, dtype=torch.float64), torch.tensor([1, 2, 3, 9])
    target = torch.full((4, 10), 0.1 / 10, dtype=torch.float64)
    target[torch.arange(4), labels] += 0.9
    expected = -(target * logits.log_softmax(-1)).sum(-1).mean()
    assert torch.allclose(plain.train_loss(logits, labels), expected)
    mixed = micro_module(label_smoothing=0.1, mixup={"mixup_alpha": 0.8, "cutmix_alpha": 1.0})
    assert mixed.mixup is not None and type(mixed.train_loss).__name__ == "SoftTargetCrossEntropy"


def test_ema_is_what_evaluation_uses():
    module = micro_module(ema={"enabled": True, "decay": 0.5})
    assert module.eval_model() is module.ema.module
    with torch.no_grad():
        before = [p.clone() for p in module.ema.module.parameters()]
        for p in module.model.parameters():
            p.add_(1.0)
        module.ema.update(module.model)
        for old, ema, new in zip(before, module.ema.module.parameters(), module.model.parameters()):
            assert torch.allclose(ema, 0.5 * old + 0.5 * new)


def test_non_finite_checkpoints_are_refused():
    module = micro_module()
    state = {k: v.clone() for k, v in module.state_dict().items()}
    module.on_save_checkpoint({"state_dict": state})  # finite: fine
    next(v for v in state.values() if v.is_floating_point())[0] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match="previous checkpoint is kept"):
        module.on_save_checkpoint({"state_dict": state})


def test_non_finite_loss_message():
    message = str(NonFiniteLossError(step=12, epoch=1, batch_idx=3, value=float("nan"), last_checkpoint="/x/last.ckpt"))
    assert "nan at global step 12 (epoch 1, batch 3)" in message and "/x/last.ckpt" in message
    assert "lower the learning rate" in message and "check the data" in message


# --- run-level decisions ------------------------------------------------------------------------------------------
def test_ddp_that_relaunches_the_script_is_refused_inside_a_local_multirun(monkeypatch):
    import lightning as L

    from patchorder.training import builders, hydra_info

    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    builders.check_launcher_fits_hydra_mode(trainer)  # a single run may relaunch
    monkeypatch.setattr(hydra_info, "is_multirun", lambda: True)
    with pytest.raises(ConfigError, match="hydra/launcher=slurm"):
        builders.check_launcher_fits_hydra_mode(trainer)
    builders.check_launcher_fits_hydra_mode(L.Trainer(accelerator="cpu", devices=1, logger=False))


def test_a_requeued_job_resumes_its_own_last_checkpoint_and_refuses_a_foreign_one(tmp_path):
    from omegaconf import OmegaConf

    from patchorder.training.checkpoints import FINGERPRINT_KEY
    from patchorder.training.run import resolve_ckpt_path

    cfg = OmegaConf.create({"ckpt_path": None, "paths": {"output_dir": str(tmp_path), "log_dir": str(tmp_path)}})
    assert resolve_ckpt_path(cfg, "f1") is None
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {}, FINGERPRINT_KEY: {"config_fingerprint": "f1"}}, last)
    assert resolve_ckpt_path(cfg, "f1") == str(last.resolve())
    # Another configuration launched into the same folder (reused hydra.run.dir) must not resume it.
    with pytest.raises(ConfigError, match="holds checkpoints/last.ckpt of another configuration.*f1 != f2"):
        resolve_ckpt_path(cfg, "f2")
    explicit = tmp_path / "other.ckpt"
    cfg.ckpt_path = str(explicit)
    assert resolve_ckpt_path(cfg, "f2") == str(explicit.resolve())


def _write_many(folder: str, tag: int) -> None:
    for i in range(200):
        write_results(folder, {"writer": tag, "i": i})


def test_results_json_writes_of_two_processes_never_collide(tmp_path):
    """Two processes (e.g. a reused run folder) write results.json at once: each write is whole and no write fails."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_many, args=(str(tmp_path), tag)) for tag in (1, 2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert [w.exitcode for w in writers] == [0, 0]
    assert read_results(tmp_path / "results.json")["i"] == 199
    assert not list(tmp_path.glob("*.tmp"))


def test_metrics_csv_keeps_its_history_when_a_run_resumes_in_its_folder(tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from train_support import CONF_DIR, read_csv_rows

    entry = OmegaConf.load(CONF_DIR / "logger" / "csv.yaml").csv
    entry.save_dir = str(tmp_path)

    def run(steps, tag):
        logger = instantiate(entry)
        for step in steps:
            logger.log_metrics({"train/loss": tag * 100 + step}, step=step)
        logger.finalize("success")

    run(range(5), tag=1)  # killed after step 4, say; its checkpoint was at step 3
    run(range(3, 6), tag=2)  # the resumed run logs steps 3, 4, 5 again
    rows = read_csv_rows(tmp_path / "csv" / "metrics.csv")
    assert [(int(r["step"]), float(r["train/loss"])) for r in rows] == [
        (0, 100.0), (1, 101.0), (2, 102.0), (3, 203.0), (4, 204.0), (5, 205.0)]
