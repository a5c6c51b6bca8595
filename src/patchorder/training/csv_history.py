"""A CSV logger whose metrics.csv survives a resume in the same folder.

Lightning's CSVLogger deletes an existing metrics.csv when it starts, so a run resumed in its own folder (a
requeued SLURM job) lost the history before the interruption. Here the earlier rows are kept, minus those of
steps the resumed run logs again (trained again from the checkpoint), and the new rows are appended. The file is
only rewritten when the resumed run first saves, so a run killed before that leaves it as it was.
"""
from __future__ import annotations

import csv
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _HistoryWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # called by the writer's __init__, where Lightning deletes the file
        self._earlier: list[dict[str, Any]] | None = None
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                reader = csv.DictReader(handle)
                self._earlier = list(reader)
                self._earlier_keys = list(reader.fieldnames or [])

    def save(self) -> None:
        if self._earlier is not None and self.metrics:  # the first save rewrites the file (kept rows only)
            first = min(int(m["step"]) for m in self.metrics if m.get("step") is not None)
            kept = [row for row in self._earlier if row.get("step") in (None, "") or int(row["step"]) < first]
            self.metrics_keys = sorted(set(self.metrics_keys) | set(self._earlier_keys))
            with self._fs.open(self.metrics_file_path, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)
            self._earlier = None
        super().save()


class HistoryCSVLogger(CSVLogger):
    """Lightning's CSVLogger that keeps an earlier metrics.csv of the same folder (see the module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _HistoryWriter(log_dir=self.log_dir)
        return self._experiment
