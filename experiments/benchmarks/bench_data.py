"""Loading speed of the in-memory data modules against a per-item PIL pipeline over the same images.

The default data (digits) must not slow `make train` down. Its loader keeps the upscaled images in one tensor and
shifts/normalises them with tensor ops; the reference is what an ImageFolder-style pipeline would do for the same
images: a PIL image per item, torchvision Resize + RandomAffine(translate) + ToTensor + Normalize. Both use the
same batch size and num_workers=0; the reported ratio is reference time / in-memory time, measured in one run.
Also reports the one-off set-up time of digits and shapes (loading, upscaling, generating).

    python experiments/benchmarks/bench_data.py            # 3 epochs each
    python experiments/benchmarks/bench_data.py --quick    # 1 epoch each
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from patchorder.data import DigitsDataModule, ShapesDataModule


class PilDigits(Dataset):
    """Reference: the same 8x8 training digits as PIL images, transformed one by one."""

    def __init__(self, images_8px: torch.Tensor, labels: torch.Tensor, size: int, translate: float, mean, std):
        self.images = [Image.fromarray((img[0].numpy() * 255).astype(np.uint8)) for img in images_8px]
        self.labels = labels.tolist()
        self.transform = transforms.Compose(
            [
                transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
                transforms.RandomAffine(0, translate=(translate, translate)),
                transforms.Grayscale(3),
                transforms.ToTensor(),
                transforms.Normalize(mean, std),
            ]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), self.labels[index]


def seconds_per_epoch(loader: DataLoader, epochs: int) -> float:
    times = []
    for epoch in range(epochs):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        for _ in loader:
            pass
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one epoch per loader")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    epochs = 1 if args.quick else 3
    torch.set_num_threads(2)

    for size in (32, 64):
        start = time.perf_counter()
        digits = DigitsDataModule(image_size=size, batch_size=args.batch_size)
        digits.setup("fit")
        setup_s = time.perf_counter() - start
        small = DigitsDataModule(image_size=8)
        reference = PilDigits(
            small.datasets["train"].images, small.datasets["train"].targets, size, digits.translate, digits.mean, digits.std
        )
        ours_s = seconds_per_epoch(digits.train_dataloader(), epochs)
        ref_s = seconds_per_epoch(DataLoader(reference, batch_size=args.batch_size, shuffle=True), epochs)
        count = len(digits.datasets["train"])
        print(
            f"digits {size}px: set-up {setup_s:.2f} s | in-memory {count / ours_s:,.0f} img/s | "
            f"PIL per item {count / ref_s:,.0f} img/s | speed-up x{ref_s / ours_s:.1f}"
        )

    for difficulty in ("easy", "medium", "hard"):
        start = time.perf_counter()
        shapes = ShapesDataModule(difficulty=difficulty)
        shapes.setup("fit")
        total = sum(len(shapes.datasets[s]) for s in ("train", "val", "test"))
        print(f"shapes direction/{difficulty} 32px: generated {total:,} images in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
