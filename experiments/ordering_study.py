"""The ordering study: train the same VMamba with several patch orderings and seeds, test every trained model under
every ordering and with its scans ablated, and compile a report (study.md opening with the verdict, study.json,
figures, HTML explorers) from the run directories.

    python experiments/ordering_study.py           # preset=cpu: digits and long_range, 5 orderings x 3 seeds
    python experiments/ordering_study.py preset=quick              # a first look: long_range, 3 orderings x 2 seeds
    python experiments/ordering_study.py data=shapes orderings=[row_major,diagonal,morton,spiral,hilbert] seeds=[0,1]
    python experiments/ordering_study.py data=digits trainer.max_epochs=3          # other overrides: every run
    python experiments/ordering_study.py preset=paper data.root=/data/imagenet trainer.devices=1
    python experiments/ordering_study.py preset=paper data.root=... hydra/launcher=slurm hydra.launcher.partition=gpu
    python experiments/ordering_study.py --compile-only studies/2026-01-01_12-00-00   # or compile_only=<dir>

Study keys (experiments/conf/study.yaml, presets in experiments/conf/preset/): study_dir, data, orderings, seeds,
parallel, cross_eval, scan_ablation, checkpoint, train_overrides, data_overrides, eval_overrides, report.* (with
report.verdict.*: significance level, interval confidence, scan-use thresholds; report.relevance.*: ERF and
faithfulness per run from its checkpoint). Any other override
goes to every training run; hydra/... and hydra.* overrides (e.g. hydra/launcher=submitit_local) to every
train.py and eval.py multirun. The study directory (default studies/<date>_<time> under $PATCHORDER_ROOT or the
current directory) holds study_plan.json, train_<data>/, eval_<data>/ and ablation_<data>/ (the sweeps), logs/,
figures/, explorers/, study.md and study.json.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `study` package beside this file

from study.settings import Plan, StudyError, check_overrides, make_plan  # noqa: E402

COMPILE_FLAG = "--compile-only"


def compile_only_dir(argv: list[str]) -> tuple[str | None, list[str]]:
    """The directory of ``--compile-only DIR``, ``--compile-only=DIR`` or ``compile_only=DIR``, and the rest."""
    rest, directory = [], None
    args = iter(argv)
    for arg in args:
        if arg == COMPILE_FLAG:
            directory = next(args, None)
            if directory is None:
                raise StudyError(f"{COMPILE_FLAG} needs the study directory: {COMPILE_FLAG} studies/<date>_<time>")
        elif arg.startswith((f"{COMPILE_FLAG}=", "compile_only=")):
            directory = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if directory is not None and rest:
        raise StudyError(f"{COMPILE_FLAG} re-compiles an existing study and takes no overrides; got {rest}")
    return directory, rest


def compile_and_summarise(plan: Plan) -> None:
    from study.report import compile_study

    print(f"compiling the report of {plan.study_dir} ...", flush=True)
    document = compile_study(plan)
    for name, group in document["groups"].items():
        print(f"  {name}: {group['completed']} of {group['expected']} training runs completed; "
              f"{len(group['failures'])} failed or missing item(s)")
        for failure in group["failures"]:
            print(f"    {failure['kind']} {failure['run']}: {failure['status']}: {failure['error']}")
    print(f"report: {plan.study_dir / 'study.md'} (numbers: study.json; compiled in {document['compile_seconds']} s)")


def run_study(argv: list[str]) -> None:
    from study.launch import run_sweeps
    from study.report import LOG_FILE

    plan = make_plan(argv)
    check_overrides(plan)
    plan.save()
    print(f"study directory: {plan.study_dir}", flush=True)
    started = time.time()
    groups = run_sweeps(plan)
    log = {"started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
           "seconds": round(time.time() - started, 1), "groups": groups}
    (plan.study_dir / LOG_FILE).write_text(json.dumps(log, indent=2) + "\n")
    compile_and_summarise(plan)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    try:
        directory, overrides = compile_only_dir(argv)
        if directory is not None:
            compile_and_summarise(Plan.load(directory))
        else:
            run_study(overrides)
    except StudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
