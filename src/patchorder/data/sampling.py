"""Index bookkeeping shared by the data modules: seeded splits, resumable shuffling, probe selection."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import Sampler


def mix_seed(*parts: int) -> int:
    """One well-mixed 63-bit seed from several integers (order matters), e.g. (seed, epoch)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def stratified_split(
    labels: Sequence[int], val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split indices into train/val/test keeping class proportions (scikit-learn's stratified split).

    The test part is drawn first, so changing val_fraction never moves an image into or out of test.
    Each returned index array is sorted.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name}={value} must be strictly between 0 and 1 (e.g. 0.15)")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no training data: keep the sum below 1"
        )
    labels = np.asarray(labels)
    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=test_fraction, stratify=labels, random_state=seed)
    # val_fraction is a fraction of the whole set, so rescale it to what is left after test.
    val_of_rest = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(rest, test_size=val_of_rest, stratify=labels[rest], random_state=seed + 1)
    return np.sort(train), np.sort(val), np.sort(test)


def probe_indices(labels: Sequence[int], n: int) -> list[int]:
    """n indices spread over classes: the first image of each class in class order, then the second, ...

    Deterministic (depends only on ``labels``), so every call picks the same images.
    """
    labels = np.asarray(labels)
    if n < 1:
        raise ValueError(f"probe_batch needs n >= 1, got {n}")
    if n > len(labels):
        raise ValueError(f"probe_batch asked for {n} images but the validation split has only {len(labels)}")
    per_class = [np.flatnonzero(labels == c).tolist() for c in np.unique(labels)]
    picked: list[int] = []
    rank = 0
    while len(picked) < n:
        for members in per_class:
            if rank < len(members) and len(picked) < n:
                picked.append(members[rank])
        rank += 1
    return picked


class EpochShuffleSampler(Sampler):
    """Shuffles the training set with a permutation that depends only on (seed, epoch).

    Lightning calls ``set_epoch`` before every epoch (and forwards it through its DDP sampler wrapper), so a run
    resumed at epoch e sees exactly the order an uninterrupted run would have seen. With ``sample_seeds`` on it
    yields ``(index, sample_seed)`` pairs: a per-draw seed for augmentation that is just as reproducible.
    Outside Lightning call ``set_epoch`` yourself, or every epoch repeats epoch 0's order.
    """

    def __init__(self, size: int, seed: int, sample_seeds: bool = False) -> None:
        self.size = size
        self.seed = seed
        self.sample_seeds = sample_seeds
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator).tolist()
        if not self.sample_seeds:
            return iter(order)
        seeds = torch.randint(0, 2**62, (self.size,), generator=generator).tolist()
        return iter(zip(order, seeds))
