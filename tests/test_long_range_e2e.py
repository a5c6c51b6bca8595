"""experiment=long_range, shortened, run for real: the trained model depends on its scan (ablating it costs
accuracy) and on its ordering (testing with a random one costs accuracy), as eval.py and the attention export
report it. A regression that silences the scan (or makes the ordering irrelevant) fails here."""
from __future__ import annotations

import pytest
from train_support import read_json, run_dirs, run_script

pytestmark = [pytest.mark.slow, pytest.mark.long]

SHORT = [
    "experiment=long_range",
    "cpu_threads=1",
    "data.val_per_class=100",
    "data.test_per_class=100",
    "trainer.max_epochs=8",
    "callbacks.embedding=null",
    "callbacks.attention.every_n_epochs=0",
    "callbacks.attention.report=false",
    "callbacks.attention.embeddings=false",
    "callbacks.attention.num_images=4",
    "logger=csv",
]
CHANCE = 0.25  # four alignment classes


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("long_range")
    proc = run_script("train.py", SHORT, root, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = run_dirs(root)
    return root, run_dir, read_json(run_dir / "results.json")


def evaluate(root, run_dir, *overrides):
    before = set(run_dirs(root))
    proc = run_script("eval.py", [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "cpu_threads=1",
                                  *overrides], root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (eval_dir,) = set(run_dirs(root)) - before
    return read_json(eval_dir / "results.json")


def test_the_scan_and_the_ordering_carry_the_task(trained):
    root, run_dir, results = trained
    assert results["status"] == "completed" and results["model"] == "vmamba_long_range"
    test_acc = results["test"]["test/acc1"]
    assert test_acc > CHANCE + 0.35, results["test"]

    plain = evaluate(root, run_dir)
    assert plain["ablation"] is None and plain["metrics"]["acc1"] == pytest.approx(test_acc, abs=0.02)
    ablated = evaluate(root, run_dir, "ablation=scan")
    assert ablated["ablation"] == "scan"
    assert ablated["metrics"]["acc1"] < test_acc - 0.25, (test_acc, ablated["metrics"])
    shuffled = evaluate(root, run_dir, "ordering=random")
    assert shuffled["ordering"] == "random"
    assert shuffled["metrics"]["acc1"] < test_acc - 0.05, (test_acc, shuffled["metrics"])


def test_the_attention_export_measures_scan_usage(trained):
    _, run_dir, results = trained
    document = read_json(run_dir / "attention" / "attention_final_metrics.json")
    usage = document["scan_usage"]
    assert results["scan_usage"] == usage  # results.json carries the final measurement
    assert usage["swap"].startswith("random")
    assert len(usage["blocks"]) == 6 and usage["scan_share_mean"] > 0.05, usage
    assert usage["swap_change_mean"] > 0.01 and usage["prediction_agreement"] < 1.0, usage
    by_key = {row["key"]: row for row in document["blocks"]}
    for block in usage["blocks"]:
        row = by_key[f"s{block['stage']}b{block['block']}"]
        assert row["scan_share"] == block["scan_share"] and row["swap_change"] == block["swap_change"]
