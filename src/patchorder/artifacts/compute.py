"""How the attention work runs on a shared CPU: numpy's BLAS threads like torch's, a progress bar, and the wall
time of each step."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


@contextmanager
def blas_threads_like_torch() -> Iterator[None]:
    """Limit numpy/scipy's BLAS threads to torch's intra-op thread count (the run's cpu_threads) meanwhile.

    Without it OpenBLAS starts one busy-waiting thread per core next to torch's, and on a shared machine the
    embeddings' small SVDs stall (README, "The two commands": busy-waiting threads).
    """
    import scipy.linalg  # noqa: F401  scipy's own OpenBLAS must be loaded to be limited
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        yield


def progress_bar(total: int, what: str):
    """A progress bar on stderr for the minutes a large model's attention takes (hidden when not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="step", leave=False, dynamic_ncols=True, disable=None)


class PhaseClock:
    """Wall seconds by step name: :meth:`lap` for consecutive steps on this thread, :meth:`timed` for a job that
    runs on its own (e.g. a file written on a second thread)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        """Record the time since the previous lap (or the clock's start) as ``name``."""
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now

    def timed(self, name: str, work: Callable, *args, **kwargs):
        """``work(*args, **kwargs)``, its own wall seconds recorded as ``name``."""
        started = time.perf_counter()
        out = work(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - started, 3)
        return out
