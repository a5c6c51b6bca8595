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

Test hook: ``window.explorer`` in the page. ``ready`` (true after the first render; ``readyAt`` = ms since
navigation), ``errors`` (messages of uncaught errors), ``state`` (a copy of the selection), setters
``select(stage, block)``, ``setVariant(i)``, ``setRoute("merged" | k)``, ``setImage("mean" | n)``,
``setMode("patches" | "blocks")``, ``setMethod("pca" | "tsne" | "umap")``, ``setColorBy``, ``setPath(on)``,
``setPathRoute("off" | k | "all")``, ``setSharedScale(on)``, ``setLogColor``, ``clickPatch(row, col)``, ``brush(x0, y0, x1, y1, side=0)`` (embedding coordinates; returns the
point indices inside), ``clearBrush()``; readers ``heatmapValues(side=0)`` (the selected patch's attention row,
raster order, as shown), ``heatmapReason(side)``, ``highlightedPatches()``, ``highlightedPoints()``,
``scatterPoints(side)``, ``dataToClient(side, x, y)`` (page coordinates of an embedding point), ``metrics(side)``,
``notices(side)``, ``overviewValues(row, col, side=0)`` (for stage-0 patch (row, col): one entry per block
``{stage, block, row, col, values}``, values the attention row of the patch covering it on that block's grid,
raster order, as drawn), ``paths(side)`` (the drawn routes), ``colorScale(side)`` ({lo, hi, log}),
``legend(side)`` (the legend, axis, unit, scale and path texts); whole-model relevance (a <tag>_relevance.npz
beside the export): ``setRelevance(kind)``, ``relevanceKinds(side=0)`` (the maps stored, [] without a file),
``relevanceValues(image, kind, side=0)`` (image n's map, or "mean" over the images, stage-0 grid, raster order;
null when absent), ``relevanceShown(side=0)`` ({kind, image, values} as drawn), ``relevanceNote(side=0)`` (its
caption, or why a file was not shown), ``erfStages(side=0)``, ``erfValues(stage, side=0)`` (the stage's ERF over
the input pixels, raster order).
"""
from patchorder.explore.report import Report, build_report, to_wandb_html, write_report
from patchorder.explore.source import ExplorerInputError, find_export, load_export

__all__ = ["build_report", "write_report", "Report", "to_wandb_html", "find_export", "load_export", "ExplorerInputError"]
