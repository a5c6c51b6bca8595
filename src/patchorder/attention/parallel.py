"""Independent pieces of work on a few threads: numpy and torch release the GIL in their array loops, so an
export's matrices (one (L, L) at a time, to keep temporaries O(L^2)) or a batch's images can be processed two at
a time on a 2-core machine."""
from __future__ import annotations

from collections.abc import Callable


def each_matrix(work: Callable[[int], None], count: int) -> None:
    """``work(i)`` for i in range(count), on as many threads as torch uses (the run's cpu_threads).

    Each i is done the same way whichever thread does it, so results do not depend on the number of threads;
    ``work`` must write only its own outputs (e.g. ``out[i]``). What a worker raises is raised here.
    """
    import torch

    workers = max(1, min(count, torch.get_num_threads()))
    if workers == 1:
        for i in range(count):
            work(i)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, range(count)))


def each_on_its_core(work: Callable[[int], None], count: int) -> None:
    """``work(i)`` for i in range(count) on as many threads as torch uses, each running torch's CPU ops on one
    thread (torch's thread count is 1 meanwhile, and restored after).

    For CPU tensor work made of many small ops (the hidden-attention kernel's row blocks): one image per core
    skips the fork and join of every op (VMamba-T's stages 0-2, 2 cores: 10% faster). ``work`` must write only its
    own outputs; what a worker raises is raised here.
    """
    import torch

    threads = torch.get_num_threads()
    workers = max(1, min(count, threads))
    if workers == 1:
        for i in range(count):
            work(i)
        return
    from concurrent.futures import ThreadPoolExecutor

    torch.set_num_threads(1)  # before the workers start: each takes the count at its first parallel op
    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, range(count)))
    finally:
        torch.set_num_threads(threads)
