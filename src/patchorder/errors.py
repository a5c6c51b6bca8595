"""Errors a user can cause (config, data, checkpoint, training run); every message says what was wrong and how to
fix it. One module that every layer imports, so no layer needs another just for its exceptions."""
from __future__ import annotations


class ConfigError(ValueError):
    """A setting in the Hydra config (or a checkpoint it names) cannot work; raised before any training starts."""


class DataConfigError(ValueError):
    """A data setting or data file is wrong; the message says what and how to fix it."""


class CorruptImageError(DataConfigError):
    """An image file cannot be decoded (truncated, not an image, unsupported format)."""


# Errors a user caused: train.py and eval.py end with their message (exit code 2), not a traceback.
USER_ERRORS = (ConfigError, DataConfigError)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; the run stops and keeps its last good checkpoint."""

    def __init__(self, step: int, epoch: int, batch_idx: int, value: float, last_checkpoint: str | None = None):
        self.step, self.epoch, self.batch_idx, self.value = step, epoch, batch_idx, value
        self.last_checkpoint = last_checkpoint
        kept = (
            f"The last good checkpoint is kept unchanged: {last_checkpoint}."
            if last_checkpoint
            else "No checkpoint had been written yet."
        )
        super().__init__(
            f"training stopped: the loss is {value} at global step {step} (epoch {epoch}, batch {batch_idx}). "
            f"{kept} Advice: lower the learning rate (module.optimizer.lr=...), keep gradient clipping on "
            f"(trainer.gradient_clip_val=5.0), lengthen the warmup (module.scheduler.warmup_epochs=...), "
            f"and check the data for NaN/Inf pixels or wrong normalisation."
        )


class NonFiniteWeightsError(RuntimeError):
    """A checkpoint was about to be written with NaN/Inf weights; refusing keeps the previous good file."""


class ResultsNotWrittenError(OSError):
    """results.json could not be written (disk full, folder not writable); the message also says how the job
    itself ended."""


# Errors that end a run with their message (exit code 1): the run went wrong, the config was fine.
RUN_ERRORS = (NonFiniteLossError, NonFiniteWeightsError, ResultsNotWrittenError)
