"""Command line: ``python -m patchorder.explore RUN_DIR_OR_NPZ [-o report.html] [--compare OTHER]``."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from patchorder.attention.embedding import METHODS
from patchorder.explore.report import write_report
from patchorder.explore.source import ExplorerInputError, find_export


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m patchorder.explore",
        description="Write the interactive attention explorer (one offline HTML file) for an attention export.")
    parser.add_argument("source", nargs="+", metavar="RUN_DIR_OR_NPZ",
                        help="attention .npz, or a run directory (its newest **/attention*.npz is used); "
                             "several exports of the same blocks with different reductions fill the reduction selector")
    parser.add_argument("-o", "--output", type=Path,
                        help="HTML file to write (default: next to the export, same name, .html)")
    parser.add_argument("--compare", nargs="+", metavar="OTHER_NPZ_OR_RUN_DIR",
                        help="a second export shown side by side with linked selection")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"projections to precompute, comma-separated from {','.join(METHODS)} (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of t-SNE / UMAP (default 0)")
    parser.add_argument("--max-mb", type=float, default=15.0,
                        help="file size budget in MB; optional views that do not fit are left out and named (default 15)")
    parser.add_argument("--encoding", choices=("auto", "f16"), default="auto",
                        help="auto: uint8 log scale for non-negative attention, float16 for signed; f16: always float16")
    parser.add_argument("--floor", type=float, default=1e-4,
                        help="log scale: smallest value kept, relative to its row's maximum (default 1e-4)")
    parser.add_argument("--max-layout-points", type=int, default=1024,
                        help="t-SNE / UMAP of a block's patches only up to this many patches; larger blocks get PCA "
                             "and the page says so (default 1024; VMamba-T's 56x56 stage 0 has 3136)")
    parser.add_argument("--title", help="page title")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        output = args.output or find_export(args.source[0]).with_suffix(".html")
        started = time.perf_counter()
        report = write_report(args.source, output, compare=args.compare, title=args.title,
                            methods=[m.strip() for m in args.methods.split(",") if m.strip()], seed=args.seed,
                            max_mb=args.max_mb, encoding=args.encoding, floor=args.floor,
                            max_layout_points=args.max_layout_points)
    except (ExplorerInputError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(f"{report.summary()}\nbuilt in {time.perf_counter() - started:.1f} s; open it in a browser (file://) "
          "or log it to W&B with patchorder.explore.to_wandb_html(path)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
