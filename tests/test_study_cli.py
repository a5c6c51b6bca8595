"""The ordering study's command line and helpers (fast, no training): how overrides are split between the study,
the training runs and the launcher; the errors a user sees; paths quoted for Hydra and parsed back by Hydra's own
parser; statistics against Python's; curves read from a hand-written CSV log."""
from __future__ import annotations

import shutil
import statistics
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from train_support import REPO

sys.path.insert(0, str(REPO / "experiments"))

from ordering_study import main as study_main  # noqa: E402
from study.analysis import spread  # noqa: E402
from study.collect import curves  # noqa: E402
from study import settings  # noqa: E402
from study.launch import ablation_command, eval_command, quote, train_command  # noqa: E402
from study.settings import last_group_choice_wins, make_plan, split_overrides  # noqa: E402


@pytest.fixture(autouse=True)
def study_root(monkeypatch, tmp_path):
    """Default study directories (studies/<date>_<time>) under a temporary root, never in the checkout."""
    monkeypatch.setenv("PATCHORDER_ROOT", str(tmp_path))


@pytest.fixture(scope="module")
def conf_with_long_range(tmp_path_factory) -> Path:
    """The training config tree, with stand-ins for conf/data/long_range.yaml and conf/experiment/long_range.yaml
    where the checkout has none yet (the presets name them; these tests are about how the study combines
    overrides, not about that setting)."""
    conf = tmp_path_factory.mktemp("conf") / "conf"
    shutil.copytree(REPO / "conf", conf)
    if not (conf / "data" / "long_range.yaml").exists():
        shutil.copy(conf / "data" / "shapes.yaml", conf / "data" / "long_range.yaml")
    if not (conf / "experiment" / "long_range.yaml").exists():
        text = (conf / "experiment" / "quick.yaml").read_text()
        (conf / "experiment" / "long_range.yaml").write_text(text.replace("experiment_name: quick",
                                                                          "experiment_name: long_range"))
    return conf


@pytest.fixture(autouse=True)
def train_conf(monkeypatch, conf_with_long_range):
    monkeypatch.setattr(settings, "TRAIN_CONF", conf_with_long_range)


def parse(lines: list[str]):
    return {o.key_or_group: o for o in OverridesParser.create().parse_overrides(lines)}


def test_overrides_go_to_study_training_or_launcher():
    study, train, launcher = split_overrides([
        "orderings=[row_major,spiral]", "seeds=[0,1]", "data=shapes", "report.compare=[spiral,row_major]",
        "data.root=/data/x", "model=vmamba_tiny_s1l8", "trainer.max_epochs=3", "+callbacks.x._target_=m.C",
        "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "preset=paper"])
    assert study == ["orderings=[row_major,spiral]", "seeds=[0,1]", "data=shapes", "report.compare=[spiral,row_major]",
                     "preset=paper"]
    assert train == ["data.root=/data/x", "model=vmamba_tiny_s1l8", "trainer.max_epochs=3", "+callbacks.x._target_=m.C"]
    assert launcher == ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"]


def test_plan_orders_training_overrides_preset_data_then_command_line(tmp_path):
    plan = make_plan([f"study_dir={tmp_path / 's'}", "trainer.max_epochs=1", "hydra/launcher=submitit_local"])
    assert plan.preset == "cpu" and [g.name for g in plan.groups] == ["digits", "long_range"]
    assert plan.orderings == ["row_major", "diagonal", "morton", "spiral", "hilbert"] and plan.seeds == [0, 1, 2]
    assert plan.scan_ablation is True and plan.cross_eval is True
    digits, long_range = plan.groups
    assert digits.train_overrides[0] == "experiment=quick"
    assert digits.train_overrides.index("data.image_size=64") < digits.train_overrides.index("trainer.max_epochs=1")
    assert digits.train_overrides[-1] == "trainer.max_epochs=1"  # the command line wins
    # long_range brings its own experiment: the preset's experiment=quick for every data config is dropped
    assert [o for o in long_range.train_overrides if o.startswith("experiment=")] == ["experiment=long_range"]
    assert long_range.train_overrides[-1] == "trainer.max_epochs=1"
    assert (long_range.eval_dir, long_range.ablation_dir) == ("eval_long_range", "ablation_long_range")
    assert plan.ordering_labels == {o: o for o in plan.orderings}
    command = train_command(plan, digits)
    assert "hydra/launcher=submitit_local" in command
    overrides = parse(command[3:])  # after python, train.py, -m
    assert overrides["ordering"].value().list == plan.orderings  # a choice sweep over the orderings ...
    assert overrides["seed"].value().list == plan.seeds  # ... times the seeds
    assert overrides["hydra.sweep.dir"].value() == str(tmp_path / "s" / "train_digits")


def test_quick_preset(tmp_path):
    plan = make_plan([f"study_dir={tmp_path / 's'}", "preset=quick"])
    assert (plan.preset, len(plan.orderings), len(plan.seeds)) == ("quick", 3, 2)
    (group,) = plan.groups
    assert group.name == "long_range" and "experiment=long_range" in group.train_overrides


@pytest.mark.parametrize("preset", ["cpu", "quick"])
def test_presets_compose_every_training_run(tmp_path, preset):
    """Each preset's training configurations compose and pass train.py's checks (what a study does first)."""
    plan = make_plan([f"study_dir={tmp_path / 's'}", f"preset={preset}"])
    settings.check_overrides(plan)


def test_a_later_group_choice_replaces_an_earlier_one():
    assert last_group_choice_wins(["experiment=quick", "trainer.max_epochs=3", "experiment=long_range",
                                   "+callbacks.x._target_=m.C", "model=vmamba_micro", "trainer.max_epochs=4"]) == \
        ["trainer.max_epochs=3", "experiment=long_range", "+callbacks.x._target_=m.C", "model=vmamba_micro",
         "trainer.max_epochs=4"]  # values repeat (Hydra takes the last), group choices do not
    plan = make_plan(["preset=quick", "experiment=quick"])  # the command line's choice wins over the preset's
    assert [o for o in plan.groups[0].train_overrides if o.startswith("experiment=")] == ["experiment=quick"]


def test_ablation_command_evaluates_each_checkpoint_once_on_its_trained_ordering(tmp_path):
    plan = make_plan([f"study_dir={tmp_path}", "data=digits", 'eval_overrides=["trainer=gpu"]'])
    checkpoints = [Path("/r/0_row_major_s0/checkpoints/best.ckpt"), Path("/r/1_spiral, x/checkpoints/last.ckpt")]
    command = ablation_command(plan, plan.groups[0], checkpoints)
    overrides = parse(command[3:])
    assert [v.text for v in overrides["ckpt_path"].value().list] == [str(c) for c in checkpoints]
    assert overrides["ablation"].value() == "scan" and "ordering" not in overrides  # the trained ordering
    assert overrides["hydra.sweep.dir"].value() == str(tmp_path / "ablation_digits")
    assert overrides["trainer"].value() == "gpu"


@pytest.mark.parametrize("path", ["/tmp/a b/c.ckpt", "/tmp/x,y=z/best-epoch001-acc10.5.ckpt", "/tmp/it's/last.ckpt",
                                  "C:\\runs\\last.ckpt", "/odd\\'name\\", "/tmp/dir\\\\"])
def test_quoted_paths_parse_back_to_themselves(path):
    assert parse([f"ckpt_path={quote(path)}"])["ckpt_path"].value() == path


def test_eval_command_sweeps_checkpoints_times_orderings(tmp_path):
    plan = make_plan([f"study_dir={tmp_path}", "orderings=[row_major,spiral]", 'eval_overrides=["trainer=gpu"]'])
    checkpoints = [Path("/r/0_row_major_s0/checkpoints/best, 1.ckpt"), Path("/r/1_spiral_s0/checkpoints/last.ckpt")]
    command = eval_command(plan, plan.groups[0], checkpoints)
    overrides = parse(command[3:])
    assert [v.text for v in overrides["ckpt_path"].value().list] == [str(c) for c in checkpoints]  # QuotedStrings
    assert overrides["ordering"].value().list == ["row_major", "spiral"]
    assert overrides["trainer"].value() == "gpu"


def test_spread_matches_statistics():
    values = [0.91, 0.87, None, 0.95, 0.9]
    present = [v for v in values if v is not None]
    assert spread(values) == {"mean": statistics.fmean(present), "std": statistics.stdev(present),
                              "min": 0.87, "max": 0.95, "n": 4}
    assert spread([0.5]) == {"mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5, "n": 1}
    assert spread([None]) == {"mean": None, "std": None, "min": None, "max": None, "n": 0}


def test_curves_from_a_csv_log(tmp_path):
    log = tmp_path / "metrics.csv"
    log.write_text("epoch,lr,step,train/loss,val/acc1\n"
                   "0,0.1,9,2.0,\n0,0.1,19,1.0,\n0,,19,,0.5\n1,0.1,29,0.5,\n1,,29,,0.75\n"
                   "1,,29,,0.8\n,,29,,\n")  # a resumed run logged epoch 1's validation twice: the last counts
    assert curves(log) == {"val_epochs": [0, 1], "val_acc1": [0.5, 0.8], "loss_epochs": [0, 1],
                           "train_loss": [1.5, 0.5]}


@pytest.mark.parametrize("args, message", [
    (["orderings=[row_major,no_such]"], "['no_such'] not found in conf/ordering/; available: column_major"),
    (["ordering=spiral"], "use orderings=[row_major,spiral]"),
    (["seeds=0,1"], "study keys take lists, not sweeps"),
    (["trainer.max_epochs=1,2"], "run one study per value of trainer.max_epochs"),
    (["data=[digits,digits]"], "data lists ['digits'] more than once"),
    (["report.compare=[row_major,snake]"], "give two different orderings of the study"),
    (["report.verdict.alpha=2"], "report.verdict.alpha=2 must be a number in (0, 1)"),
    (["report.verdict.min_scan_drop=5"], "(accuracies are fractions: 0.02 = 2 points)"),
    (["report.relevance.num_images=0"], "report.relevance.num_images=0 must be an integer >= 1"),
    (["--compile-only"], "--compile-only needs the study directory"),
    (["data=digits", "trainer.bogus=1"],
     "training runs on digits with ordering row_major: Could not override 'trainer.bogus'"),
    (["data=shapes", "data.image_size=48"], "data.image_size=48x48 is not divisible by 32"),
    (['eval_overrides=["trainer=nope"]'], "eval_overrides: In 'eval': Could not find 'trainer/nope'"),
])
def test_bad_command_lines_say_what_to_change(capsys, args, message):
    assert study_main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("form", ["--compile-only {}", "--compile-only={}", "compile_only={}"])
def test_compile_only_needs_a_study_directory(capsys, tmp_path, form):
    assert study_main(form.format(tmp_path).split()) == 2
    assert f"{tmp_path} is not a study directory: it has no study_plan.json" in capsys.readouterr().err


def test_compile_only_takes_no_overrides(capsys, tmp_path):
    assert study_main(["--compile-only", str(tmp_path), "seeds=[0]"]) == 2
    assert "takes no overrides; got ['seeds=[0]']" in capsys.readouterr().err


def test_study_dir_holding_a_study_is_refused(capsys, tmp_path):
    (tmp_path / "study_plan.json").write_text("{}")
    assert study_main([f"study_dir={tmp_path}"]) == 2
    assert "already holds a study" in capsys.readouterr().err
