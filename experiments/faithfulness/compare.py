"""Which relevance map is faithful to a trained model? Deletion and insertion AUC of rollout, attribution, plain
input-gradient and random maps (patchorder.attention.compare_maps) for each checkpoint, on the probe images of
its validation split, then per ordering the mean over its checkpoints (seeds) and the map that wins each curve.

    python experiments/faithfulness/compare.py RUN_DIR_OR_CKPT ... [--images 8] [--steps 16] [--json out.json]
    python experiments/faithfulness/compare.py studies/<study>/train_long_range/*/   # every run of a study

A run directory stands for its best checkpoint (checkpoints/best*.ckpt; else last.ckpt). Lower deletion AUC wins
(the prediction falls as soon as the map's most relevant patches are removed); higher insertion AUC wins.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the `study` package (experiments/study)

from study.relevance import MAPS, checkpoint_relevance, winners  # noqa: E402


def checkpoint_of(path: Path) -> Path:
    """The .ckpt itself, or a run directory's best checkpoint (else its last.ckpt)."""
    if path.is_file():
        return path
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    best = sorted(folder.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
    if best:
        return best[-1]
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    raise SystemExit(f"error: {path} is neither a .ckpt file nor a run directory with checkpoints/best*.ckpt or "
                     "checkpoints/last.ckpt")


def per_ordering(rows: list[dict]) -> dict[str, dict]:
    """ordering -> {maps: {map: {deletion_auc, insertion_auc, n}} (means over checkpoints), best_deletion,
    best_insertion, checkpoints}."""
    out: dict[str, dict] = {}
    for ordering in dict.fromkeys(r["ordering_label"] for r in rows):
        mine = [r for r in rows if r["ordering_label"] == ordering]
        maps = {}
        for name in MAPS:
            cells = [next(x for x in r["faithfulness"] if x["map"] == name) for r in mine]
            maps[name] = {key: statistics.fmean(c[key] for c in cells) for key in ("deletion_auc", "insertion_auc")}
            maps[name]["n"] = len(cells)
        best_deletion, best_insertion = winners({m: (c["deletion_auc"], c["insertion_auc"]) for m, c in maps.items()})
        out[ordering] = {"maps": maps, "checkpoints": [r["checkpoint"] for r in mine],
                         "best_deletion": best_deletion, "best_insertion": best_insertion}
    return out


def table(summary: dict[str, dict]) -> str:
    lines = [f"{'ordering':<12} {'map':<15} {'deletion AUC':>13} {'insertion AUC':>14} {'n':>3}"]
    for ordering, entry in summary.items():
        for name, cell in entry["maps"].items():
            marks = ("  <- wins deletion" if name == entry["best_deletion"] else "") + \
                    ("  <- wins insertion" if name == entry["best_insertion"] else "")
            lines.append(f"{ordering:<12} {name:<15} {cell['deletion_auc']:>13.4f} {cell['insertion_auc']:>14.4f} "
                         f"{cell['n']:>3}{marks}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compare.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", type=Path, metavar="RUN_DIR_OR_CKPT")
    parser.add_argument("--images", type=int, default=8, help="probe images of the validation split (default 8)")
    parser.add_argument("--steps", type=int, default=16, help="points per curve (default 16)")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args(argv)
    if args.images < 1 or args.steps < 1:
        parser.error("--images and --steps must be >= 1")
    checkpoints = [checkpoint_of(p) for p in args.sources]
    rows, datamodules = [], {}
    for ckpt in checkpoints:
        started = time.perf_counter()
        summary, _ = checkpoint_relevance(ckpt, None, args.images, args.steps, datamodules)
        rows.append(summary)
        print(f"{ckpt} ({summary['ordering_label']}): deletion wins {summary['best_deletion']}, insertion wins "
              f"{summary['best_insertion']} ({time.perf_counter() - started:.1f} s)", flush=True)
    summary = per_ordering(rows)
    print(f"\nmean over checkpoints, {args.images} validation probe images, {args.steps} steps; deletion: lower "
          "wins, insertion: higher wins\n" + table(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"images": args.images, "steps": args.steps, "split": "val",
                                         "per_checkpoint": rows, "per_ordering": summary}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
