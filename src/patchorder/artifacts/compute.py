"""How the attention work runs on a shared CPU: numpy's BLAS threads like torch's, and a progress bar."""
from __future__ import annotations

from collections.abc import Iterator
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
