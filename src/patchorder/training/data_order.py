"""Make the training data order resumable in the middle of an epoch.

A data module's training sampler already gives an order that depends only on (seed, epoch). This module wraps it
so a checkpoint also records how many batches of the epoch were trained, and a resumed run starts the epoch at the
next unseen batch (the skipped indices are never loaded). The wrapper also takes this process's share of the
epoch under DDP, so Lightning does not replace it with its own distributed sampler.

Lightning saves and restores the position through the loader's ``state_dict``/``load_state_dict`` (a loader with
both is "stateful" to Lightning); :class:`patchorder.training.reproducibility.ReproducibleTraining` keeps the
count of trained batches up to date.
"""
from __future__ import annotations

import math
import types
from typing import Any, Iterator

import lightning as L
from torch.utils.data import DataLoader, DistributedSampler, Sampler


class ResumableSampler(DistributedSampler):
    """This rank's part of the data module's epoch order, starting after the batches already trained.

    Subclasses DistributedSampler only so Lightning leaves it in place under DDP; the order comes from
    ``base`` (which must have ``set_epoch``). Ranks take every ``num_replicas``-th key of the epoch, padded
    by repeating its first keys so every rank gets the same number (as DistributedSampler does).
    """

    def __init__(self, base: Sampler, num_replicas: int = 1, rank: int = 0) -> None:
        if not hasattr(base, "set_epoch"):
            raise TypeError(
                f"the training sampler {type(base).__name__} has no set_epoch(epoch): its order cannot be "
                f"reproduced after a restart. Use a sampler whose order depends only on (seed, epoch), e.g. "
                f"patchorder.data.sampling.EpochShuffleSampler"
            )
        self.base = base
        self.dataset = None  # DistributedSampler attributes that describe this sampler
        self.seed = 0
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start = 0  # keys of this rank's share already trained in the current epoch
        self.num_samples = math.ceil(len(base) / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.shuffle = False  # the order is the base sampler's
        self.drop_last = False

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch
        self.base.set_epoch(epoch)

    def resume(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[Any]:
        keys = list(self.base)
        keys += keys[: self.total_size - len(keys)]
        share = keys[self.rank : self.total_size : self.num_replicas]
        start, self.start = self.start, 0  # only the first pass after a restart is shortened
        return iter(share[start:])


class ResumableLoader(DataLoader):
    """A DataLoader whose position in the epoch is saved in checkpoints (see the module docstring)."""

    batches_done: int = 0  # training batches finished in the current epoch (kept by ReproducibleTraining)
    batches_per_epoch: int | None = None  # what Lightning counts as an epoch (limit_train_batches applied)

    def state_dict(self) -> dict[str, Any]:
        finished = self.batches_per_epoch is not None and self.batches_done >= self.batches_per_epoch
        return {"epoch": self.sampler.epoch, "batches_done": self.batches_done, "epoch_finished": finished}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["epoch_finished"]:
            self.sampler.resume(state["epoch"] + 1, 0)
            self.batches_done = 0
        else:
            self.sampler.resume(state["epoch"], state["batches_done"] * self.batch_size)
            self.batches_done = state["batches_done"]


def resumable(loader: DataLoader, num_replicas: int, rank: int) -> ResumableLoader:
    """The same loader (dataset, batch size, workers, collate, generator...) with a resumable sampler."""
    if loader.batch_size is None or loader.sampler is None:
        raise TypeError(
            "the training DataLoader must be built with batch_size= and sampler= (not a custom batch_sampler) "
            "so the training order can be resumed mid-epoch"
        )
    return ResumableLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=ResumableSampler(loader.sampler, num_replicas, rank),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers,
    )


def make_train_loader_resumable(datamodule: L.LightningDataModule) -> L.LightningDataModule:
    """Patch ``datamodule.train_dataloader`` (this instance only) to return a :class:`ResumableLoader`.

    The data module keeps its identity, so ``trainer.datamodule`` is still the user's object for callbacks.
    """
    original = datamodule.train_dataloader

    def train_dataloader(self: L.LightningDataModule) -> ResumableLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        return resumable(original(), world, rank)

    datamodule.train_dataloader = types.MethodType(train_dataloader, datamodule)
    return datamodule
