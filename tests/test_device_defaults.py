"""Defaults that depend on the trainer and the model (conf/device_defaults/<trainer>/<model>.yaml): VMamba-T on a
CPU trains 8 images a batch (the data default of 64 peaked at 15.6 GB at 224 px; README "VMamba-T on a CPU"),
VMamba-S too, and both fewer in each process of trainer=ddp_cpu, while GPU trainers, the paper experiment and the
command line keep theirs."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from train_support import CONF_DIR

CPU_BATCH_VMAMBA_T = 8  # the README's smoke recipe and its measured peak RSS use this batch
DDP_CPU_BATCH_VMAMBA_T = 4  # per process: two processes train the same 8 images a step as trainer=cpu
DDP_CPU_BATCH_VMAMBA_S = 2  # per process: 4 peaked above 8 GB for the two processes together


def batch_size(*overrides: str) -> int:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp/unused", *overrides])
    return int(cfg.data.batch_size)


def test_vmamba_t_on_cpu_defaults_to_a_small_batch():
    assert batch_size("model=vmamba_tiny_s1l8") == CPU_BATCH_VMAMBA_T
    assert batch_size("model=vmamba_tiny_s1l8", "trainer=cpu", "data=imagenet_subset") == CPU_BATCH_VMAMBA_T


@pytest.mark.parametrize("model, trainer, expected", [
    ("vmamba_small_s1l20", "cpu", CPU_BATCH_VMAMBA_T),
    ("vmamba_tiny_s1l8", "ddp_cpu", DDP_CPU_BATCH_VMAMBA_T),
    ("vmamba_small_s1l20", "ddp_cpu", DDP_CPU_BATCH_VMAMBA_S),
])
def test_the_larger_models_on_cpu_trainers_default_to_a_small_batch(model, trainer, expected):
    assert batch_size(f"model={model}", f"trainer={trainer}") == expected


@pytest.mark.parametrize("overrides, expected", [
    (["model=vmamba_tiny_s1l8", "data.batch_size=32"], 32),  # the command line wins
    (["model=vmamba_tiny_s1l8", "trainer=gpu"], 64),  # the experiment's (quick) batch on a GPU
    (["model=vmamba_small_s1l20", "trainer=ddp"], 64),  # GPU data parallel
    (["trainer=ddp_cpu"], 64),  # vmamba_micro on two CPU processes
    (["model=vmamba_tiny_s1l8", "experiment=paper"], 128),  # paper: 128 per GPU, as the official recipe
    ([], 64),  # the CPU default (vmamba_micro) is unchanged
])
def test_other_trainers_models_and_the_command_line_keep_their_batch(overrides, expected):
    assert batch_size(*overrides) == expected
