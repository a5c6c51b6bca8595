"""What the logging callbacks cost on the default `make train` run (vmamba_micro on 32 px digits, W&B offline + CSV).

One training run with the default configuration (the quick experiment) and the default callbacks. The reference
is the run's own epoch time (training + validation, measured from epoch start to epoch end by a timing callback,
which excludes the AttentionLogger's work); each AttentionLogger and EmbeddingLogger call times itself
(extraction, pictures, metrics, embeddings, files, W&B logging; the final call includes the HTML explorer).
Printed: seconds per call, their ratio to an epoch, and the projected share of a full `make train`
(10 epochs, attention every callbacks.attention.every_n_epochs epochs; measured here after every epoch).

    python experiments/benchmarks/bench_callbacks.py               # 2 full epochs
    python experiments/benchmarks/bench_callbacks.py --quick       # 1 epoch of 5 batches
    python experiments/benchmarks/bench_callbacks.py --methods pca tsne umap --num-images 8
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_dir

from patchorder.callbacks import AttentionLogger, EmbeddingLogger
from patchorder.training import builders
from patchorder.training.config import register_resolvers
from patchorder.training.task import cpu_threads

CONF = Path(__file__).resolve().parents[2] / "conf"
MAKE_TRAIN_EPOCHS = 10


class EpochClock(L.Callback):
    """Seconds from each training epoch's start to its validation's end (before any epoch-end logging)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.seconds.append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 epoch of 5 training batches")
    parser.add_argument("--methods", nargs="+", default=None, help="attention embedding methods (default: config)")
    parser.add_argument("--num-images", type=int, default=None)
    args = parser.parse_args()

    register_resolvers()
    os.environ.setdefault("WANDB_SILENT", "true")
    out = Path(tempfile.mkdtemp(prefix="bench_callbacks_"))
    overrides = [f"paths.output_dir={out}", f"paths.root_dir={out}", "trainer.enable_progress_bar=false",
                 f"trainer.max_epochs={1 if args.quick else args.epochs}", "test=false"]
    if args.quick:
        overrides.append("trainer.limit_train_batches=5")
    if args.methods:
        overrides.append(f"callbacks.attention.methods=[{','.join(args.methods)}]")
    if args.num_images:
        overrides.append(f"callbacks.attention.num_images={args.num_images}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        every = compose("train", overrides=overrides).callbacks.attention.every_n_epochs or MAKE_TRAIN_EPOCHS
        # Measured after every epoch; projected with the configured interval.
        cfg = compose("train", overrides=[*overrides, "callbacks.attention.every_n_epochs=1"])

    with cpu_threads(cfg.get("cpu_threads")):
        L.seed_everything(cfg.seed)
        datamodule = builders.build_datamodule(cfg.data)
        module = builders.build_module(cfg, datamodule)
        clock = EpochClock()
        callbacks = [clock, *builders.build_callbacks(cfg.callbacks)]
        loggers = builders.build_loggers(cfg)
        trainer = builders.build_trainer(cfg, callbacks, loggers)
        trainer.fit(module, datamodule=datamodule)
    import wandb

    wandb.finish()

    attention = next(c for c in callbacks if isinstance(c, AttentionLogger))
    embedding = next(c for c in callbacks if isinstance(c, EmbeddingLogger))
    epoch = sum(clock.seconds) / len(clock.seconds)
    per_epoch = [w.seconds for w in attention.written if not w.paths["npz"].name.endswith("_final.npz")]
    final = attention.written[-1].seconds
    features = embedding.written[-1]["seconds"]
    per_call = sum(per_epoch) / max(len(per_epoch), 1)
    options = attention.options
    print(f"config: {cfg.model.name}, {cfg.data._target_.rsplit('.', 1)[-1]} {cfg.data.image_size} px, "
          f"batch {cfg.data.batch_size}, {trainer.num_training_batches} train batches/epoch, cpu_threads "
          f"{cfg.get('cpu_threads')}; attention: {options.num_images} images, stages {options.stages or 'all'}, "
          f"methods {options.methods}, report {attention.report}; embedding: {embedding.written[-1]['num_samples']} "
          f"images; loggers: {', '.join(type(lg).__name__ for lg in loggers)}")
    print(f"reference  epoch (train + val)            {epoch:8.2f} s   (mean of {len(clock.seconds)})")
    print(f"attention  per-epoch call                 {per_call:8.2f} s   ratio to epoch {per_call / epoch:.3f}"
          f"   (calls: {', '.join(f'{s:.2f}' for s in per_epoch)} s; the first imports scikit-learn, matplotlib)")
    print(f"attention  final call (+ HTML explorer)   {final:8.2f} s   ratio to epoch {final / epoch:.3f}")
    print(f"embedding  final call                     {features:8.2f} s   ratio to epoch {features / epoch:.3f}")
    total = MAKE_TRAIN_EPOCHS // every * per_call + final + features
    print(f"projected `make train` ({MAKE_TRAIN_EPOCHS} epochs, attention every {every}): callbacks {total:.1f} s of "
          f"{MAKE_TRAIN_EPOCHS * epoch + total:.1f} s = {total / (MAKE_TRAIN_EPOCHS * epoch + total):.1%}")
    print(f"files: {out}")


if __name__ == "__main__":
    main()
