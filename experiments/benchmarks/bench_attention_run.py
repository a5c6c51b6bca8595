"""What the attention callback's final call costs on a real model: VMamba-T (vmamba_tiny_s1l8) at 224 px.

The same two functions the AttentionLogger runs at the end of fit (probe_export, then write_attention_artifacts
with the HTML explorer), with the callback's default options: every stage and block, 8 probe images, metrics,
embeddings, pictures, the .npz and the report. Random-init weights (nothing can be downloaded) on random images.
Printed: wall and CPU time per phase and in all, peak RSS, the files' sizes, and ratios against references
measured in the same run: the model's forward pass on the probe batch (time) and the same export saved as float32
(size, what the callback wrote before npz_dtype=log8). Targets: <= 60 s and <= 150 MB on a 2-core CPU.
The probe images are crops of the two photographs bundled with scikit-learn (nothing is downloaded), normalised as
ImageNet images are; ``--images noise`` uses Gaussian noise instead, the worst case for every compressed file.
On a shared machine run it with nice, once; wall time then depends on the other jobs, CPU time much less.

    nice -n 15 python experiments/benchmarks/bench_attention_run.py
    python experiments/benchmarks/bench_attention_run.py --num-images 2 --stages 2 3   # a quick look
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

TARGET_SECONDS = 60.0
TARGET_MB = 150.0


class Clock:
    """Wall and CPU seconds (this process, all threads) of each phase."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []

    def __call__(self, name: str, work):
        wall, cpu = time.perf_counter(), time.process_time()
        out = work()
        self.rows.append((name, time.perf_counter() - wall, time.process_time() - cpu))
        return out


def callback_settings() -> dict:
    """The AttentionLogger's options as conf/callbacks/attention.yaml sets them (what a training run uses), less the
    callback's own arguments (every_n_epochs, report, attribution, ...) and Hydra's keys."""
    import inspect

    from omegaconf import OmegaConf

    from patchorder.callbacks import AttentionLogger

    conf = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[2] / "conf/callbacks/attention.yaml"))
    own = set(inspect.signature(AttentionLogger.__init__).parameters) | {"_target_", "_convert_"}
    return {k: v for k, v in conf["attention"].items() if k not in own}


def photo_crops(count: int, size: int) -> torch.Tensor:
    """``count`` square crops of the photographs (alternating between them; smaller and further right as they go),
    resized to ``size`` and normalised with the ImageNet mean and std: (count, 3, size, size)."""
    from sklearn.datasets import load_sample_images
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    photos = [torch.from_numpy(np.array(p)).permute(2, 0, 1).float() / 255 for p in load_sample_images().images]
    steps = max(1, -(-count // len(photos)) - 1)
    crops = []
    for i in range(count):
        photo, k = photos[i % len(photos)], i // len(photos)
        height, width = photo.shape[1:]
        side = round(min(height, width) * (1 - 0.5 * k / steps))
        top, left = (height - side) * (k % 2), (width - side) * k // steps
        crop = photo[None, :, top:top + side, left:left + side]
        crops.append(torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", antialias=True)[0])
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
    return (torch.stack(crops) - mean) / std


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--stages", type=int, nargs="+", default=None, help="default: every stage")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", choices=("photos", "noise"), default="photos")
    args = parser.parse_args()

    import timm

    import patchorder.models  # noqa: F401  (registers the presets)
    from patchorder.attention.export import save
    from patchorder.artifacts import AttentionOptions, probe_export, write_attention_artifacts

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model("vmamba_tiny_s1l8", num_classes=10).eval()
    images = (photo_crops(args.num_images, args.image_size) if args.images == "photos" else
              torch.randn(args.num_images, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(1)))
    labels = torch.arange(args.num_images) % 10
    options = AttentionOptions(**{**callback_settings(), "stages": args.stages, "num_images": args.num_images})

    class Data:  # what probe_export reads from a datamodule
        class_names = [f"class {i}" for i in range(10)]

    clock = Clock()
    with torch.no_grad():
        clock("reference: forward pass", lambda: model(images))
    export = clock("extract (every block)", lambda: probe_export(model, images, labels, Data(), options))
    out = Path(tempfile.mkdtemp(prefix="bench_attention_run_"))
    written = clock("metrics, embeddings, pictures, .npz, explorer",
                    lambda: write_attention_artifacts(export, out / "attention", "attention_final", options, report=True))
    reference = out / "float32.npz"
    clock("reference: save as float32", lambda: save(reference, export, dtype=np.float32))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    blocks = len(export.blocks)
    print(f"vmamba_tiny_s1l8 at {args.image_size} px, {args.num_images} probe images ({args.images}), {blocks} blocks "
          f"(stages {args.stages or 'all'}), torch threads {args.threads}; options: npz_dtype {options.npz_dtype}, "
          f"methods {options.methods}, report_methods {options.report_methods}")
    for name, wall, cpu in clock.rows:
        print(f"  {name:48s} wall {wall:7.1f} s   cpu {cpu:7.1f} s")
        if name.startswith("metrics"):  # the steps of write_attention_artifacts, as it timed them
            for step, seconds in written.phases.items():
                print(f"    {step:46s} wall {seconds:7.1f} s")
    (_, forward, _), (_, extract_wall, extract_cpu), (_, write_wall, write_cpu) = clock.rows[:3]
    total_wall, total_cpu = extract_wall + write_wall, extract_cpu + write_cpu
    files = folder_mb(out / "attention")
    print(f"callback total: wall {total_wall:.1f} s (target {TARGET_SECONDS:.0f} s: {total_wall / TARGET_SECONDS:.2f}x), "
          f"cpu {total_cpu:.1f} s; {total_wall / forward:.0f}x the forward pass of the probe batch")
    sizes = {p.name: p.stat().st_size / 1e6 for p in (written.paths["npz"], written.paths["report"])}
    print(f"files: {files:.1f} MB in all (target {TARGET_MB:.0f} MB: {files / TARGET_MB:.2f}x); "
          + ", ".join(f"{k} {v:.1f} MB" for k, v in sizes.items())
          + f"; the same export as float32 .npz: {reference.stat().st_size / 1e6:.1f} MB "
            f"(log8 .npz = {sizes[written.paths['npz'].name] / (reference.stat().st_size / 1e6):.2f}x)")
    print(f"peak RSS {peak_gb:.2f} GB; files under {out}")


if __name__ == "__main__":
    main()
