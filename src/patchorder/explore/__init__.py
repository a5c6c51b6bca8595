"""The interactive attention explorer: one self-contained HTML file per export (or pair of exports).

    python -m patchorder.explore RUN_DIR_OR_NPZ [-o report.html] [--compare OTHER_NPZ_OR_RUN_DIR]

or from Python ``build_report(export_or_path, out_path, compare=None, ...) -> Path``; log the file to W&B with
``to_wandb_html(path)``. The page works offline from file:// (no server, nothing fetched): its script, style
and data (deflated, base64-encoded typed arrays) are inlined.

Views: a scatterplot (blocks of a stage or patches of a block, PCA / t-SNE / UMAP precomputed at build time;
colour legend, axis captions), the patch grid over the probe image with the image beside it (click a patch for
its attention heatmap; drag to brush patches; the path of one route or of every route, start and end marked),
the model overview (the selected patch in every block, every block's matrix; click to open), selectors for
reduction, stage, block, route and image, the block's metrics, a side-by-side comparison with linked
selection and one colour scale, and, when the export has a <tag>_relevance.npz beside it, the selected image's
whole-model relevance maps over the probe image, their faithfulness AUCs and the ERF of every stage.

Test hook: ``window.explorer`` in the page; its members are listed in README.md ("Attention explorer"),
checked against explorer.js by tests/test_explore_hooks.py.
"""
from patchorder.explore.report import Report, build_report, to_wandb_html, write_report
from patchorder.explore.source import ExplorerInputError, find_export, load_export

__all__ = ["build_report", "write_report", "Report", "to_wandb_html", "find_export", "load_export", "ExplorerInputError"]
