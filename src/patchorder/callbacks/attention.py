"""AttentionLogger: the hidden attention of the model on a fixed probe batch, every N epochs and at the end of fit.

Rank 0 only, with no collective call inside (other DDP ranks return at once). Each time it writes the files
of :mod:`patchorder.artifacts.files` under <run dir>/attention/ (``attention_epoch{E:03d}``, E the
0-based epoch as in checkpoint names, not for the last epoch, whose weights ``attention_final`` holds), logs
every scalar metric of the registry (patchorder.attention.metrics.METRICS) to every logger and, when a
WandbLogger is present, the pictures, embedding tables, scatter charts, the HTML explorer (end of fit) and, for
an online run, an artifact of type "attention". The keys are listed in README.md ("What a run produces") and
checked by tests/test_callbacks_e2e.py.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from patchorder.attention import load
from patchorder.artifacts.files import WrittenAttention, write_attention_artifacts
from patchorder.artifacts.options import make_options
from patchorder.artifacts.probe import check_selection, eval_network, probe, probe_export
from patchorder.callbacks import common, wandb_media

PREFIX = "attention"


class AttentionLogger(L.Callback):
    """Log attention matrices, per-patch heatmaps, metrics, embeddings and the raw export during training.

    Args:
        every_n_epochs: also log after every N-th training epoch (0 or None: only at the end of fit).
        report: write the HTML explorer next to attention_final.npz (and log it to W&B when present).
        dirpath: where the files go; None: <run dir>/attention.
        attribution: at the end of fit also write attention_final_relevance.npz/.json (rollout, attribution,
            input-gradient and random maps, their deletion/insertion AUCs, the ERF of every stage), log the AUCs
            and ERF areas as scalars and, with W&B, the maps as overlays on the probe images
            (``attention/relevance/<map>``).
        **options: :class:`~patchorder.artifacts.options.AttentionOptions` (stages, blocks,
            num_images, query_patches, per_image_matrices, embeddings, methods, cmap, scale, ...).
    """

    def __init__(self, every_n_epochs: int | None = 2, report: bool = True, dirpath: str | Path | None = None,
                 attribution: bool = False, **options: Any) -> None:
        self.every_n_epochs = common.every_n(every_n_epochs, "every_n_epochs")
        self.attribution = bool(attribution)
        self.report = bool(report)
        self.dirpath = dirpath
        self.options = make_options(options, "AttentionLogger")
        self.written: list[WrittenAttention] = []  # what this process wrote, in order (read by tests and studies)
        self._probe: tuple | None = None
        self._last: tuple[int, Path] | None = None  # (global_step, .npz) of the latest extraction

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        datamodule = common.datamodule_of(trainer, "AttentionLogger")
        self._probe = probe(datamodule, self.options.num_images, "AttentionLogger", "callbacks.attention.num_images")
        # Fail now, not after the first epoch, when stages, blocks or query patches cannot exist.
        check_selection(eval_network(pl_module), self.options, self._probe[0].shape[-2:])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The last epoch (by max_epochs) is left to on_train_end: attention_final holds the same weights, once.
        max_epochs = getattr(trainer, "max_epochs", None) or 0
        last = max_epochs > 0 and trainer.current_epoch + 1 >= max_epochs
        if (trainer.is_global_zero and self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0
                and not last):
            self.log_attention(trainer, pl_module, f"attention_epoch{trainer.current_epoch:03d}", final=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_train_end, not on_fit_end: the model is still on its device and the loggers are still open.
        if trainer.is_global_zero:
            self.log_attention(trainer, pl_module, "attention_final", final=True)

    def log_attention(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str,
                      final: bool) -> WrittenAttention:
        """Extract, write and log now (rank 0 only: the hooks check); training's random streams are untouched."""
        with common.logging_work():
            return self._log_attention(trainer, pl_module, tag, final)

    def _log_attention(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str,
                       final: bool) -> WrittenAttention:
        step = trainer.global_step
        started = time.perf_counter()
        repeat = self._last is not None and self._last[0] == step  # same weights as the last log (final after epoch)
        if repeat:  # read back rather than kept in memory between epochs (stage 0 of VMamba-T: ~40 MB per image)
            export = load(self._last[1])
        else:
            images, labels = self._probe
            export = probe_export(eval_network(pl_module), images, labels, trainer.datamodule, self.options)
        extract_seconds = time.perf_counter() - started
        # In on_train_epoch_end current_epoch is the epoch just trained; in on_train_end the number trained.
        when = {"epochs_completed": trainer.current_epoch} if final else {"epoch": trainer.current_epoch}
        meta = {**when, "global_step": step, "final": final, "extract_seconds": round(extract_seconds, 3)}
        if final and self.attribution:  # before the files: the explorer shows the relevance file beside the export
            self._log_relevance(trainer, pl_module, tag, step)
        written = write_attention_artifacts(export, common.output_dir(trainer, self.dirpath, PREFIX), tag,
                                            self.options, report=final and self.report, meta=meta)
        if not repeat:
            scalars = {f"{PREFIX}/{k}": v for k, v in written.rendered.scalars().items()}
            for logger in common.other_loggers(trainer):
                logger.log_metrics(scalars, step=step)
        run = common.wandb_run(trainer)
        if run is not None:
            wandb_media.log_attention(run, written.rendered, written.paths, step, tag, PREFIX, media=not repeat)
        written.seconds = time.perf_counter() - started
        self._last = (step, written.paths["npz"])
        self.written.append(written)
        return written

    def _log_relevance(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str, step: int) -> None:
        """Whole-model relevance views on the probe batch: files, scalars to every logger, W&B overlays."""
        from patchorder.attention.relevance import overlay, scalars, write_relevance

        images, labels = self._probe
        display = np.asarray(trainer.datamodule.to_display(images))
        summary: dict = {}
        write_relevance(eval_network(pl_module), images, common.output_dir(trainer, self.dirpath, PREFIX),
                        tag, labels=labels.tolist(), display=display, summary_out=summary)
        numbers = scalars(summary, PREFIX)
        for logger in common.other_loggers(trainer):
            logger.log_metrics(numbers, step=step)
        run = common.wandb_run(trainer)
        if run is not None:
            import wandb

            pictures = {f"{PREFIX}/relevance/{name}": [
                wandb.Image(overlay(display[i], maps[i]), caption=f"image {i}, label {int(labels[i])}")
                for i in range(len(display))] for name, maps in summary["maps"].items()}
            run.log({**numbers, **pictures, wandb_media.STEP_KEY: step})
