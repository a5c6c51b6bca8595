"""Adding an ordering is one new module in orderings/: in a copy of the repository with one more file,
``orderings.get``, ``timm.create_model(..., ordering=...)``, ``train.py ordering=<name>`` and a
``train.py -m 'ordering=glob(...)'`` sweep all see it, with no yaml file and no import list to edit."""
from __future__ import annotations

from pathlib import Path

import pytest
from train_support import TINY, copy_repo, read_json, run_dirs
from train_support import run_in_copy as run

pytestmark = pytest.mark.slow

MODULE = '''"""Columns top to bottom, then bottom to top, alternating."""
import torch

from orderings.base import Ordering
from orderings.registry import register


@register("column_snake")
class ColumnSnake(Ordering):
    def permutation(self, height, width):
        grid = torch.arange(height * width).view(height, width).t().clone()
        grid[1::2] = grid[1::2].flip(1)
        return grid.reshape(-1)
'''
SHORT = [*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
         "trainer.num_sanity_val_steps=0", "test=false", "logger=csv", "cpu_threads=1"]


def column_snake(height: int, width: int) -> list[int]:
    """The oracle: raster indices column by column, every other column upwards."""
    out = []
    for c in range(width):
        rows = range(height) if c % 2 == 0 else range(height - 1, -1, -1)
        out += [r * width + c for r in rows]
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = copy_repo(tmp_path_factory.mktemp("repo"))
    (root / "orderings" / "column_snake.py").write_text(MODULE)
    assert not (root / "conf" / "ordering" / "column_snake.yaml").exists()
    return root


def test_get_and_timm_see_the_new_module(repo, tmp_path):
    code = """
import orderings, timm, torch, patchorder.models
from patchorder.models import capture_ssm
print(orderings.get("column_snake")(3, 4).tolist())
model = timm.create_model("vmamba_micro", ordering="column_snake", num_classes=3).eval()
with torch.no_grad(), capture_ssm(model, stages=[0]) as records:
    model(torch.zeros(1, 3, 32, 32))
print(records[0].ordering, records[0].routes[0].tolist())
"""
    lines = run(repo, ["-c", code], tmp_path).stdout.strip().splitlines()
    assert lines[0] == str(column_snake(3, 4))
    assert lines[1] == f"column_snake {column_snake(8, 8)}"  # 32 px / patch size 4: an 8 x 8 stage-0 grid


def test_train_py_runs_it_by_name(repo, tmp_path):
    run(repo, [str(repo / "train.py"), "ordering=column_snake", *SHORT], tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    results = read_json(run_dir / "results.json")
    assert run_dir.name.endswith("_column_snake")
    assert (results["status"], results["ordering"]) == ("completed", "column_snake")


def test_a_glob_sweep_includes_it(repo, tmp_path):
    run(repo, [str(repo / "train.py"), "-m", "ordering=glob(column*)", *SHORT], tmp_path)
    (sweep_dir,) = run_dirs(tmp_path, "multirun")
    runs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert runs == ["0_column_major", "1_column_snake"]  # column_major has no yaml file either
    assert [read_json(sweep_dir / r / "results.json")["ordering"] for r in runs] == ["column_major", "column_snake"]
