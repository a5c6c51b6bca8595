"""The study's verdict (experiments/study/verdict.py) on synthetic compiled results: a clear effect, no effect,
one seed, a failed run. Numbers are checked against scipy called here on the raw synthetic values (ttest_rel,
friedmanchisquare, ttest_1samp and their intervals), never against the module's own helpers."""
from __future__ import annotations

import statistics
import sys

import numpy as np
import pytest
from scipy import stats
from train_support import REPO

sys.path.insert(0, str(REPO / "experiments"))

from study import verdict  # noqa: E402
from study.settings import VERDICT_DEFAULTS  # noqa: E402

ORDERINGS = ["row_major", "diagonal", "spiral"]
SEEDS = [0, 1, 2]
SETTINGS = dict(VERDICT_DEFAULTS)
NOISE = {(o, s): float(v) for (o, s), v in zip([(o, s) for o in ORDERINGS for s in SEEDS],
                                                np.random.default_rng(3).normal(0, 0.004, 9))}


def synthetic(acc, ablated, cross_cost, distance, coherence, similarity, orderings=ORDERINGS, seeds=SEEDS,
              failed=()):
    """A compiled group (the parts of study.json the verdict reads). ``acc(o, s)``: test top-1; ``ablated(o, s)``:
    top-1 with scans ablated; ``cross_cost``: top-1 lost under another test ordering; ``distance(o, s, block)``:
    relative distance of a stage-1 block; ``coherence(o, s)``; ``similarity``: (across orderings, across seeds)."""
    runs, cross, ablation, blocks, usage = [], [], [], [], []
    for o in orderings:
        for s in seeds:
            ok = (o, s) not in failed
            runs.append({"ordering": o, "seed": s, "status": "completed" if ok else "failed",
                         "test_acc1": acc(o, s) if ok else 0.01})  # a run may fail after its test
            if not ok:
                continue
            for t in orderings:
                cross.append({"train_ordering": o, "seed": s, "test_ordering": t, "status": "completed",
                              "acc1": acc(o, s) - (0 if t == o else cross_cost)})
            ablation.append({"train_ordering": o, "seed": s, "test_ordering": o, "status": "completed",
                             "acc1": ablated(o, s)})
            blocks.append({"train_ordering": o, "seed": s, "stage": 0, "block": 0, "distance": 2.0 + acc(o, s),
                           "neighbour_mass_r1": 0.4, "coherence": coherence(o, s), "distance_relative": 0.5,
                           "similarity_previous": None})
            for b in range(4):
                blocks.append({"train_ordering": o, "seed": s, "stage": 1, "block": b, "distance": 1.0,
                               "neighbour_mass_r1": 0.5, "coherence": coherence(o, s),
                               "distance_relative": distance(o, s, b), "similarity_previous": None if b == 0
                               else 0.8 + 0.01 * b})
            usage.append({"train_ordering": o, "seed": s, "scan_share_mean": 0.3, "swap_change_mean": 0.1,
                          "logit_change": 0.2, "prediction_agreement": 0.7})
    pairs = []
    done = [(o, s) for o in orderings for s in seeds if (o, s) not in failed]
    for i, (o, s) in enumerate(done):
        for p, t in done[i + 1:]:
            if (o == p) != (s == t):  # across orderings (same seed) or across seeds (same ordering)
                value = similarity[0] if s == t else similarity[1]
                pairs.append({"ordering_a": o, "seed_a": s, "ordering_b": p, "seed_b": t, "key": "s1b0", "stage": 1,
                              "block": 0, "cosine": value + NOISE[(o, s)] + NOISE[(p, t)]})
    return {"runs": runs, "cross_cells": cross, "ablation_cells": ablation,
            "attention": {"blocks": blocks, "scan_usage": usage, "ordering_similarity": {"blocks": pairs}}}


BASE = {"row_major": 0.90, "diagonal": 0.84, "spiral": 0.75}


def clear_effect(**kwargs):
    return synthetic(acc=lambda o, s: BASE[o] + NOISE[(o, s)], ablated=lambda o, s: 0.3 + NOISE[(o, s)],
                     cross_cost=0.2, distance=lambda o, s, b: 0.3 + 0.1 * b + NOISE[(o, s)],
                     coherence=lambda o, s: 0.3 + NOISE[(o, s)], similarity=(0.5, 0.9), **kwargs)


def no_effect(**kwargs):
    return synthetic(acc=lambda o, s: 0.95 + NOISE[(o, s)], ablated=lambda o, s: 0.949 + NOISE[(o, s)],
                     cross_cost=0.0, distance=lambda o, s, b: 0.4 + NOISE[(o, s)] * (b - 1.5),
                     coherence=lambda o, s: NOISE[(o, s)], similarity=(0.9, 0.9), **kwargs)


def matrix(fn, orderings=ORDERINGS, seeds=SEEDS):
    return [[fn(o, s) for s in seeds] for o in orderings]


def anova_oracle(columns) -> float:
    """Repeated-measures ANOVA as a linear-model comparison: least squares with seed dummies, with and without
    treatment dummies; F from the two residual sums of squares."""
    data = np.asarray(columns, dtype=float)  # (treatments, seeds)
    k, n = data.shape
    y = data.ravel()
    seed = np.tile(np.eye(n), (k, 1))
    treatment = np.repeat(np.eye(k)[:, 1:], n, axis=0)
    rss = [float(np.sum((y - x @ np.linalg.lstsq(x, y, rcond=None)[0]) ** 2)) for x in
           (seed, np.hstack([seed, treatment]))]
    df_full = k * n - n - (k - 1)
    return float(stats.f.sf(((rss[0] - rss[1]) / (k - 1)) / (rss[1] / df_full), k - 1, df_full))


def test_clear_effect():
    result = verdict.judge(clear_effect(), ORDERINGS, SEEDS, SETTINGS)
    q = result["questions"]
    acc = matrix(lambda o, s: BASE[o] + NOISE[(o, s)])
    assert q["accuracy"]["answer"] == "yes"
    assert q["accuracy"]["omnibus"]["test"] == "rm_anova"
    assert q["accuracy"]["omnibus"]["p"] == pytest.approx(anova_oracle(acc))
    assert q["accuracy"]["friedman"]["p"] == pytest.approx(stats.friedmanchisquare(*acc).pvalue)
    effect = q["accuracy"]["effect"]  # spiral is furthest from row_major
    oracle = stats.ttest_rel(acc[2], acc[0])
    interval = oracle.confidence_interval(0.95)
    assert (effect["a"], effect["b"]) == ("row_major", "spiral")
    assert effect["mean"] == pytest.approx(statistics.fmean(np.subtract(acc[2], acc[0])))
    assert (effect["low"], effect["high"]) == pytest.approx((interval.low, interval.high))
    assert effect["p"] == pytest.approx(oracle.pvalue)
    assert effect["p_adjusted"] == pytest.approx(min(1, 2 * oracle.pvalue))  # two comparisons with row_major

    scan = q["scan"]
    own = np.mean(acc, axis=0)  # per seed, mean over orderings
    ablated = np.mean(matrix(lambda o, s: 0.3 + NOISE[(o, s)]), axis=0)
    oracle = stats.ttest_rel(own, ablated)
    assert scan["answer"] == "yes" and scan["too_small"] is False and result["headline"] is None
    assert scan["ablation_drop"]["mean"] == pytest.approx(float(np.mean(own - ablated)))
    assert scan["ablation_drop"]["p"] == pytest.approx(oracle.pvalue)
    assert (scan["ablation_drop"]["low"], scan["ablation_drop"]["high"]) == \
        pytest.approx(tuple(oracle.confidence_interval(0.95)))
    assert scan["cross_drop"]["mean"] == pytest.approx(0.2)
    assert scan["usage"]["scan_share_mean"]["mean"] == pytest.approx(0.3)

    assert q["attention"]["answer"] == "yes"  # distance at stage 0 follows the accuracy
    similarity = q["attention"]["similarity"]
    assert similarity["answer"] == "yes" and similarity["difference"]["mean"] == pytest.approx(0.4, abs=0.02)

    (stage,) = q["blocks"]["stages"]
    by_block = [[statistics.fmean(0.3 + 0.1 * b + NOISE[(o, s)] for o in ORDERINGS) for s in SEEDS]
                for b in range(4)]
    assert q["blocks"]["answer"] == "yes" and stage["stage"] == 1 and stage["blocks"] == 4
    assert stage["omnibus"]["p"] == pytest.approx(anova_oracle(by_block))
    assert stage["effect"]["mean"] == pytest.approx(0.3)  # block 3 vs block 0
    assert stage["consecutive_cosine"]["mean"] == pytest.approx(0.82)

    coherence = [statistics.fmean(0.3 + NOISE[(o, s)] for o in ORDERINGS) for s in SEEDS]
    assert q["sequence"]["answer"] == "yes"
    assert q["sequence"]["coherence"]["p"] == pytest.approx(stats.ttest_1samp(coherence, 0).pvalue)

    text = "\n".join(verdict.markdown({"long_range": result}))
    assert "barely use their scans" not in text and "One seed" not in text
    assert "**Does the ordering change accuracy?** Yes: largest mean difference from row_major: spiral " \
           f"{100 * effect['mean']:+.1f} pts (95% CI {100 * effect['low']:+.1f} pts to" in text
    assert f"repeated-measures ANOVA over 3 seeds p={q['accuracy']['omnibus']['p']:.3g}" in text
    # Adjusted p-values read the same in every sentence: the 2 comparisons against row_major.
    # effect's p and p_adjusted were checked against ttest_rel above.
    assert f"over 3 seeds p={effect['p']:.3g}, Bonferroni over 2 tests p={effect['p_adjusted']:.3g}]; across" in text


def test_no_effect_says_scan_use_is_too_small_at_the_top():
    result = verdict.judge(no_effect(), ORDERINGS, SEEDS, SETTINGS)
    q = result["questions"]
    acc = matrix(lambda o, s: 0.95 + NOISE[(o, s)])
    assert q["accuracy"]["omnibus"]["p"] == pytest.approx(anova_oracle(acc))
    assert q["accuracy"]["omnibus"]["p"] > SETTINGS["alpha"] and q["accuracy"]["answer"] == "no"
    assert q["scan"]["ablation_drop"]["mean"] == pytest.approx(0.001)
    assert q["scan"]["cross_drop"]["mean"] == 0 and q["scan"]["cross_drop"]["p"] == 1.0  # no difference anywhere
    assert q["scan"]["answer"] == "no" and result["scan_usage_too_small"] is True
    assert q["attention"]["similarity"]["answer"] == "no"
    assert q["sequence"]["answer"] == "no"
    lines = verdict.markdown({"digits": result})
    warning = next(i for i, line in enumerate(lines) if "barely use their scans" in line)
    first_answer = next(i for i, line in enumerate(lines) if line.startswith("- **"))
    assert warning < first_answer  # the warning comes before any answer
    assert ("(ablating every scan costs 0.1 pts (threshold 2); testing with the other orderings costs 0.0 pts "
            "(threshold 1))") in lines[warning]


def test_scan_use_threshold_needs_both_drops_small():
    # the scans are used (ablation costs 60 points) but the other orderings cost nothing: not "too small"
    group = synthetic(acc=lambda o, s: 0.9 + NOISE[(o, s)], ablated=lambda o, s: 0.3, cross_cost=0.0,
                      distance=lambda o, s, b: 0.4, coherence=lambda o, s: 0.1, similarity=(0.9, 0.9))
    result = verdict.judge(group, ORDERINGS, SEEDS, SETTINGS)
    assert result["scan_usage_too_small"] is False and result["headline"] is None
    assert result["questions"]["scan"]["answer"] == "yes"


def test_one_seed_gives_no_interval_and_no_test():
    result = verdict.judge(clear_effect(seeds=[0]), ORDERINGS, [0], SETTINGS)
    q = result["questions"]
    assert result["one_seed"] is True
    for answer in (q["accuracy"], q["scan"], q["attention"], q["blocks"], q["sequence"], q["attention"]["similarity"]):
        assert answer["answer"] == "cannot tell"
    effect = q["accuracy"]["effect"]
    assert effect["mean"] == pytest.approx(BASE["spiral"] + NOISE[("spiral", 0)] - BASE["row_major"]
                                           - NOISE[("row_major", 0)])
    assert effect["low"] is None and effect["p"] is None and q["accuracy"]["omnibus"] is None
    assert q["scan"]["ablation_drop"]["low"] is None and q["scan"]["too_small"] is False  # point estimates judge
    text = "\n".join(verdict.markdown({"long_range": result}))
    assert "One seed: no confidence interval and no test can be given" in text
    assert "CI" not in text and "±" not in text and "p=" not in text


def test_one_seed_still_warns_when_the_scans_are_not_used():
    result = verdict.judge(no_effect(seeds=[0]), ORDERINGS, [0], SETTINGS)
    assert result["scan_usage_too_small"] is True and "barely use their scans" in result["headline"]


def test_a_failed_run_is_left_out_and_listed():
    failed = {("spiral", 1)}
    result = verdict.judge(clear_effect(failed=failed), ORDERINGS, SEEDS, SETTINGS)
    q = result["questions"]
    assert result["missing_runs"] == ["spiral seed 1 (failed)"] and result["complete_seeds"] == [0, 2]
    acc = [[BASE[o] + NOISE[(o, s)] for s in (0, 2)] for o in ORDERINGS]  # ANOVA: the complete seeds only
    assert q["accuracy"]["omnibus"]["seeds"] == [0, 2]
    assert q["accuracy"]["omnibus"]["p"] == pytest.approx(anova_oracle(acc))
    spiral = next(c for c in q["accuracy"]["comparisons"] if c["b"] == "spiral")
    assert spiral["seeds"] == [0, 2] and spiral["p"] == pytest.approx(stats.ttest_rel(acc[2], acc[0]).pvalue)
    diagonal = next(c for c in q["accuracy"]["comparisons"] if c["b"] == "diagonal")
    assert diagonal["seeds"] == SEEDS  # its own pairs are all there
    # the scan drop of seed 1 averages the two orderings that completed
    own = {s: statistics.fmean(BASE[o] + NOISE[(o, s)] for o in ORDERINGS if (o, s) not in failed) for s in SEEDS}
    ablated = {s: statistics.fmean(0.3 + NOISE[(o, s)] for o in ORDERINGS if (o, s) not in failed) for s in SEEDS}
    assert q["scan"]["ablation_drop"]["mean"] == pytest.approx(statistics.fmean(own[s] - ablated[s] for s in SEEDS))
    text = "\n".join(verdict.markdown({"long_range": result}))
    assert "Not completed (left out of the numbers): spiral seed 1 (failed)." in text


def test_every_run_failed():
    result = verdict.judge(clear_effect(failed={(o, s) for o in ORDERINGS for s in SEEDS}), ORDERINGS, SEEDS,
                           SETTINGS)
    assert all(q.get("answer") == "cannot tell" for q in result["questions"].values())
    assert result["scan_usage_too_small"] is None and result["headline"] is None
    assert "not measured" in "\n".join(verdict.markdown({"long_range": result}))


def test_two_orderings_use_the_paired_t_test():
    two = ORDERINGS[:2]
    result = verdict.judge(clear_effect(orderings=two), two, SEEDS, SETTINGS)
    omnibus = result["questions"]["accuracy"]["omnibus"]
    oracle = stats.ttest_rel([BASE["diagonal"] + NOISE[("diagonal", s)] for s in SEEDS],
                             [BASE["row_major"] + NOISE[("row_major", s)] for s in SEEDS])
    assert omnibus["test"] == "rm_anova" and omnibus["p"] == pytest.approx(oracle.pvalue)  # F = t^2
    assert "friedman" not in result["questions"]["accuracy"]  # Friedman needs three orderings


def test_across_seed_similarity_is_one_value_per_seed_pair():
    """With two seeds there is one seed pair, so the across-seeds level has no interval (each seed's average
    would be that one pair's value twice: a zero-width interval); with three seeds, one value per pair."""
    two = SEEDS[:2]
    result = verdict.judge(clear_effect(seeds=two), ORDERINGS, two, SETTINGS)
    across = result["questions"]["attention"]["similarity"]["across_seeds"]
    one_pair = statistics.fmean(0.9 + NOISE[(o, 0)] + NOISE[(o, 1)] for o in ORDERINGS)
    assert across["n"] == 1 and across["low"] is None and across["mean"] == pytest.approx(one_pair)
    three = verdict.judge(clear_effect(), ORDERINGS, SEEDS, SETTINGS)["questions"]["attention"]["similarity"]
    per_pair = [statistics.fmean(0.9 + NOISE[(o, a)] + NOISE[(o, b)] for o in ORDERINGS)
                for a, b in [(0, 1), (0, 2), (1, 2)]]
    oracle = stats.t.interval(0.95, 2, loc=statistics.fmean(per_pair), scale=stats.sem(per_pair))
    assert three["across_seeds"]["n"] == 3
    assert (three["across_seeds"]["low"], three["across_seeds"]["high"]) == pytest.approx(oracle)
