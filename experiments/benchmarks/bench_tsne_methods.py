"""Exact against Barnes-Hut t-SNE (scikit-learn) by number of points: what sets EXACT_TSNE_POINTS in
patchorder.attention.embedding. The input is what the explorer gives t-SNE: up to 50 principal components of the
points (here four Gaussian clusters). Printed: the median wall time of each method over --repeats runs, and their
ratio. Barnes-Hut's gradient runs on OpenMP threads; set OMP_NUM_THREADS to compare 1 and 2 threads.

    OMP_NUM_THREADS=1 nice -n 19 python experiments/benchmarks/bench_tsne_methods.py
    OMP_NUM_THREADS=2 nice -n 19 python experiments/benchmarks/bench_tsne_methods.py --points 49 196
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from sklearn.manifold import TSNE

from patchorder.attention.embedding import EXACT_TSNE_POINTS, MAX_COMPONENTS


def seconds(points: np.ndarray, method: str) -> float:
    started = time.perf_counter()
    TSNE(n_components=2, perplexity=min(30.0, (len(points) - 1) / 3), init="pca", learning_rate="auto",
         method=method, random_state=0).fit_transform(points)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, nargs="+", default=[16, 49, 64, 100, 196, 300])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; EXACT_TSNE_POINTS={EXACT_TSNE_POINTS}")
    for P in args.points:
        k = max(1, min(MAX_COMPONENTS, P - 1))
        X = rng.normal(size=(P, k)) + 3 * rng.normal(size=(4, k))[rng.integers(0, 4, P)]
        exact, bh = (float(np.median([seconds(X, m) for _ in range(args.repeats)])) for m in ("exact", "barnes_hut"))
        print(f"  {P:5d} points: exact {exact:6.3f} s   barnes_hut {bh:6.3f} s   exact / barnes_hut {exact / bh:5.2f}")


if __name__ == "__main__":
    main()
