"""Independent pieces of work on a few threads: numpy and torch release the GIL in their array loops, so an
export's matrices (one (L, L) at a time, to keep temporaries O(L^2)) or a batch's images can be processed two at
a time on a 2-core machine. Each piece is done the same way whichever thread does it; ``work(i)`` must write only
its own outputs (e.g. ``out[i]``), and what a worker raises is raised to the caller."""
from __future__ import annotations

from collections.abc import Callable


def _on_threads(work: Callable[[int], None], count: int, workers: int) -> None:
    workers = max(1, min(count, workers))
    if workers == 1:
        for i in range(count):
            work(i)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, range(count)))  # list(): raise what a worker raised


def each_matrix(work: Callable[[int], None], count: int) -> None:
    """``work(i)`` for i in range(count), on as many threads as torch uses (the run's cpu_threads); for numpy work,
    whose results do not depend on the number of threads."""
    import torch

    _on_threads(work, count, torch.get_num_threads())


def each_on_its_core(work: Callable[[int], None], count: int) -> None:
    """``work(i)`` for i in range(count) on as many threads as torch uses, each running torch's CPU ops on one
    thread (torch's thread count is 1 meanwhile, and restored after).

    For CPU tensor work made of many small ops (the hidden-attention kernel's row blocks): one image per core
    skips the fork and join of every op (VMamba-T's 8 probe images, 2 cores: extraction 40 s -> 29 s).
    """
    import torch

    threads = torch.get_num_threads()
    if min(count, threads) <= 1:
        _on_threads(work, count, 1)
        return
    torch.set_num_threads(1)  # before the workers start: each takes the count at its first parallel op
    try:
        _on_threads(work, count, threads)
    finally:
        torch.set_num_threads(threads)
