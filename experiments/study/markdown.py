"""study.md from the study.json document: every number shown here is read from that document."""
from __future__ import annotations

from typing import Any

from patchorder.attention.metrics import scalar_metrics
from study.verdict import markdown as verdict_lines


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_spread(cell: dict[str, Any], digits: int = 4) -> str:
    if not cell or cell.get("mean") is None:
        return "-"
    text = fmt(cell["mean"], digits)
    if cell.get("n", 0) > 1:
        text += f" ± {fmt(cell['std'], digits)}"
    return text


def one_seed(group: dict[str, Any]) -> bool:
    """One seed (the verdict says so): single values, and no "mean ± std" anywhere."""
    return bool((group.get("verdict") or {}).get("one_seed"))


def table(header: list[str], rows: list[list[Any]]) -> str:
    def clean(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(clean, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(clean, row)) + " |" for row in rows]
    return "\n".join(lines)


def image(figures: dict[str, str], name: str, alt: str) -> str:
    return f"![{alt}]({figures[name]})" if name in figures else f"_({alt}: nothing to draw)_"


def header(doc: dict[str, Any]) -> list[str]:
    launch = doc.get("launch") or {}
    timing = []
    for group, steps in (launch.get("groups") or {}).items():
        for step, record in steps.items():
            timing.append(f"{group} {step} {fmt(record.get('seconds'), 0)} s (exit {record.get('returncode')})")
    if launch.get("seconds") is not None:
        timing.append(f"sweeps wall time {fmt(launch['seconds'], 0)} s")
    timing.append(f"this report {fmt(doc.get('compile_seconds'), 1)} s")
    runs = ", ".join(f"{name} {g['completed']}/{g['expected']}" for name, g in doc["groups"].items())
    rows = [
        ["study directory", f"`{doc['study_dir']}`"], ["preset", doc.get("preset") or "-"],
        ["data", ", ".join(doc["data"])], ["orderings", ", ".join(doc["orderings"])],
        ["seeds", ", ".join(map(str, doc["seeds"]))],
        ["command", "`python experiments/ordering_study.py " + " ".join(doc.get("command") or []) + "`"],
        ["started / compiled", f"{doc.get('created')} / {doc.get('compiled')}"],
        ["time", "; ".join(timing)], ["training runs completed", runs],
        ["cross-table weights", f"{doc.get('checkpoint')} checkpoint of each run"],
    ]
    return ["# Ordering study", "", table(["", ""], rows), ""]


def describe(group: dict[str, Any]) -> str:
    d = group["description"]
    parts = [d.get("model") or "model unknown (no completed run)"]
    if d.get("image_size"):
        parts.append(f"{d['image_size'][0]}x{d['image_size'][1]} px")
    if d.get("num_classes"):
        parts.append(f"{d['num_classes']} classes")
    if d.get("images"):
        parts.append("images " + " / ".join(f"{k} {v}" for k, v in d["images"].items()))
    if d.get("epochs") is not None:
        parts.append(f"{d['epochs']} epochs")
    overrides = " ".join(f"`{o}`" for o in d.get("overrides") or []) or "none"
    return ", ".join(parts) + f". Training overrides: {overrides}."


def accuracy_section(group: dict[str, Any], orderings: list[str]) -> list[str]:
    acc = group["accuracy"]
    rows = []
    for o in orderings:
        t1, t5, bv = acc[o]["test_acc1"], acc[o]["test_acc5"], acc[o]["best_val_acc1"]
        rows.append([o, fmt_spread(t1), fmt(t1["min"]), fmt(t1["max"]), fmt_spread(t5), fmt_spread(bv),
                     t1["n"]])
    runs = [[r["ordering"], r["seed"], r["status"], fmt(r["test_acc1"]), fmt(r["test_acc5"]), fmt(r["best_val_acc1"]),
             fmt(r["epochs"]), fmt(r["wall_time_s"], 0), fmt(r["train_images_per_sec"], 0), f"`{r['dir']}`"]
            for r in group["runs"]]
    figs = group["figures"]
    return [
        "### Accuracy", "",
        ("One seed: each value is a single run (no spread can be given)" if one_seed(group) else
         "Mean ± std over seeds (sample std)") + ", min and max of test top-1; n = completed runs.", "",
        table(["ordering", "test top-1", "min", "max", "test top-5", "best val top-1", "n"], rows), "",
        image(figs, "accuracy", "test top-1 per ordering"), "", image(figs, "curves", "training curves"), "",
        "Runs:", "",
        table(["ordering", "seed", "status", "test top-1", "test top-5", "best val top-1", "epochs", "wall s",
               "train img/s", "directory"], runs), "",
    ]


def cross_section(group: dict[str, Any]) -> list[str]:
    cross = group.get("cross")
    if cross is None:
        return ["### Test-time ordering sensitivity", "", "Cross evaluation was off (cross_eval=false).", ""]
    rows = [[a] + [f"{fmt_spread(cross['acc1'][a][b])} (n={cross['acc1'][a][b]['n']})" for b in cross["columns"]]
            for a in cross["rows"]]
    check = group["diagonal_check"]
    note = (f"Diagonal check: the diagonal re-evaluates each run's checkpoint with its own ordering; over "
            f"{check['pairs']} runs its largest difference from the run's own test top-1 is "
            f"{fmt(check['max_abs_difference'], 6)} (training tested with: {', '.join(check['train_test_weights'])}).")
    return [
        "### Test-time ordering sensitivity (cross table)", "",
        "Rows: training ordering; columns: ordering used at test time; cells: test top-1, "
        + ("one run each (one seed)." if one_seed(group) else "mean ± std over seeds."), "",
        table(["train \\ test", *cross["columns"]], rows), "", note, "",
        image(group["figures"], "cross", "cross table heatmap"), "",
    ]


def _stage_header(stages: dict[str, Any]) -> list[str]:
    return [f"stage {s} ({'x'.join(map(str, stages['grids'][str(s)]))})" for s in stages["stages"]]


def attention_section(group: dict[str, Any], orderings: list[str]) -> list[str]:
    att, figs = group["attention"], group["figures"]
    stages = att["stages"]
    probe = att["probe"]
    lines = ["### Attention", ""]
    if not stages["stages"]:
        return lines + ["No attention export was found (see failures below).", ""]
    lines += [
        f"From each run's attention/attention_final.npz (final weights, {probe['num_images']} probe images, "
        f"identical across runs: {'yes' if probe['identical_across_runs'] else 'NO'}). Metrics per run and block "
        "(metrics_table) are in study.json; below, each run's stage mean (stage_summary)"
        + (" (one seed)." if one_seed(group) else ", then mean ± std over seeds."),
        "", image(figs, "paths", "orderings' paths on the stage-0 grid"), "",
    ]
    for metric in scalar_metrics():
        rows = [[o] + [fmt_spread(stages["by_ordering"][o][str(s)][metric.name]) for s in stages["stages"]]
                for o in orderings]
        lines += [f"**{metric.description}**", "", table(["ordering", *_stage_header(stages)], rows), ""]
    lines += [image(figs, "attention_metrics", "attention metrics per stage"), ""]

    within = att["within_stage_similarity"]
    if within["stages"]:
        rows = [[o] + [fmt_spread(within["by_ordering"][o][str(s)]) for s in within["stages"]] for o in orderings]
        lines += ["**Blocks within a stage**: mean cosine similarity between different blocks' mean attention "
                  "(block_similarity_matrix; 1 = the blocks attend alike).", "",
                  table(["ordering", *[f"stage {s}" for s in within["stages"]]], rows), ""]
    similarity = att["ordering_similarity"]
    if similarity["stages"]:
        lines += ["**Same block, different orderings** (compare_exports on the same probe images): cosine of the "
                  "blocks' mean attention, "
                  + ("mean over the stage's blocks (one seed). " if one_seed(group) else
                     "mean ± std over the stage's blocks and seeds. ")
                  + "Diagonal: the same ordering trained with another seed. Runs of one seed start from the same "
                  "initial weights and see the same "
                  "batches whatever their ordering; the diagonal's pairs differ in both, so it measures "
                  "initialisation and data order, not the ordering.", ""]
        for stage in similarity["stages"]:
            cells = similarity["matrix"][str(stage)]
            show = (lambda cell: fmt(cell.get("mean"), 3)) if one_seed(group) else (lambda cell: fmt_spread(cell, 3))
            rows = [[a] + [show(cells[a][b]) for b in orderings] for a in orderings]
            lines += [f"Stage {stage}:", "", table(["", *orderings], rows), ""]
        lines += [image(figs, "similarity", "similarity between orderings"), ""]
        if similarity["skipped"]:
            lines += [f"Skipped pairs (different probe images): {len(similarity['skipped'])}.", ""]
    lines += [image(figs, "attention_maps", "average attention maps"), "",
              image(figs, "embeddings", "patch embeddings per block"), ""]
    return lines


def relevance_section(group: dict[str, Any], orderings: list[str]) -> list[str]:
    rel = group.get("relevance")
    lines = ["### Effective receptive fields and faithfulness of relevance maps", ""]
    if rel is None:
        return lines + ["Not computed (report.relevance.enabled=false).", ""]
    settings = rel["settings"]
    spread_note = "one run each (one seed)" if one_seed(group) else "mean ± std over seeds"
    lines += [
        f"From each run's {rel['checkpoint']} checkpoint on {settings['num_images']} probe "
        f"images of the validation split ({rel['seconds']} s for the group). ERF: sum over images and input "
        "channels of relu(dS/dx), S the centre patch of the stage's output (patchorder.attention."
        "effective_receptive_field); \"before\" is the untrained model of the same config built under the same "
        "seed. area 50% / 90%: share of input pixels holding that share of the ERF's mass (small = concentrated). "
        "Faithfulness: deletion / insertion curves over the stage-0 patches, "
        f"{settings['steps'] or 'one point per patch'} steps, removed patches set to the dataset mean, target the "
        "predicted class; deletion AUC lower is better, insertion AUC higher is better; "
        f"{spread_note}.", "",
    ]
    for ordering in orderings:
        entry = rel["by_ordering"].get(ordering)
        lines += [f"**{ordering}**", ""]
        if entry is None:
            lines += ["No completed run with a checkpoint (see failures below).", ""]
            continue
        rows = [[f["map"], fmt_spread(f["deletion_auc"]), fmt_spread(f["insertion_auc"]), f["deletion_auc"]["n"]]
                for f in entry["faithfulness"]]
        lines += [table(["map", "deletion AUC (lower wins)", "insertion AUC (higher wins)", "n"], rows), "",
                  f"Wins: deletion **{entry['best_deletion']}**, insertion **{entry['best_insertion']}**.", ""]
        rows = [[e["stage"], fmt_spread(e["before"]["area_50"]), fmt_spread(e["after"]["area_50"]),
                 fmt_spread(e["before"]["area_90"]), fmt_spread(e["after"]["area_90"])] for e in entry["erf"]]
        lines += [table(["stage", "ERF area 50% before", "after", "ERF area 90% before", "after"], rows), "",
                  image(group["figures"], f"erf_{ordering}", f"ERF of {ordering} before and after training"), ""]
    return lines


def explorer_section(group: dict[str, Any]) -> list[str]:
    explorers = group["explorers"]
    lines = ["### Interactive explorers", ""]
    lines += [f"- [{e['ordering']}, seed {e['seed']}]({e['path']})" for e in explorers["runs"]] or ["- none"]
    if explorers["compare"]:
        c = explorers["compare"]
        lines.append(f"- side by side: [{c['a']} vs {c['b']}, seed {c['seed']}]({c['path']})")
    return lines + [""]


def failure_section(group: dict[str, Any]) -> list[str]:
    failures = group["failures"]
    if not failures:
        return ["### Failed or missing", "", "None: every run, evaluation and attention export is present.", ""]
    rows = [[f["kind"], f["run"], f["status"], f["error"] or ""] for f in failures]
    return ["### Failed or missing", "", table(["kind", "run", "status", "error"], rows), ""]


def render(doc: dict[str, Any]) -> str:
    lines = header(doc)
    lines += verdict_lines({name: g["verdict"] for name, g in doc["groups"].items() if g.get("verdict")})
    for name, group in doc["groups"].items():
        lines += [f"## {name}", "", describe(group), ""]
        lines += accuracy_section(group, doc["orderings"])
        lines += cross_section(group)
        lines += attention_section(group, doc["orderings"])
        lines += relevance_section(group, doc["orderings"])
        lines += explorer_section(group)
        lines += failure_section(group)
    return "\n".join(lines).rstrip() + "\n"
