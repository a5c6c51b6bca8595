"""Files from users are untrusted: a checkpoint whose pickle would run code is refused unloaded, and a
checkpoint's hyper_parameters cannot make eval.py instantiate a _target_ outside patchorder./orderings. that the
user did not give; both refusals come before any Trainer or logger, with a message."""
from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from train_support import CONF_DIR

from patchorder.errors import ConfigError
from patchorder.training import evaluate as evaluate_job
from patchorder.training import run as train_job
from patchorder.training.checkpoints import check_trusted_targets, command_line_targets


class CreatesAFile:
    """Unpickling this calls open(path, "w"): what a crafted checkpoint could do with weights_only=False."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def eval_cfg(ckpt, out, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("eval", overrides=[f"ckpt_path={ckpt}", f"paths.output_dir={out}", *overrides])


def train_cfg(root, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"paths.root_dir={root}", f"paths.output_dir={root}/run", *overrides])


def hparams(**changes):
    base = {"model": {"name": "vmamba_micro", "scan_scheme": "cross4", "drop_path_rate": 0.0, "kwargs": {}},
            "ordering": {"name": "row_major"}, "num_classes": 10, "class_names": [str(i) for i in range(10)],
            "data": {"_target_": "patchorder.data.DigitsDataModule", "image_size": 32, "batch_size": 8}}
    return {**base, **changes}


def test_a_checkpoint_whose_pickle_runs_code_is_not_loaded(tmp_path, capsys):
    victim = tmp_path / "created_by_the_pickle"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": hparams(), "payload": CreatesAFile(victim)}, evil)
    with pytest.raises(SystemExit) as stop:
        evaluate_job.main(eval_cfg(evil, tmp_path / "eval"))
    assert stop.value.code == 2 and not victim.exists()
    out = " ".join(capsys.readouterr().out.split())
    assert "holds pickled objects other than tensors" in out and "nothing in it ran" in out
    # The same file given to train.py to resume: refused in the pre-flight, before a Trainer or W&B run exists.
    with pytest.raises(SystemExit) as stop:
        train_job.main(train_cfg(tmp_path, f"ckpt_path={evil}"))
    assert stop.value.code == 2 and not victim.exists()
    assert not (tmp_path / "run" / "wandb").exists() and not (tmp_path / "run" / "csv").exists()


@pytest.mark.parametrize("section", ["data", "ordering"])
def test_a_foreign_target_in_a_checkpoint_is_not_instantiated(tmp_path, section):
    victim = tmp_path / "created_by_instantiate"
    foreign = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}
    if section == "data":
        foreign["image_size"] = 32
    ckpt = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": hparams(**{section: foreign})}, ckpt)
    with pytest.raises(ConfigError, match=f"hyper_parameters.{section}.*'builtins.open'.*it was not called"):
        evaluate_job.evaluate(eval_cfg(ckpt, tmp_path / "eval"))
    assert not victim.exists()


def test_targets_the_user_gave_are_trusted():
    node = {"data": {"_target_": "my_module.MyData"}, "ordering": {"stages": [{"_target_": "orderings.examples.Tiled"}]}}
    check_trusted_targets(node, command_line_targets(["+data._target_=my_module.MyData", "split=val"]))
    with pytest.raises(ConfigError, match="my_module.MyData"):
        check_trusted_targets(node, command_line_targets(["split=val"]))
    with pytest.raises(ConfigError, match=r"hyper_parameters.ordering.stages\[0\]"):
        check_trusted_targets({"ordering": {"stages": [{"_target_": "os.system"}]}}, set())


def test_random_bytes_as_ckpt_path_end_in_a_message_before_any_logger(tmp_path, capsys):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(SystemExit) as stop:
        train_job.main(train_cfg(tmp_path, f"ckpt_path={junk}"))
    out = " ".join(capsys.readouterr().out.split())
    assert stop.value.code == 2 and "is not a readable checkpoint" in out and "Traceback" not in out
    assert "weights_only=False" not in out
    assert not (tmp_path / "run" / "wandb").exists()


def test_resuming_another_models_checkpoint_says_what_differs(tmp_path):
    ckpt = tmp_path / "spiral.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": hparams(ordering={"name": "spiral"})}, ckpt)
    with pytest.raises(ConfigError, match=r"ordering: checkpoint \{'name': 'spiral'\} != config \{'name': 'row_major'\}"):
        train_job.train(train_cfg(tmp_path, f"ckpt_path={ckpt}", "logger=none"))


# --- the explorer: an export is a file from a user too -------------------------------------------------------
SCRIPT = "</script><img src=x onerror=alert(1)>"


def tiny_export(ordering="row_major", class_name="cat"):
    import numpy as np

    from patchorder.attention.export import AttentionExport, BlockAttention

    attn = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
    blocks = [BlockAttention(stage=0, block=b, grid=(2, 2), ordering=ordering, attn=attn,
                             routes=np.tile(np.arange(4), (4, 1))) for b in range(2)]
    return AttentionExport(blocks=blocks, images=np.zeros((2, 8, 8, 3), np.uint8), model="vmamba_micro",
                           ordering=ordering, labels=[0, 1], class_names=[class_name, "dog"],
                           extra={"stage_grids": [[2, 2]]})


def test_names_in_an_export_cannot_close_the_script_or_inject_html(tmp_path):
    from patchorder.attention.export import load, save
    from patchorder.explore import build_report

    path = save(tmp_path / "attention.npz", tiny_export(ordering=SCRIPT, class_name=SCRIPT))
    html = build_report(load(path), tmp_path / "report.html", methods=("pca",)).read_text()
    assert SCRIPT not in html and "<img src=x" not in html
    assert html.count("</script>") == html.count("<script")  # only the page's own script elements end


@pytest.mark.parametrize("field, value", [("stage", "<img src=x onerror=alert(1)>"), ("block", 1.5),
                                          ("grid", ["2", 2]), ("ordering", 3), ("key", "<b>s0b0</b>")])
def test_export_fields_of_the_wrong_type_are_refused_on_load(tmp_path, field, value):
    import json

    import numpy as np

    from patchorder.attention.export import load, save

    path = save(tmp_path / "attention.npz", tiny_export())
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["blocks"][0][field] = value
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=rf"field blocks\[0\]\.{field} has an invalid value"):
        load(path)


def test_class_names_must_be_strings(tmp_path):
    import json

    import numpy as np

    from patchorder.attention.export import load, save

    path = save(tmp_path / "attention.npz", tiny_export())
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["class_names"] = [{"html": SCRIPT}, "dog"]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="field class_names"):
        load(path)
