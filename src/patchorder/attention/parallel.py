"""Per-matrix work on a few threads: numpy releases the GIL in its array loops, so an export's matrices (one
(L, L) at a time, to keep temporaries O(L^2)) can be processed two at a time on a 2-core machine."""
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
