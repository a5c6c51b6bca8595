"""The README's commands work as written (first hour of a newcomer): each one is found in README.md and checked.

Every shell command of the README (```bash blocks, and inline `python ...` / `make ...` spans) must be listed in
CHECKS with how it is checked, so a new README command cannot go untested:
  run      run as written (``python`` = this interpreter, i.e. the project's venv); placeholders such as
           ``outputs/<date>/<time>_spiral/...``, ``...`` or ``a.npz`` are replaced by the files of a real short run
  short    run as written plus SHORT (a few batches, one epoch), so it stays cheap
  compose  needs data, GPUs or a cluster: Hydra composes it (``--cfg job``; a sweep ``-m a,b`` checks its first
           value), which catches unknown groups, keys and values
  study    the ordering study's own planning and override checks (nothing is trained)
  make     ``make -n``: the target exists and runs the venv's python
Also: paths in the closing summary are never wrapped when the output is not a terminal.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "trainer.num_sanity_val_steps=0", "test=false", "cpu_threads=1", "callbacks.embedding.num_samples=16",
         "callbacks.attention.num_images=2", "callbacks.attention.report_methods=[pca]", "data.image_size=32"]

CHECKS = {
    "make train": "make",
    "make test": "make",
    "make setup": "make",
    "source .venv/bin/activate": "make",  # make setup creates .venv (checked with make -n setup)
    'make train ARGS="ordering=spiral data=shapes"': "make",
    'make test ARGS="-k orderings -x"': "make",
    "make test-long": "make",
    "make train ARGS=cpu_threads=1": "make",
    "python train.py": "short",
    "python train.py ordering=spiral data=shapes trainer.max_epochs=20": "short",
    "python train.py model=vmamba_tiny_s1l8 experiment=paper data.root=/data/imagenet trainer=gpu": "compose",
    "python train.py model=vmamba_tiny_s1l8 data.image_size=224 trainer.limit_train_batches=4 "
    "trainer.limit_val_batches=2 trainer.max_epochs=1": "compose",  # batch 8: tests/test_device_defaults.py
    "python eval.py ckpt_path=outputs/<date>/<time>_spiral/checkpoints/last.ckpt": "run",
    "python eval.py ckpt_path=... ordering=hilbert": "run",
    "python eval.py ckpt_path=... attention.export=true attention.report=true": "run",
    "python train.py -m ordering=row_major,diagonal,morton,spiral": "compose",
    "python train.py -m 'ordering=glob(*)'": "compose",
    "python eval.py -m ckpt_path=... 'ordering=glob(*)'": "compose",
    "python train.py experiment=paper data.root=/data/imagenet trainer=ddp trainer.devices=8": "compose",
    "python train.py -m hydra/launcher=slurm hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=4 "
    "hydra.launcher.tasks_per_node=4 trainer=ddp trainer.devices=4 'ordering=glob(*)'": "compose",
    "python -m orderings.show row_major diagonal morton spiral hilbert 8 8 -o all.png": "run",
    "python train.py ordering=column_snake": "custom",  # needs the user's own module: tests/test_orderings.py
    "python train.py ~ordering.name +ordering._target_=my_orderings.ColumnSnake": "custom",
    "python -m patchorder.explore outputs/<run>/": "run",
    "python -m patchorder.explore a.npz -o report.html --compare b.npz": "run",
    "python experiments/ordering_study.py": "study",
    "python experiments/ordering_study.py preset=quick": "study",
    "python train.py ~ordering.name +ordering.stages=[row_major,spiral,morton,hilbert]": "short",
    "python eval.py ckpt_path=... attention.attribution=true": "run",
    "python experiments/faithfulness/compare.py outputs/<run>/": "run",
    "python -m orderings.show column_snake 8 8": "custom",  # the user's own module (README's example)
    ".venv/bin/python experiments/benchmarks/gpu_check.py": "custom",  # a GPU: test_scan_gpu_check.py dry-runs it
    "python eval.py ckpt_path=<ckpt> ablation=scan": "run",
    "python eval.py ckpt_path=<ckpt> ordering=random": "run",
    "python train.py experiment=long_range ordering=spiral": "compose",
    "python experiments/ordering_study.py data=[shapes] orderings=[row_major,diagonal,morton,spiral,hilbert] "
    "seeds=[0,1,2]": "study",
    "python experiments/ordering_study.py preset=paper data.root=/data/imagenet hydra/launcher=slurm "
    "hydra.launcher.partition=gpu": "study",
    "python experiments/ordering_study.py --compile-only studies/<date>_<time>": "study",
}


def readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line:
                commands.append(" ".join(line.split()))
    for span in re.findall(r"`((?:python|make|source|\.venv/bin/python) [^`]*)`", text):
        commands.append(" ".join(span.split()))
    return list(dict.fromkeys(commands))


def test_every_readme_command_is_checked():
    commands = readme_commands()
    unchecked = [c for c in commands if c not in CHECKS]
    assert not unchecked, f"README commands with no check in tests/test_readme.py CHECKS: {unchecked}"
    stale = [c for c in CHECKS if c not in commands]
    assert not stale, f"CHECKS lists commands the README no longer has: {stale}"


def by_kind(kind: str) -> list[str]:
    return [c for c, k in CHECKS.items() if k == kind]


def environment(root: Path) -> dict:
    return {**os.environ, "PATCHORDER_ROOT": str(root), "WANDB_SILENT": "true", "WANDB_MODE": "offline",
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")])}


def run(argv: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """A README command line: ``python`` is this interpreter; scripts are the repository's."""
    if argv[0] == "python":
        argv = [sys.executable, *argv[1:]]
    argv = [str(REPO / a) if a.endswith(".py") and (REPO / a).is_file() else a for a in argv]
    proc = subprocess.run(argv, cwd=cwd, env=environment(cwd), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{shlex.join(argv)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The README's first training command, shortened: its run folder fills the placeholders of the others."""
    root = tmp_path_factory.mktemp("readme")
    run(shlex.split("python train.py ordering=spiral data=shapes trainer.max_epochs=20") + SHORT, root)
    (run_dir,) = [p for p in (root / "outputs").glob("*/*") if p.is_dir()]
    return root, run_dir


def substitute(command: str, run_dir: Path, root: Path) -> list[str]:
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    text = command.replace("outputs/<date>/<time>_spiral/checkpoints/last.ckpt", str(ckpt))
    text = text.replace("ckpt_path=...", f"ckpt_path={ckpt}").replace("ckpt_path=<ckpt>", f"ckpt_path={ckpt}").replace("outputs/<run>/", str(run_dir))
    text = text.replace("a.npz", str(run_dir / "attention" / "attention_final.npz"))
    text = text.replace("b.npz", str(root / "eval_export" / "attention_eval.npz"))
    return shlex.split(text)


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in by_kind("short") if c != "python train.py"])
def test_short_training_commands_run(trained, command, tmp_path):
    root, run_dir = trained
    if "data=shapes" not in command:  # that one is the fixture's own run
        run(shlex.split(command) + SHORT, tmp_path)
    assert (run_dir / "results.json").is_file()


@pytest.mark.slow
def test_default_training_command_prints_the_explorer(trained):
    root, run_dir = trained
    assert (run_dir / "results.json").is_file() and (run_dir / "attention" / "attention_final.html").is_file()
    # `python train.py` (what make train runs), shortened; its summary names the explorer, unwrapped (a pipe)
    proc = run(["python", "train.py", *SHORT], root)
    (report,) = [line for line in proc.stdout.splitlines() if "attention explorer" in line]
    path = Path(report.split("attention explorer", 1)[1].strip(" │|"))
    assert path.is_file() and path.name == "attention_final.html"


@pytest.mark.long  # ~2 min together (one process start, ~7 s of imports, and a run each): make test-long and CI
@pytest.mark.parametrize("command", by_kind("run"))
def test_command_runs_as_written(trained, command, tmp_path):
    root, run_dir = trained
    if "--compare" in command:  # b.npz: a second export of the same blocks, from eval.py
        run(substitute("python eval.py ckpt_path=... attention.export=true", run_dir, root)
            + [f"attention.dirpath={root / 'eval_export'}", "attention.num_images=2"], tmp_path, timeout=900)
    argv = substitute(command, run_dir, root)
    proc = run(argv, tmp_path)
    if "orderings.show" in command:
        assert (tmp_path / "all.png").stat().st_size > 1000
    if "patchorder.explore" in command:
        assert "wrote " in proc.stdout


@pytest.mark.parametrize("command", by_kind("compose"))
def test_command_composes(command, tmp_path):
    argv = shlex.split(command)
    if "-m" in argv:  # a sweep: compose its first job
        argv.remove("-m")
        argv = [re.sub(r"=glob\(\*\)$", "=row_major", a) if a.startswith("ordering=") else a for a in argv]
        argv = [a.split(",")[0] if "=" in a and "," in a and "[" not in a else a for a in argv]
    proc = run(argv + ["--cfg", "job"], tmp_path, timeout=300)
    assert "trainer:" in proc.stdout or "ckpt_path" in proc.stdout


@pytest.mark.parametrize("command", by_kind("study"))
def test_study_command_plans(command):
    sys.path.insert(0, str(REPO / "experiments"))
    from ordering_study import compile_only_dir
    from study.settings import check_overrides, make_plan

    args = shlex.split(command)[2:]
    directory, rest = compile_only_dir(args)
    if directory is not None:
        assert directory == "studies/<date>_<time>" and rest == []
        return
    check_overrides(make_plan(rest))


@pytest.mark.parametrize("command", by_kind("make"))
def test_make_targets_exist_and_use_the_venv(command, tmp_path):
    if command.startswith("source "):
        command = "make setup"
    argv = shlex.split(command)
    proc = subprocess.run(["make", "-n", "-B", *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "-m venv .venv" in proc.stdout
    target = argv[1]
    if target in ("train", "test"):
        assert f".venv/bin/python {'train.py' if target == 'train' else '-m pytest'}" in proc.stdout


def test_paths_are_not_wrapped_when_output_is_not_a_terminal(tmp_path):
    long_path = tmp_path / ("deep_folder_name_" * 12) / "attention_final.html"
    code = ("from patchorder.training.console import print_outputs; "
            f"print_outputs('Run completed', {{'attention explorer': {str(long_path)!r}}})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert str(long_path) in proc.stdout  # on one line, whole
