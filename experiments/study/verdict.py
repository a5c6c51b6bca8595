"""The study's verdict: the answers study.md opens with, each with an effect size, a confidence interval over seeds
and a paired test across seeds (scipy.stats). Pure functions of one compiled data config of study.json (its
``runs``, ``cross_cells``, ``ablation_cells`` and ``attention`` entries), so they can be checked on synthetic results.

The seed is the replicate: runs of one seed share initial weights and batches whatever their ordering, so
orderings are compared paired by seed, and questions about the model in general (blocks, sequence coherence, scan
use) average each seed's runs over the orderings first, then take the interval and test over seeds. Tests:

- several orderings (or blocks) at once: the one-way repeated-measures ANOVA over the seeds complete for all of
  them (F from the sums of squares, p from scipy.stats.f; with two orderings it is the paired t-test), since
  Friedman's rank test cannot go below p = 0.05 with 3 seeds and 3 orderings (it is reported beside it for >= 3);
  each ordering against the first by ttest_rel, Bonferroni-corrected over the comparisons;
- a drop (accuracy with the own ordering vs with the scans ablated / with other orderings at test time): ttest_rel
  over seeds; a sign (sequence coherence > 0): ttest_1samp over seeds.

With one seed no interval and no test exist: the verdict says so and gives the point estimates only. The scan-use
question comes first: when the scan ablation and the cross table both cost less than report.verdict's thresholds,
the ordering has nothing to act on and the verdict says that at the top, instead of presenting ties as findings.
"""
from __future__ import annotations

import math
import statistics
import warnings
from collections import defaultdict
from typing import Any, Callable, Iterable

import numpy as np
from scipy import stats

from patchorder.attention.scan_usage import MODEL_COLUMNS as SCAN_USAGE  # per run: scan_share_mean, logit_change, ...

ATTENTION_METRICS = ("distance", "neighbour_mass_r1", "coherence")  # the metrics whose ordering effect is tested
BLOCK_METRIC = "distance_relative"  # compared between the blocks of a stage (scale-free across stages)
YES, NO, UNKNOWN = "yes", "no", "cannot tell"

Values = dict[tuple[Any, int], float]  # (treatment: ordering or block, seed) -> value


# --- statistics --------------------------------------------------------------------------------------------
def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _quiet(test: Callable, *args, **kwargs):
    """A scipy test without its warnings about nearly identical data (the cases below handle those)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return test(*args, **kwargs)


def interval(values: Iterable[float], confidence: float) -> dict[str, Any]:
    """Mean, sample std and the t confidence interval of the mean (None for fewer than 2 values)."""
    present = [float(v) for v in values if _finite(v)]
    n = len(present)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "low": None, "high": None}
    mean = statistics.fmean(present)
    if n < 2:
        return {"n": 1, "mean": mean, "std": None, "low": None, "high": None}
    std = statistics.stdev(present)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "low": mean - half, "high": mean + half}


def _p_value(result, differences: list[float]) -> tuple[float | None, str | None]:
    """A t-test's p-value; when the differences do not vary, 1 if they are all zero (no difference in any seed)."""
    if all(d == differences[0] for d in differences):
        if differences[0] == 0:
            return 1.0, "no difference in any seed"
        return float(result.pvalue), "the same non-zero difference in every seed (zero variance)"
    return float(result.pvalue), None


def paired(a: dict[int, float], b: dict[int, float], confidence: float) -> dict[str, Any]:
    """``b - a`` paired by seed (seeds with both values): mean difference, its interval, and ttest_rel."""
    seeds = sorted(s for s in a if s in b and _finite(a[s]) and _finite(b[s]))
    differences = [b[s] - a[s] for s in seeds]
    out = {"test": "ttest_rel", "seeds": seeds, **interval(differences, confidence), "p": None, "note": None}
    if len(seeds) < 2:
        out["note"] = "one seed: no interval or test" if seeds else "no seed with both values"
        return out
    result = _quiet(stats.ttest_rel, [b[s] for s in seeds], [a[s] for s in seeds])
    out["p"], out["note"] = _p_value(result, differences)
    return out


def one_sample(values: dict[int, float], confidence: float, popmean: float = 0.0) -> dict[str, Any]:
    """Mean over seeds against ``popmean``: interval and ttest_1samp."""
    seeds = sorted(s for s, v in values.items() if _finite(v))
    present = [values[s] for s in seeds]
    out = {"test": "ttest_1samp", "seeds": seeds, **interval(present, confidence), "p": None, "note": None}
    if len(seeds) < 2:
        out["note"] = "one seed: no interval or test" if seeds else "no value"
        return out
    result = _quiet(stats.ttest_1samp, present, popmean)
    out["p"], out["note"] = _p_value(result, [v - popmean for v in present])
    return out


def repeated_measures_anova(columns: list[list[float]]) -> float:
    """p-value of the one-way repeated-measures ANOVA: ``columns[t][i]`` is treatment t on seed i (seeds as
    subjects). F = MS_treatments / MS_residual with (k - 1, (k - 1)(n - 1)) degrees of freedom; for two treatments
    it is the paired t-test (F = t^2). Parametric, so unlike Friedman's ranks it can reach small p-values with
    three seeds (Friedman's smallest with 3 seeds and 3 orderings is 0.05)."""
    data = np.asarray(columns, dtype=float).T  # (seeds, treatments)
    n, k = data.shape
    grand = data.mean()
    ss_treatments = n * ((data.mean(axis=0) - grand) ** 2).sum()
    ss_seeds = k * ((data.mean(axis=1) - grand) ** 2).sum()
    ss_residual = ((data - grand) ** 2).sum() - ss_treatments - ss_seeds
    df_treatments, df_residual = k - 1, (k - 1) * (n - 1)
    if ss_residual <= 1e-12 * max(ss_treatments, 1e-300):  # no noise: F infinite (or undefined when no effect)
        return 0.0 if ss_treatments > 0 else 1.0
    return float(stats.f.sf((ss_treatments / df_treatments) / (ss_residual / df_residual), df_treatments,
                            df_residual))


def treatment_effect(values: Values, treatments: list, seeds: list[int], confidence: float) -> dict[str, Any]:
    """Do the treatments (orderings, or the blocks of a stage) differ? Per treatment the interval over seeds; each
    against the first by ttest_rel (Bonferroni over the comparisons); the omnibus test over the seeds complete
    for all of them: the repeated-measures ANOVA (and Friedman beside it for >= 3 treatments). The effect size is
    the largest mean paired difference from the first treatment (by absolute value), with its interval."""
    by_treatment = {t: {s: values[(t, s)] for s in seeds if _finite(values.get((t, s)))} for t in treatments}
    present = [t for t in treatments if by_treatment[t]]
    means = {str(t): interval(by_treatment[t].values(), confidence) for t in treatments}
    out: dict[str, Any] = {"treatments": [str(t) for t in treatments], "means": means, "comparisons": [],
                           "effect": None, "omnibus": None}
    if len(present) < 2:
        out["note"] = "fewer than two with values"
        return out
    reference, others = present[0], present[1:]
    for other in others:
        comparison = {"a": str(reference), "b": str(other),
                      **paired(by_treatment[reference], by_treatment[other], confidence)}
        comparison["p_adjusted"] = None if comparison["p"] is None else min(1.0, comparison["p"] * len(others))
        out["comparisons"].append(comparison)
    with_mean = [c for c in out["comparisons"] if c["mean"] is not None]
    out["effect"] = max(with_mean, key=lambda c: abs(c["mean"])) if with_mean else None
    complete = [s for s in seeds if all(s in by_treatment[t] for t in present)]
    if len(complete) >= 2:
        columns = [[by_treatment[t][s] for s in complete] for t in present]
        tied = all(len(set(row)) == 1 for row in zip(*columns))  # every seed ties all treatments
        out["omnibus"] = {"test": "rm_anova", "seeds": complete, "k": len(present),
                          "p": 1.0 if tied else repeated_measures_anova(columns),
                          "note": "all tied in every seed" if tied else None}
        if len(present) >= 3:  # the rank-based check, reported beside it
            out["friedman"] = {"test": "friedmanchisquare", "seeds": complete, "k": len(present),
                               "p": 1.0 if tied else float(_quiet(stats.friedmanchisquare, *columns).pvalue)}
    return out


def _significant(p: float | None, alpha: float) -> bool | None:
    return None if p is None else p < alpha


# --- what the compiled group holds ---------------------------------------------------------------------------
def run_accuracy(group: dict[str, Any]) -> Values:
    """(ordering, seed) -> test top-1 of each completed training run."""
    return {(r["ordering"], r["seed"]): r["test_acc1"] for r in group.get("runs") or []
            if r.get("status") == "completed" and _finite(r.get("test_acc1"))}


def cross_accuracy(group: dict[str, Any]) -> dict[tuple[str, int, str], float]:
    """(train ordering, seed, test ordering) -> eval top-1 of each completed cross-table cell."""
    return {(c["train_ordering"], c["seed"], c["test_ordering"]): c["acc1"] for c in group.get("cross_cells") or []
            if c.get("status") == "completed" and c.get("train_ordering") and _finite(c.get("acc1"))}


def ablated_accuracy(group: dict[str, Any]) -> Values:
    """(ordering, seed) -> top-1 with every scan ablated, on the trained ordering."""
    return {(c["train_ordering"], c["seed"]): c["acc1"] for c in group.get("ablation_cells") or []
            if c.get("status") == "completed" and c.get("train_ordering") and _finite(c.get("acc1"))}


def _per_run_mean(rows: Iterable[dict[str, Any]], column: str, keep: Callable[[dict], bool] = lambda r: True) -> Values:
    """(ordering, seed) -> mean of ``column`` over a run's block rows that ``keep`` selects."""
    collected: dict[tuple[str, int], list[float]] = defaultdict(list)
    for row in rows:
        if keep(row) and _finite(row.get(column)):
            collected[(row["train_ordering"], row["seed"])].append(row[column])
    return {key: statistics.fmean(values) for key, values in collected.items()}


def seed_means(values: Values) -> dict[int, float]:
    """seed -> mean over the orderings (or blocks) of that seed's values."""
    collected: dict[int, list[float]] = defaultdict(list)
    for (_, seed), value in values.items():
        if _finite(value):
            collected[seed].append(value)
    return {seed: statistics.fmean(v) for seed, v in collected.items()}


# --- the questions -----------------------------------------------------------------------------------------
def scan_use(group: dict[str, Any], orderings: list[str], seeds: list[int], settings: dict) -> dict[str, Any]:
    """Does the model use its scans at all? Scan-ablation drop, cross-table off-diagonal drop, scan share."""
    confidence = settings["confidence"]
    own = run_accuracy(group)
    cross = cross_accuracy(group)
    # The ablation evaluates the cross table's checkpoint: compare it with the diagonal cell when there is one.
    reference = {(o, s): cross.get((o, s, o), own.get((o, s))) for o in orderings for s in seeds}
    ablated = ablated_accuracy(group)
    off_diagonal = {}
    for o in orderings:
        for s in seeds:
            others = [cross[(o, s, t)] for t in orderings if t != o and (o, s, t) in cross]
            if others and (o, s, o) in cross:
                off_diagonal[(o, s)] = statistics.fmean(others)
    with_ablation = {k: v for k, v in reference.items() if k in ablated and _finite(v)}
    # own - ablated, and diagonal - mean off-diagonal: paired(a, b) is b - a
    ablation_drop = paired(seed_means({k: ablated[k] for k in with_ablation}), seed_means(with_ablation), confidence)
    diagonal = {k: cross[(k[0], k[1], k[0])] for k in off_diagonal}
    cross_drop = paired(seed_means(off_diagonal), seed_means(diagonal), confidence)
    usage_rows = group.get("attention", {}).get("scan_usage") or []
    usage = {key: _per_run_mean(usage_rows, key) for key in SCAN_USAGE}
    descriptive = {key: interval(seed_means(values).values(), confidence) for key, values in usage.items()}
    per_ordering = {o: {"ablation_drop": interval([with_ablation[(o, s)] - ablated[(o, s)] for s in seeds
                                                   if (o, s) in with_ablation], confidence),
                        "cross_drop": interval([diagonal[(o, s)] - off_diagonal[(o, s)] for s in seeds
                                                if (o, s) in off_diagonal], confidence)} for o in orderings}

    measured = {"scan ablation": (ablation_drop["mean"], settings["min_scan_drop"]),
                "cross table": (cross_drop["mean"], settings["min_cross_drop"])}
    known = {name: (value, limit) for name, (value, limit) in measured.items() if value is not None}
    too_small = all(value < limit for value, limit in known.values()) if known else None
    significant = _significant(ablation_drop["p"], settings["alpha"])
    if ablation_drop["mean"] is None:
        answer = UNKNOWN
    elif ablation_drop["mean"] < settings["min_scan_drop"]:
        answer = NO
    elif significant is None:
        answer = UNKNOWN
    else:
        answer = YES if significant else NO
    return {"question": "Does the model use the scan at all?", "answer": answer, "too_small": too_small,
            "judged_on": list(known), "ablation_drop": ablation_drop, "cross_drop": cross_drop,
            "usage": descriptive, "per_ordering": per_ordering}


def accuracy(group: dict[str, Any], orderings: list[str], seeds: list[int], settings: dict) -> dict[str, Any]:
    """Does the ordering change test top-1?"""
    effect = treatment_effect(run_accuracy(group), orderings, seeds, settings["confidence"])
    return {"question": "Does the ordering change accuracy?", **_answer(effect, settings["alpha"]), **effect}


def _answer(effect: dict[str, Any], alpha: float, tests: int = 1) -> dict[str, Any]:
    omnibus = effect.get("omnibus")
    if omnibus is None or omnibus["p"] is None:
        return {"answer": UNKNOWN, "p_adjusted": None}
    p_adjusted = min(1.0, omnibus["p"] * tests)
    return {"answer": YES if p_adjusted < alpha else NO, "p_adjusted": p_adjusted}


def attention(group: dict[str, Any], orderings: list[str], seeds: list[int], settings: dict) -> dict[str, Any]:
    """Does the ordering shape attention? Each metric of each stage (a run's mean over the stage's blocks) by
    ordering, Bonferroni over the metric x stage tests; and same-block similarity across orderings vs seeds."""
    rows = group.get("attention", {}).get("blocks") or []
    stages = sorted({r["stage"] for r in rows})
    tests = []
    for metric in ATTENTION_METRICS:
        for stage in stages:
            values = _per_run_mean(rows, metric, lambda r, stage=stage: r["stage"] == stage)
            effect = treatment_effect(values, orderings, seeds, settings["confidence"])
            if effect["effect"] is not None:
                tests.append({"metric": metric, "stage": stage, **effect})
    for test in tests:
        test.update(_answer(test, settings["alpha"], len(tests)))
    decided = [t for t in tests if t["answer"] != UNKNOWN]
    answer = UNKNOWN if not decided else YES if any(t["answer"] == YES for t in decided) else NO
    if decided:
        strongest = min(decided, key=lambda t: t["p_adjusted"])
    else:
        strongest = max(tests, key=lambda t: abs(t["effect"]["mean"]), default=None)
    return {"question": "Does the ordering shape attention (distance, neighbour mass, coherence)?",
            "answer": answer, "tests": tests, "strongest": strongest,
            "similarity": similarity(group, orderings, seeds, settings)}


def similarity(group: dict[str, Any], orderings: list[str], seeds: list[int], settings: dict) -> dict[str, Any]:
    """Same block, same probe images: is the attention of two orderings (same seed) less alike than that of one
    ordering trained with two seeds? Per seed: mean cosine over its across-ordering pairs, and over the
    across-seed pairs it takes part in; effect = across seeds - across orderings, ttest_rel over seeds."""
    pairs = (group.get("attention", {}).get("ordering_similarity") or {}).get("blocks") or []
    across_orderings: dict[int, list[float]] = defaultdict(list)
    across_seeds: dict[int, list[float]] = defaultdict(list)
    seed_pairs: dict[tuple[int, int], list[float]] = defaultdict(list)
    for pair in pairs:
        if not _finite(pair.get("cosine")):
            continue
        if pair["seed_a"] == pair["seed_b"] and pair["ordering_a"] != pair["ordering_b"]:
            across_orderings[pair["seed_a"]].append(pair["cosine"])
        elif pair["ordering_a"] == pair["ordering_b"] and pair["seed_a"] != pair["seed_b"]:
            across_seeds[pair["seed_a"]].append(pair["cosine"])
            across_seeds[pair["seed_b"]].append(pair["cosine"])
            seed_pairs[tuple(sorted((pair["seed_a"], pair["seed_b"])))].append(pair["cosine"])
    a = {s: statistics.fmean(v) for s, v in across_orderings.items()}
    b = {s: statistics.fmean(v) for s, v in across_seeds.items()}
    test = paired(a, b, settings["confidence"])  # b - a: how much less alike orderings are than seeds
    significant = _significant(test["p"], settings["alpha"])
    answer = UNKNOWN if significant is None else YES if significant and test["mean"] > 0 else NO
    return {"question": "Is the same block less alike across orderings than across seeds?", "answer": answer,
            "across_orderings": interval(a.values(), settings["confidence"]),
            # over distinct seed pairs: with 2 seeds every seed's value is the one pair's (no interval)
            "across_seeds": interval([statistics.fmean(v) for v in seed_pairs.values()], settings["confidence"]),
            "difference": test}


def blocks(group: dict[str, Any], orderings: list[str], seeds: list[int], settings: dict) -> dict[str, Any]:
    """Do blocks within a stage differ? Per stage with >= 2 blocks: relative attention distance by block (each
    seed's mean over orderings; repeated-measures ANOVA across blocks, Bonferroni over stages), and the cosine
    similarity of consecutive blocks' mean attention (similarity_previous) as a description."""
    rows = group.get("attention", {}).get("blocks") or []
    stages = sorted({r["stage"] for r in rows})
    per_stage = []
    for stage in stages:
        members = sorted({r["block"] for r in rows if r["stage"] == stage})
        if len(members) < 2:
            continue
        values: Values = {}
        for block in members:
            by_run = _per_run_mean(rows, BLOCK_METRIC, lambda r, b=block: r["stage"] == stage and r["block"] == b)
            for seed, value in seed_means(by_run).items():
                values[(block, seed)] = value
        effect = treatment_effect(values, members, seeds, settings["confidence"])
        consecutive = seed_means(_per_run_mean(rows, "similarity_previous", lambda r: r["stage"] == stage))
        per_stage.append({"stage": stage, "blocks": len(members), **effect,
                          "consecutive_cosine": interval(consecutive.values(), settings["confidence"])})
    for entry in per_stage:
        entry.update(_answer(entry, settings["alpha"], len(per_stage)))
    decided = [e for e in per_stage if e["answer"] != UNKNOWN]
    answer = UNKNOWN if not decided else YES if any(e["answer"] == YES for e in decided) else NO
    return {"question": "Do blocks within a stage differ?", "answer": answer, "metric": BLOCK_METRIC,
            "stages": per_stage, "note": None if per_stage else "no stage with two or more exported blocks"}


def sequence(group: dict[str, Any], orderings: list[str], seeds: list[int], settings: dict) -> dict[str, Any]:
    """Do near-in-sequence patches attend alike? Sequence coherence (Spearman of scan distance and attention-row
    dissimilarity; > 0: closer in the scan, more alike) of each run's blocks; each seed's mean over orderings
    against 0 (ttest_1samp over seeds); per ordering as a description."""
    runs = _per_run_mean(group.get("attention", {}).get("blocks") or [], "coherence")
    test = one_sample(seed_means(runs), settings["confidence"])
    significant = _significant(test["p"], settings["alpha"])
    answer = UNKNOWN if significant is None else YES if significant and test["mean"] > 0 else NO
    per_ordering = {o: interval([runs[(o, s)] for s in seeds if (o, s) in runs], settings["confidence"])
                    for o in orderings}
    return {"question": "Do near-in-sequence patches attend alike?", "answer": answer, "coherence": test,
            "per_ordering": per_ordering}


def missing_runs(group: dict[str, Any]) -> list[str]:
    return [f"{r['ordering']} seed {r['seed']} ({r['status']})" for r in group.get("runs") or []
            if r.get("status") != "completed"]


def judge(group: dict[str, Any], orderings: list[str], seeds: list[int], settings: dict) -> dict[str, Any]:
    """The verdict of one data config: every answer, the scan-use warning, and what it rests on."""
    scan = scan_use(group, orderings, seeds, settings)
    completed = {(r["ordering"], r["seed"]) for r in group.get("runs") or [] if r.get("status") == "completed"}
    complete_seeds = [s for s in seeds if all((o, s) in completed for o in orderings)]
    headline = None
    if scan["too_small"]:
        drops = {"scan ablation": ("ablating every scan", scan["ablation_drop"], settings["min_scan_drop"]),
                 "cross table": ("testing with the other orderings", scan["cross_drop"], settings["min_cross_drop"])}
        measured = "; ".join(f"{what} costs {100 * drop['mean']:.1f} pts (threshold {100 * limit:g})"
                             for name, (what, drop, limit) in drops.items() if name in scan["judged_on"])
        headline = (f"The models barely use their scans here ({measured}): the ordering has almost nothing to act "
                    "on, so ties between orderings below are expected, not a finding. Use a setting whose scans "
                    "carry the task (e.g. experiment=long_range).")
    verdict = {
        "settings": settings,
        "seeds": len(seeds), "complete_seeds": complete_seeds,
        "one_seed": len({seed for _, seed in completed}) <= 1,  # no interval over seeds can be given
        "missing_runs": missing_runs(group),
        "scan_usage_too_small": scan["too_small"],
        "headline": headline,
        "questions": {
            "scan": scan,
            "accuracy": accuracy(group, orderings, seeds, settings),
            "attention": attention(group, orderings, seeds, settings),
            "blocks": blocks(group, orderings, seeds, settings),
            "sequence": sequence(group, orderings, seeds, settings),
        },
    }
    verdict["summary"] = summaries(verdict)
    return verdict


# --- words -------------------------------------------------------------------------------------------------
TEST_NAMES = {"ttest_rel": "paired t-test", "ttest_1samp": "one-sample t-test", "friedmanchisquare": "Friedman",
              "rm_anova": "repeated-measures ANOVA"}


def _number(value: float, points: bool) -> str:
    return f"{100 * value:+.1f} pts" if points else f"{value:+.3f}"


def estimate(cell: dict[str, Any], confidence: float, points: bool = False) -> str:
    """``+3.1 pts (95% CI +2.0 to +4.2)``; the mean alone with one seed."""
    if cell.get("mean") is None:
        return "not measured"
    text = _number(cell["mean"], points)
    if cell.get("low") is not None:
        text += (f" ({100 * confidence:g}% CI {_number(cell['low'], points)} to {_number(cell['high'], points)}, "
                 f"n={cell['n']} seeds)")
    return text


def level(cell: dict[str, Any], confidence: float) -> str:
    """A level, not a difference: ``0.83 (95% CI 0.8 to 0.86)``; 3 significant digits (scan shares can be 1e-5)."""
    if cell.get("mean") is None:
        return "not measured"
    text = f"{cell['mean']:.3g}"
    if cell.get("low") is not None:
        text += f" ({100 * confidence:g}% CI {cell['low']:.3g} to {cell['high']:.3g})"
    return text


def _p(p: float) -> str:
    return "p<1e-16" if p < 1e-16 else f"p={p:.3g}"


def p_text(test: dict[str, Any] | None, adjusted: float | None = None, tests: int = 1) -> str:
    if not test or test.get("p") is None:
        return "no test (" + ((test or {}).get("note") or "too few seeds") + ")"
    text = f"{TEST_NAMES[test['test']]} over {len(test['seeds'])} seeds {_p(test['p'])}"
    if adjusted is not None and tests > 1:
        text += f", Bonferroni over {tests} tests {_p(adjusted)}"
    if test.get("note"):
        text += f" ({test['note']})"
    return text


def summaries(verdict: dict[str, Any]) -> dict[str, str]:
    """One sentence of numbers per question (the answer itself is the question's ``answer``)."""
    q, c = verdict["questions"], verdict["settings"]["confidence"]
    scan = q["scan"]
    out = {"scan": (
        f"ablating every scan costs {estimate(scan['ablation_drop'], c, True)} of top-1 "
        f"[{p_text(scan['ablation_drop'])}]; testing with another ordering than the trained one costs "
        f"{estimate(scan['cross_drop'], c, True)} [{p_text(scan['cross_drop'])}]; scan share "
        f"{level(scan['usage']['scan_share_mean'], c)}, logits move by {level(scan['usage']['logit_change'], c)} "
        f"(relative) under a random ordering.")}

    acc = q["accuracy"]
    if acc["effect"] is None:
        out["accuracy"] = "no two orderings with completed runs."
    else:
        e = acc["effect"]
        friedman = f", Friedman {_p(acc['friedman']['p'])}" if acc.get("friedman") else ""
        out["accuracy"] = (f"largest mean difference from {e['a']}: {e['b']} {estimate(e, c, True)} "
                           f"[{p_text(e, e['p_adjusted'], len(acc['comparisons']))}]; "
                           f"across all orderings: {p_text(acc['omnibus'])}{friedman}.")

    att = q["attention"]
    if att["strongest"] is None:
        out["attention"] = "no attention metrics (no export)."
    else:
        t = att["strongest"]
        out["attention"] = (f"strongest: {t['metric']} at stage {t['stage']}, {t['effect']['b']} vs "
                            f"{t['effect']['a']} {estimate(t['effect'], c)} "
                            f"[{p_text(t['omnibus'], t['p_adjusted'], len(att['tests']))}].")
    sim = att["similarity"]
    out["similarity"] = (f"cosine of the same block's attention across orderings "
                         f"{level(sim['across_orderings'], c)}, across seeds {level(sim['across_seeds'], c)}; "
                         f"difference {estimate(sim['difference'], c)} [{p_text(sim['difference'])}]. Runs of one "
                         "seed share initial weights and batches, which makes orderings look alike.")

    blk = q["blocks"]
    if not blk["stages"]:
        out["blocks"] = blk["note"] + "."
    else:
        parts = []
        for stage in blk["stages"]:
            e = stage["effect"]
            parts.append(f"stage {stage['stage']} ({stage['blocks']} blocks): {blk['metric']} of block {e['b']} vs "
                         f"block {e['a']} {estimate(e, c)} "
                         f"[{p_text(stage['omnibus'], stage['p_adjusted'], len(blk['stages']))}], consecutive "
                         f"blocks' cosine {level(stage['consecutive_cosine'], c)}")
        out["blocks"] = "; ".join(parts) + "."
    seq = q["sequence"]
    out["sequence"] = (f"sequence coherence (Spearman, > 0: closer in the scan, more alike) "
                       f"{level(seq['coherence'], c)} [{p_text(seq['coherence'])} against 0].")
    return out


QUESTION_ORDER = (("scan", "scan"), ("accuracy", "accuracy"), ("attention", "attention"),
                  ("similarity", "attention"), ("blocks", "blocks"), ("sequence", "sequence"))


def markdown(verdicts: dict[str, dict[str, Any]]) -> list[str]:
    """The opening section of study.md: per data config, the scan-use warning first, then every answer."""
    lines = ["## Verdict", ""]
    first = next(iter(verdicts.values()), None)
    if first is not None:
        s = first["settings"]
        lines += [f"Answers at significance level {s['alpha']:g}, with {100 * s['confidence']:g}% t intervals over "
                  "seeds. Orderings are compared paired by seed (repeated-measures ANOVA across all of them, Friedman "
                  "beside it for >= 3; each ordering against the first by paired t-test, Bonferroni); model-wide "
                  "numbers average each seed's runs over the orderings first. Scan use is too small for the "
                  "ordering to matter when the "
                  f"scan-ablation drop is below {100 * s['min_scan_drop']:g} pts and the cross-table drop below "
                  f"{100 * s['min_cross_drop']:g} pts of top-1 (report.verdict.*).", ""]
    for name, verdict in verdicts.items():
        lines += [f"### {name}", ""]
        if verdict["headline"]:
            lines += [f"**{verdict['headline']}**", ""]
        if verdict["one_seed"]:
            lines += ["**One seed: no confidence interval and no test can be given; the numbers below are single "
                      "runs.**", ""]
        if verdict["missing_runs"]:
            lines += [f"Not completed (left out of the numbers): {', '.join(verdict['missing_runs'])}.", ""]
        for key, source in QUESTION_ORDER:
            question = verdict["questions"][source]
            if key == "similarity":
                question = question["similarity"]
            lines.append(f"- **{question['question']}** {question['answer'].capitalize()}: {verdict['summary'][key]}")
        lines += ["", *scan_table(verdict), ""]
    return lines


def scan_table(verdict: dict[str, Any]) -> list[str]:
    """Per training ordering: what ablating the scans and testing with other orderings cost (mean over seeds)."""
    c = verdict["settings"]["confidence"]
    per = verdict["questions"]["scan"]["per_ordering"]
    rows = [f"| {o} | {estimate(v['ablation_drop'], c, True)} | {estimate(v['cross_drop'], c, True)} |"
            for o, v in per.items()]
    return ["| trained with | drop with every scan ablated | drop under the other orderings |", "|---|---|---|", *rows]
