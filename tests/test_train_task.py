"""The task wrapper train.py and eval.py share: Ctrl-C stops a sweep (Lightning turns it into SystemExit), other
errors let it go on, and a results.json that cannot be written is reported together with the job's own error."""
from __future__ import annotations

import errno

import pytest
from omegaconf import OmegaConf
from train_support import read_json

from patchorder.errors import ResultsNotWrittenError
from patchorder.training import hydra_info, task


def cfg(tmp_path):
    return OmegaConf.create({"paths": {"output_dir": str(tmp_path)}, "cpu_threads": None})


def run(tmp_path, body):
    return task.run_job(cfg(tmp_path), "eval", body, lambda results: {"error": results.get("error")}, "Test")


def fail_with(error):
    def body(job):
        raise error
    return body


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), SystemExit(1)])
def test_ctrl_c_stops_a_sweep_and_is_recorded(tmp_path, monkeypatch, interrupt):
    monkeypatch.setattr(hydra_info, "is_multirun", lambda: True)
    with pytest.raises(type(interrupt)):
        run(tmp_path, fail_with(interrupt))
    assert read_json(tmp_path / "results.json")["status"] == "interrupted"


def test_other_errors_let_a_sweep_go_on(tmp_path, monkeypatch):
    monkeypatch.setattr(hydra_info, "is_multirun", lambda: True)
    results = run(tmp_path, fail_with(RuntimeError("boom")))
    assert results["status"] == "failed" and read_json(tmp_path / "results.json")["error"] == "RuntimeError: boom"
    monkeypatch.setattr(hydra_info, "is_multirun", lambda: False)
    with pytest.raises(RuntimeError, match="boom"):  # a single run re-raises
        run(tmp_path, fail_with(RuntimeError("boom")))


def disk_full(self):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_an_unwritable_results_json_is_reported_with_the_jobs_own_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(task.Job, "write_results", disk_full)
    monkeypatch.setattr(hydra_info, "is_multirun", lambda: True)
    results = run(tmp_path, fail_with(RuntimeError("the real error")))  # the sweep goes on
    out = " ".join(capsys.readouterr().out.split())
    assert results["status"] == "failed"
    assert "No space left on device" in out and "RuntimeError: the real error" in out
    monkeypatch.setattr(hydra_info, "is_multirun", lambda: False)
    with pytest.raises(RuntimeError, match="the real error"):  # a single run: the job's error, not the write's
        run(tmp_path, fail_with(RuntimeError("the real error")))
    with pytest.raises(ResultsNotWrittenError, match="No space left on device.*ended completed"):
        run(tmp_path, lambda job: None)
