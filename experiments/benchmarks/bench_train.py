"""Training speed of the pipeline (Lightning module + trainer + resumable loader + callbacks) against a bare PyTorch
loop over the same model, batches and optimizer, and of one CPU thread against torch's default thread count.

Both measure images per second of training steps (forward, backward, AdamW, gradient clipping) on digits batches,
after warm-up steps, with the same batch size; the pipeline figure comes from its TrainThroughput callback (data
loading included, validation excluded). Ratios are against the bare loop measured in the same run.

    python experiments/benchmarks/bench_train.py            # 64 px, 30 steps per measurement
    python experiments/benchmarks/bench_train.py --quick    # 32 px, 8 steps
"""
from __future__ import annotations

import argparse
import time

import lightning as L
import torch

from patchorder.data import DigitsDataModule
from patchorder.training.data_order import make_train_loader_resumable
from patchorder.training.module import ClassificationModule
from patchorder.training.reproducibility import ReproducibleTraining
from patchorder.training.throughput import TrainThroughput

WARMUP = 3


def make_module(image_size: int) -> ClassificationModule:
    return ClassificationModule(model={"name": "vmamba_micro"}, ordering={"name": "row_major"}, num_classes=10,
                                class_names=[str(i) for i in range(10)], image_size=[image_size, image_size],
                                optimizer={"lr": 2e-3}, label_smoothing=0.1)


def endless(loader):
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def bare_loop(image_size: int, batch_size: int, steps: int) -> float:
    data = DigitsDataModule(image_size=image_size, batch_size=batch_size)
    data.setup("fit")
    module = make_module(image_size)
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=2e-3, weight_decay=0.05)
    batches = endless(data.train_dataloader())
    images_done, start = 0, None
    for step in range(WARMUP + steps):
        if step == WARMUP:
            start = time.perf_counter()
        images, labels = next(batches)
        loss = module.train_loss(module.model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.model.parameters(), 5.0)
        optimizer.step()
        images_done += len(images) if step >= WARMUP else 0
    return images_done / (time.perf_counter() - start)


def pipeline(image_size: int, batch_size: int, steps: int) -> float:
    data = make_train_loader_resumable(DigitsDataModule(image_size=image_size, batch_size=batch_size))
    throughput = TrainThroughput()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps + WARMUP, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=5.0,
                        callbacks=[ReproducibleTraining(), throughput, _ResetAfter(WARMUP, throughput)])
    trainer.fit(make_module(image_size), datamodule=data)
    return throughput.images_per_sec()


class _ResetAfter(L.Callback):
    """Count only the steps after warm-up: restart the meter once ``steps`` optimizer steps are done."""

    def __init__(self, steps: int, meter: TrainThroughput):
        self.steps, self.meter = steps, meter

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.steps:
            self.meter.images, self.meter.seconds = 0, 0.0
            self.meter.on_train_epoch_start(trainer, pl_module)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    image_size, steps = (32, 8) if args.quick else (64, 30)
    default_threads = torch.get_num_threads()
    print(f"vmamba_micro, digits {image_size} px, batch {args.batch_size}, {steps} timed steps "
          f"(torch default threads: {default_threads})")
    rows = []
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        bare = bare_loop(image_size, args.batch_size, steps)
        torch.manual_seed(0)
        piped = pipeline(image_size, args.batch_size, steps)
        rows.append((threads, bare, piped))
    reference = next(bare for threads, bare, _ in rows if threads == 1)
    print(f"{'threads':>7} {'bare img/s':>11} {'pipeline img/s':>15} {'pipeline/bare':>14} {'bare vs 1 thread':>17}")
    for threads, bare, piped in rows:
        print(f"{threads:>7} {bare:>11.1f} {piped:>15.1f} {piped / bare:>14.2f} {bare / reference:>17.2f}")


if __name__ == "__main__":
    main()
