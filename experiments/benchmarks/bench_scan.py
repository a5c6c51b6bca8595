"""Speed of the selective-scan backends against mambapy's parallel scan and a per-step-indexing loop.

Times forward and forward+backward (gradients of every input) of:
  torch       patchorder's pure-PyTorch backend (the CPU default)
  pscan       mambapy's parallel scan, used the way mambapy's own selective scan uses it: build deltaA and BX,
              scan, contract with C, add D u (same inputs, outputs and elementwise work as ours)
  reference   the "reference" backend: the sequential oracle, a Python loop over unbound time steps
  loop        a per-step loop that indexes x[:, :, i] like mamba-ssm's selective_scan_ref; autograd's backward
              of that indexing grows quadratically with L, so it is timed once: at the longest L for
              d_state 1 (about 3 minutes at L=3136), at a shorter length (--loop-length) for larger d_state
  mamba_ssm   listed only where the CUDA kernel is importable (never on a CPU)

VMamba-sized inputs: b=8, d=384 (4 routes x 96 channels), groups=4, float32, delta_bias + softplus.
Methods are timed alternately, repeat by repeat, so load from other processes hits all of them alike; the
median is reported. Next to each time the memory-traffic floor: the bytes an ideal fused kernel must move
(read the inputs, write the outputs, and for backward read dy and write every gradient) divided by the copy
bandwidth measured in this run.

    python experiments/benchmarks/bench_scan.py             # full table (a few minutes; pscan at n=16 needs ~6 GB)
    python experiments/benchmarks/bench_scan.py --quick     # smoke run on small shapes

On a machine shared with other jobs, wall-clock times with 2 threads swing by 10x or more: OpenMP threads
that spin while waiting steal the cores, and each of the many parallel operations can wait a scheduler tick.
There, either run with OMP_WAIT_POLICY=PASSIVE in the environment, or compare single-threaded CPU time
(--threads 1 --clock cpu), which other load barely moves.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from patchorder.ops.fast import selective_scan_fast
from patchorder.ops.reference import selective_scan_reference

GROUPS = 4


def mambapy_scan(u, delta, A, B, C, D, delta_bias, delta_softplus=True):
    """The selective scan as mambapy's Mamba block computes it, on our (b, d, l) argument layout."""
    from mambapy.pscan import pscan

    channels = u.shape[1]
    delta = delta + delta_bias[:, None]
    delta = torch.nn.functional.softplus(delta) if delta_softplus else delta
    x, delta = u.transpose(1, 2), delta.transpose(1, 2)  # (b, l, d), mambapy's layout
    B = B.permute(0, 3, 1, 2).repeat_interleave(channels // B.shape[1], dim=2)  # (b, l, d, n)
    C = C.permute(0, 3, 1, 2).repeat_interleave(channels // C.shape[1], dim=2)
    delta_A = torch.exp(delta.unsqueeze(-1) * A)
    BX = delta.unsqueeze(-1) * B * x.unsqueeze(-1)
    hs = pscan(delta_A, BX)
    y = (hs * C).sum(-1) + D * x
    return y.transpose(1, 2)


def make_inputs(batch: int, channels: int, d_state: int, length: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, channels, length, generator=g)
    delta = torch.randn(batch, channels, length, generator=g) - 2.0  # softplus(delta + bias) ~ 0.1, as trained
    A = -torch.rand(channels, d_state, generator=g) * d_state - 0.5
    B = torch.randn(batch, GROUPS, d_state, length, generator=g)
    C = torch.randn(batch, GROUPS, d_state, length, generator=g)
    D = torch.randn(channels, generator=g)
    delta_bias = torch.rand(channels, generator=g) * 0.5
    return [x.requires_grad_() for x in (u, delta, A, B, C, D, delta_bias)]


def copy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes per second of a large tensor copy (read + write), median of a few."""
    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the pages in
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / statistics.median(times)


def traffic_bytes(inputs: list[torch.Tensor], backward: bool) -> int:
    """Bytes an ideal fused kernel moves: inputs read and y written; with backward also dy read and every
    input read again and its gradient written (as mamba-ssm's kernel does, recomputing the states)."""
    inputs_bytes = sum(x.numel() * x.element_size() for x in inputs)
    y_bytes = inputs[0].numel() * inputs[0].element_size()
    forward = inputs_bytes + y_bytes
    return forward + (y_bytes + 2 * inputs_bytes if backward else 0)


def timer(fn: Callable, inputs: list[torch.Tensor], backward: bool, clock: Callable[[], float]):
    dy = torch.randn_like(inputs[0], requires_grad=False)

    def run() -> float:
        for x in inputs:
            x.grad = None
        start = clock()
        if backward:
            fn(*inputs).backward(dy)
        else:
            with torch.no_grad():
                fn(*inputs)
        return clock() - start

    return run


def time_methods(methods: dict[str, Callable], inputs, repeats: int, clock, warm_up: bool = True):
    """Median (forward, forward+backward) seconds per method, the methods interleaved repeat by repeat."""
    runs = {(name, bwd): timer(fn, inputs, bwd, clock) for name, fn in methods.items() for bwd in (False, True)}
    for run in runs.values() if warm_up else ():  # first-call allocations, lazy imports
        run()
    samples: dict[tuple[str, bool], list[float]] = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            samples[key].append(run())
    return {name: (statistics.median(samples[name, False]), statistics.median(samples[name, True])) for name in methods}


def ours(*inputs):
    return selective_scan_fast(*inputs, delta_softplus=True)


def reference(*inputs):
    return selective_scan_reference(*inputs, delta_softplus=True)


def loop(u, delta, A, B, C, D, delta_bias):
    """Per-step indexing, as in mamba-ssm's selective_scan_ref: precompute the decays and inputs for all
    steps, then index step i of each inside the loop."""
    channels = u.shape[1]
    delta = torch.nn.functional.softplus(delta + delta_bias[:, None])
    B = B.repeat_interleave(channels // B.shape[1], dim=1)  # (b, d, n, l)
    C = C.repeat_interleave(channels // C.shape[1], dim=1)
    delta_A = torch.exp(delta.unsqueeze(2) * A[:, :, None])  # (b, d, n, l)
    delta_B_u = delta.unsqueeze(2) * B * u.unsqueeze(2)
    h = u.new_zeros(u.shape[0], channels, A.shape[1])
    ys = []
    for i in range(u.shape[2]):
        h = delta_A[:, :, :, i] * h + delta_B_u[:, :, :, i]
        ys.append((h * C[:, :, :, i]).sum(-1))
    return torch.stack(ys, dim=2) + D[:, None] * u


def ratio(theirs: float | None, ours: float, lower_bound: bool = False) -> str:
    if theirs is None:
        return "-"
    return f"{'>=' if lower_bound else ''}{theirs / ours:.1f}x"


def default_loop_length(d_state: int, lengths: list[int]) -> int:
    """The longest length at which the per-step loop takes minutes, not hours: its backward materialises a
    full-size gradient for every step, so its cost grows with d_state * L^2 (n=1, L=3136: ~3 min)."""
    return max(lengths) if d_state == 1 else min(max(lengths), 196)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: b=1, d=16, L=32, one repeat")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per method (default 5, quick 1)")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="sequence lengths (default 196 3136)")
    parser.add_argument("--d-states", type=int, nargs="+", default=[1, 16], help="d_state values (default 1 16)")
    parser.add_argument("--loop-length", type=int, default=None,
                        help="length at which the per-step loop is timed, once (default: the longest for d_state 1, "
                             "else 196)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed time (default); cpu: this thread's CPU time, robust to other load on a "
                             "shared machine but only meaningful with --threads 1")
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu counts only the calling thread's time: use it with --threads 1")
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    batch, channels = (1, 16) if args.quick else (8, 384)
    lengths = args.lengths or ([32] if args.quick else [196, 3136])
    repeats = args.repeats or (1 if args.quick else 5)

    from patchorder.ops.kernels import mamba_ssm_available

    bandwidth = copy_bandwidth(16 if args.quick else 256)
    print(f"selective scan: b={batch} d={channels} groups={GROUPS} float32 delta_bias+softplus, "
          f"{torch.get_num_threads()} threads (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), "
          f"{args.clock} clock, median of {repeats}; "
          f"copy bandwidth {bandwidth / 1e9:.1f} GB/s")
    print("floor: bytes an ideal fused kernel must move / copy bandwidth.  pscan/x, loop/x: their time / this time")
    header = ("n", "L", "method", "fwd ms", "floor", "fwd+bwd ms", "floor", "pscan/x fwd", "f+b", "loop/x fwd", "f+b")
    widths = (3, 5, 9, 9, 7, 11, 7, 12, 8, 11, 9)
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths)))
    summary = {}
    for d_state in args.d_states:
        loop_length = args.loop_length or (32 if args.quick else default_loop_length(d_state, lengths))
        loop_times = None  # (fwd, fwd+bwd) of the loop at loop_length
        for length in sorted(set(lengths) | {loop_length}):
            inputs = make_inputs(batch, channels, d_state, length)
            methods = {"torch": ours}
            if length in lengths:
                methods.update(pscan=mambapy_scan, reference=reference)
            times = time_methods(methods, inputs, repeats, clock)
            if length == loop_length:  # seconds to minutes per call: once, no warm-up
                times |= time_methods({"loop": loop}, inputs, 1, clock, warm_up=False)
            loop_times = times.get("loop", loop_times)
            floors = [traffic_bytes(inputs, bwd) / bandwidth for bwd in (False, True)]
            pscan_times = times.get("pscan", (None, None))
            # Beyond loop_length the loop's time is at least proportional to L (its backward grows faster).
            scale = length / loop_length if loop_times and length >= loop_length else None
            for name, (fwd, fwdbwd) in times.items():
                loop_ratios = [ratio(t * scale if scale else None, mine, length > loop_length)
                               for t, mine in zip(loop_times or (None, None), (fwd, fwdbwd))]
                cells = (d_state, length, name, f"{fwd * 1e3:.1f}", f"{floors[0] * 1e3:.2f}", f"{fwdbwd * 1e3:.1f}",
                         f"{floors[1] * 1e3:.2f}", ratio(pscan_times[0], fwd), ratio(pscan_times[1], fwdbwd),
                         *loop_ratios)
                print(" ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
            summary[d_state, length] = (pscan_times[1] and pscan_times[1] / times["torch"][1],
                                        scale and loop_times[1] * scale / times["torch"][1],
                                        length > loop_length)
            del inputs
    if not mamba_ssm_available():
        print("mamba_ssm: not timed (needs the mamba-ssm package and CUDA tensors)")
    print("loop: timed once, at the length where its ratio has no '>='; at longer L its time is scaled up "
          "linearly, a lower bound (its backward grows quadratically with L)")
    top = max(lengths)
    for d_state, target in ((1, "at least 2x pscan's speed and 100x the loop's"), (16, "at least pscan's speed")):
        if (d_state, top) in summary:
            vs_pscan, vs_loop, loop_scaled = summary[d_state, top]
            loop_text = f", {'>=' if loop_scaled else ''}{vs_loop:.1f}x the loop's" if vs_loop else ""
            print(f"n={d_state}, L={top}, fwd+bwd: {vs_pscan:.2f}x pscan's speed{loop_text} (target: {target})")


if __name__ == "__main__":
    main()
