"""Rollout and effective receptive field of vmamba_tiny_s1l8 at 224 px on 8 images (random init: no weights can be
downloaded; the cost does not depend on the weights). Target (issue 13): rollout + ERF <= 60 s together on a
2-core CPU. Printed beside the wall times: CPU time (the machine may be shared) and the ratio to one plain
forward pass of the same model on the same images, measured in this run.

    nice -n 15 python experiments/benchmarks/bench_attribution.py [--images 8] [--size 224] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

TARGET_SECONDS = 60.0


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vmamba_tiny_s1l8")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import timm

    import patchorder.models  # noqa: F401  registers the presets
    from patchorder.attention import effective_receptive_field, rollout

    torch.manual_seed(0)
    model = timm.create_model(args.model).eval()
    images = torch.randn(args.images, 3, args.size, args.size)
    with torch.no_grad():
        model(images[:1])  # builds and validates the routes once, outside the timings
        _, forward_s, forward_cpu = timed(lambda: model(images))
    maps, rollout_s, rollout_cpu = timed(lambda: rollout(model, images))
    erf, erf_s, erf_cpu = timed(lambda: effective_receptive_field(model, images, stage=-1))
    total = rollout_s + erf_s
    result = {
        "model": args.model, "images": args.images, "size": args.size, "threads": args.threads,
        "forward_s": round(forward_s, 2), "rollout_s": round(rollout_s, 2), "erf_s": round(erf_s, 2),
        "rollout_plus_erf_s": round(total, 2), "target_s": TARGET_SECONDS, "within_target": total <= TARGET_SECONDS,
        "cpu_s": {"forward": round(forward_cpu, 2), "rollout": round(rollout_cpu, 2), "erf": round(erf_cpu, 2)},
        "rollout_over_forward": round(rollout_s / forward_s, 1), "erf_over_forward": round(erf_s / forward_s, 1),
        "rollout_grid": list(maps.grid), "erf_shape": list(erf.shape),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
