"""The study's settings and plan.

The command line is a list of Hydra overrides. Those naming a study key (experiments/conf/study.yaml: data,
orderings, seeds, preset, ...) configure the study and are composed with Hydra's compose API; ``hydra/...`` and
``hydra.*`` overrides go to every train.py and eval.py multirun (e.g. hydra/launcher=slurm); everything else is
passed to every training run. The result is frozen into <study dir>/study_plan.json, which the later steps and
``--compile-only`` read.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from orderings import hydra_options
from patchorder.attention.embedding import METHODS

REPO = Path(__file__).resolve().parents[2]
STUDY_CONF = REPO / "experiments" / "conf"
TRAIN_CONF = REPO / "conf"
PLAN_FILE = "study_plan.json"
FORMAT = "patchorder.study/1"
CHECKPOINTS = ("best", "last")
EXPLORER_METHODS = METHODS  # the explorer computes every embedding method patchorder has
# Training keys the study sets itself, and the study key to use instead.
RESERVED = {
    "ordering": "orderings=[row_major,spiral]",
    "seed": "seeds=[0,1]",
    "hydra.sweep.dir": "study_dir=<directory>",
    "hydra.sweep.subdir": "nothing (the study names run directories <job>_<ordering>_s<seed>)",
}


class StudyError(Exception):
    """A mistake in the study's command line or directory; the message says what to change."""


@dataclass
class Group:
    """One data config's part of the study: its own training sweep and cross table."""

    name: str  # the data config (conf/data/<name>.yaml)
    train_overrides: list[str]  # preset's, data_overrides', then the command line's pass-through overrides
    train_dir: str  # the training sweep directory, relative to the study directory
    eval_dir: str  # the cross-evaluation sweep directory, relative to the study directory
    ablation_dir: str = ""  # the scan-ablation sweep directory (eval.py ablation=scan); "" in older plans


@dataclass
class Plan:
    study_dir: Path
    preset: str | None
    orderings: list[str]  # ordering config names (conf/ordering/<name>.yaml)
    seeds: list[int]
    groups: list[Group]
    ordering_labels: dict[str, str]  # config name -> the label runs record in results.json ("ordering")
    eval_overrides: list[str]
    launcher_overrides: list[str]  # hydra/... and hydra.* overrides, for train.py and eval.py alike
    parallel: int
    cross_eval: bool
    checkpoint: str
    report: dict[str, Any]
    scan_ablation: bool = False  # every trained model also evaluated with its scans ablated (eval.py ablation=scan)
    command: list[str] = field(default_factory=list)
    created: str = ""

    def path(self, relative: str) -> Path:
        return self.study_dir / relative

    def save(self) -> Path:
        self.study_dir.mkdir(parents=True, exist_ok=True)
        document = {"format": FORMAT, **asdict(self), "study_dir": str(self.study_dir)}
        path = self.study_dir / PLAN_FILE
        path.write_text(json.dumps(document, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, study_dir: str | Path) -> Plan:
        """The plan of an existing study; its directory is where it is now (studies can be moved)."""
        study_dir = Path(study_dir).expanduser().resolve()
        path = study_dir / PLAN_FILE
        if not path.is_file():
            raise StudyError(f"{study_dir} is not a study directory: it has no {PLAN_FILE} (written by "
                             f"experiments/ordering_study.py when a study starts)")
        document = json.loads(path.read_text())
        if document.pop("format", None) != FORMAT:
            raise StudyError(f"{path} is not a {FORMAT} study plan")
        document["groups"] = [Group(**g) for g in document["groups"]]
        document["study_dir"] = study_dir
        return cls(**document)


# --- the command line --------------------------------------------------------------------------------------
def parse_overrides(args: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(args)
    except OverrideParseException as error:
        raise StudyError(f"cannot parse the overrides: {error}") from None


def compose(study_overrides: list[str]) -> DictConfig:
    """experiments/conf/study.yaml + its preset + ``study_overrides``, through Hydra's compose API."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(STUDY_CONF), version_base="1.3", job_name="ordering_study"):
            return hydra_compose("study", overrides=study_overrides)
    except HydraException as error:
        presets = sorted(p.stem for p in (STUDY_CONF / "preset").glob("*.yaml"))
        raise StudyError(f"{error}\n(study keys are in {STUDY_CONF / 'study.yaml'}; presets: {', '.join(presets)})") \
            from None


def split_overrides(args: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(study overrides, training overrides, launcher overrides) from the command line, in their order."""
    defaults = compose([])
    study_keys = set(defaults.keys()) | {"preset"}
    dict_keys = {k for k in defaults if isinstance(defaults[k], DictConfig)}
    study, train, launcher = [], [], []
    for override in parse_overrides(args):
        key = override.key_or_group
        line = override.input_line
        if key in study_keys or key.split(".")[0] in dict_keys:
            if override.is_sweep_override():
                raise StudyError(f"{line}: study keys take lists, not sweeps, e.g. orderings=[row_major,spiral] "
                                 "seeds=[0,1]")
            study.append(line)
        elif key in RESERVED:
            raise StudyError(f"{line}: the study sets {key} itself; use {RESERVED[key]}")
        elif override.is_sweep_override():
            raise StudyError(f"{line}: a study sweeps orderings x seeds only; run one study per value of {key}")
        elif key == "hydra" or key.startswith(("hydra/", "hydra.")):
            launcher.append(line)
        else:
            train.append(line)
    return study, train, launcher


# --- checks ------------------------------------------------------------------------------------------------
def config_names(group: str) -> list[str]:
    if group == "ordering":  # every registered ordering is an option, with or without a yaml file
        return hydra_options.option_names(TRAIN_CONF)
    return sorted(p.stem for p in (TRAIN_CONF / group).glob("*.yaml"))


def _name_list(value: Any, key: str, group: str) -> list[str]:
    """A non-empty list of distinct config names of conf/<group>/ (one name is accepted as a list of one)."""
    names = [value] if isinstance(value, str) else list(value or [])
    if not names or not all(isinstance(n, str) and n for n in names):
        raise StudyError(f"{key}={value!r} must be a non-empty list of names, e.g. {key}=[{config_names(group)[0]}]")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise StudyError(f"{key} lists {duplicates} more than once")
    unknown = [n for n in names if n not in config_names(group)]
    if unknown:
        raise StudyError(f"{key}: {unknown} not found in conf/{group}/; available: {', '.join(config_names(group))}. " +
                         (f"Add your own as conf/{group}/<name>.yaml" if group != "ordering" else
                          "Add your own as a module in orderings/ (@orderings.register), or as "
                          "conf/ordering/<name>.yaml holding _target_: my_module.MyOrdering"))
    return names


def ordering_config(name: str) -> dict[str, Any]:
    """What ``ordering=<name>`` selects, as a plain dict (what orderings.resolve takes)."""
    return hydra_options.option_config(name, TRAIN_CONF)


def ordering_labels(names: list[str]) -> dict[str, str]:
    """What each ordering config is called in results.json (its ``name``, or its class for a ``_target_``)."""
    from patchorder.training.config import ordering_label

    labels = {name: ordering_label(ordering_config(name)) for name in names}
    for name, label in labels.items():
        twins = [other for other, same in labels.items() if same == label and other != name]
        if twins:
            raise StudyError(f"orderings {name} and {twins[0]} are both called {label!r} in their runs' results; "
                             "give each ordering config its own name")
    return labels


def _seeds(value: Any) -> list[int]:
    seeds = [value] if isinstance(value, int) else list(value or [])
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise StudyError(f"seeds={value!r} must be a non-empty list of integers, e.g. seeds=[0,1]")
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"seeds={seeds} repeats a seed")
    return seeds


def _string_list(value: Any, key: str) -> list[str]:
    items = list(value or [])
    if not all(isinstance(v, str) for v in items):
        raise StudyError(f"{key} must be a list of override strings, e.g. {key}=[trainer.max_epochs=3]")
    return items


def check_report(report: dict[str, Any], orderings: list[str]) -> dict[str, Any]:
    methods = list(report.get("explorer_methods") or [])
    unknown = [m for m in methods if m not in EXPLORER_METHODS]
    if not methods or unknown:
        raise StudyError(f"report.explorer_methods={methods}: choose a non-empty subset of {list(EXPLORER_METHODS)}")
    compare = report.get("compare")
    if compare is not None:
        compare = list(compare)
        if len(compare) != 2 or compare[0] == compare[1] or not set(compare) <= set(orderings):
            raise StudyError(f"report.compare={compare}: give two different orderings of the study ({orderings})")
    elif len(orderings) >= 2:
        compare = orderings[:2]
    dpi = report.get("figure_dpi", 110)
    if not isinstance(dpi, int) or dpi < 30:
        raise StudyError(f"report.figure_dpi={dpi!r} must be an integer >= 30")
    from study.relevance import check_settings  # relevance's checks live beside its defaults

    return {**report, "explorer_methods": methods, "compare": compare, "figure_dpi": dpi,
            "verdict": check_verdict(report.get("verdict")), "relevance": check_settings(report.get("relevance"))}


VERDICT_DEFAULTS = {"alpha": 0.05, "confidence": 0.95, "min_scan_drop": 0.02, "min_cross_drop": 0.01}


def check_verdict(verdict: dict[str, Any] | None) -> dict[str, float]:
    """report.verdict: the significance level, the confidence of the intervals, and the accuracy drops (fractions)
    below which the models are said not to use their scans (see study/verdict.py)."""
    verdict = {**VERDICT_DEFAULTS, **(verdict or {})}
    unknown = sorted(set(verdict) - set(VERDICT_DEFAULTS))
    if unknown:
        raise StudyError(f"report.verdict has unknown keys {unknown}; known: {', '.join(VERDICT_DEFAULTS)}")
    for key, value in verdict.items():
        low_open = key in ("alpha", "confidence")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                0 < value < 1 if low_open else 0 <= value <= 1):
            raise StudyError(f"report.verdict.{key}={value!r} must be a number in "
                             f"{'(0, 1)' if low_open else '[0, 1]'} (accuracies are fractions: 0.02 = 2 points)")
    return {k: float(v) for k, v in verdict.items()}


def last_group_choice_wins(overrides: list[str]) -> list[str]:
    """Drop a config group choice (``experiment=quick``) that a later choice of the same group replaces
    (``experiment=long_range`` in a data config's overrides): Hydra refuses two values for one group, while
    for values (``trainer.max_epochs=3``) the last one already wins."""
    groups = {p.name for p in TRAIN_CONF.iterdir() if p.is_dir()}
    parsed = parse_overrides(overrides)
    last = {o.key_or_group: i for i, o in enumerate(parsed) if o.key_or_group in groups and not o.is_add()
            and not o.is_delete()}
    return [line for i, (line, o) in enumerate(zip(overrides, parsed))
            if o.key_or_group not in last or last[o.key_or_group] == i or o.is_add() or o.is_delete()]


def default_study_dir() -> Path:
    root = Path(os.environ.get("PATCHORDER_ROOT") or ".")
    return root / "studies" / time.strftime("%Y-%m-%d_%H-%M-%S")


def make_plan(args: list[str]) -> Plan:
    """The plan of a new study from its command line (nothing is written)."""
    study_overrides, train_overrides, launcher_overrides = split_overrides(args)
    cfg = OmegaConf.to_container(compose(study_overrides), resolve=True)
    data = _name_list(cfg["data"], "data", "data")
    orderings = _name_list(cfg["orderings"], "orderings", "ordering")
    seeds = _seeds(cfg["seeds"])
    parallel = cfg["parallel"]
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        raise StudyError(f"parallel={parallel!r} must be an integer >= 1 (sub-studies run at once)")
    if cfg["checkpoint"] not in CHECKPOINTS:
        raise StudyError(f"checkpoint={cfg['checkpoint']!r}: choose one of {', '.join(CHECKPOINTS)}")
    common = _string_list(cfg["train_overrides"], "train_overrides")
    per_data = cfg.get("data_overrides") or {}
    study_dir = Path(cfg["study_dir"]).expanduser() if cfg.get("study_dir") else default_study_dir()
    study_dir = study_dir.resolve()
    if (study_dir / PLAN_FILE).exists():
        raise StudyError(f"{study_dir} already holds a study; re-compile its report with --compile-only {study_dir}, "
                         "or choose a new study_dir=<directory>")
    groups = [
        Group(name=name,
              train_overrides=last_group_choice_wins(
                  [*common, *_string_list(per_data.get(name), f"data_overrides.{name}"), *train_overrides]),
              train_dir=f"train_{name}", eval_dir=f"eval_{name}", ablation_dir=f"ablation_{name}")
        for name in data
    ]
    return Plan(
        study_dir=study_dir, preset=cfg.get("preset_name"), orderings=orderings, seeds=seeds, groups=groups,
        ordering_labels=ordering_labels(orderings),
        eval_overrides=_string_list(cfg["eval_overrides"], "eval_overrides"),
        launcher_overrides=launcher_overrides, parallel=parallel, cross_eval=bool(cfg["cross_eval"]),
        checkpoint=cfg["checkpoint"], report=check_report(cfg["report"], orderings),
        scan_ablation=bool(cfg["scan_ablation"]), command=list(args),
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
    )


def check_overrides(plan: Plan) -> None:
    """Compose every training configuration the sweeps will run (and eval.py's) and run train.py's own checks,
    so a mistyped override or an impossible setting stops the study now, not after the first sweep."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from patchorder.training.config import register_resolvers, validate_train_config
    from patchorder.errors import ConfigError

    def job_overrides(overrides: list[str]) -> list[str]:  # launcher settings are checked when Hydra launches
        return [o for o in overrides if not o.lstrip("+~").startswith("hydra")]

    register_resolvers()
    with initialize_config_dir(config_dir=str(TRAIN_CONF), version_base="1.3", job_name="ordering_study"):
        for group in plan.groups:
            for ordering in plan.orderings:
                overrides = [*job_overrides(group.train_overrides), f"data={group.name}", f"ordering={ordering}",
                             f"seed={plan.seeds[0]}"]
                try:
                    validate_train_config(hydra_compose("train", overrides=overrides))
                except (HydraException, OmegaConfBaseException, ConfigError) as error:
                    raise StudyError(f"training runs on {group.name} with ordering {ordering}: {error}") from None
        try:
            hydra_compose("eval", overrides=[*job_overrides(plan.eval_overrides), "ckpt_path=check.ckpt"])
        except (HydraException, OmegaConfBaseException) as error:
            raise StudyError(f"eval_overrides: {error}") from None
