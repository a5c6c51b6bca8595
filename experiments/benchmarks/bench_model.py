"""Training throughput of the VMamba presets with the fast ("torch") and the "reference" selective scan.

One training step = forward + cross-entropy + backward + AdamW step, on random images, CPU, 2 threads by default.
The two backends are timed alternately step by step (so load from other processes hits both alike) and the
median step time of each is reported, with the ratio fast / reference measured in the same run.

    python experiments/benchmarks/bench_model.py            # full: a few steps per case
    python experiments/benchmarks/bench_model.py --quick    # one timed step per case, tiny at batch 2 only
"""
from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

import patchorder.models  # noqa: F401  registers the presets

BACKENDS = ("torch", "reference")


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images, labels) -> None:
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def set_backend(model, backend: str) -> None:
    for op in model.ss2d_blocks():
        op.scan_backend = backend


def bench_case(name: str, size: int, batch: int, steps: int, warmup: int) -> dict[str, float]:
    """Median seconds per training step for each backend."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images, labels = torch.randn(batch, 3, size, size), torch.randint(0, 100, (batch,))
    set_backend(model, BACKENDS[0])
    for _ in range(warmup):  # fills the allocator and the route caches, which both backends share
        training_step(model, optimizer, images, labels)
    times: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for _ in range(steps):
        for backend in BACKENDS:
            set_backend(model, backend)
            start = time.perf_counter()
            training_step(model, optimizer, images, labels)
            times[backend].append(time.perf_counter() - start)
    return {b: statistics.median(t) for b, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one timed step per case, tiny at batch 2 only")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case (default 3, quick 1)")
    parser.add_argument("--models", nargs="*", default=None, help="only these presets (default: all cases)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps or (1 if args.quick else 3)
    warmup = 1
    cases = [("vmamba_micro", 64, 32), ("vmamba_tiny_s1l8", 224, 2)]
    if not args.quick:
        cases.append(("vmamba_tiny_s1l8", 224, 8))
    if args.models:
        cases = [case for case in cases if case[0] in args.models]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {steps} timed step(s) per backend after "
          f"{warmup} warm-up, median; training step = forward + backward + AdamW")
    print(f"{'model':<18} {'px':>4} {'batch':>5} {'torch img/s':>12} {'reference img/s':>16} {'torch / reference':>18}")
    for name, size, batch in cases:
        seconds = bench_case(name, size, batch, steps, warmup)
        fast, ref = batch / seconds["torch"], batch / seconds["reference"]
        print(f"{name:<18} {size:>4} {batch:>5} {fast:>12.2f} {ref:>16.2f} {fast / ref:>17.1f}x", flush=True)


if __name__ == "__main__":
    main()
