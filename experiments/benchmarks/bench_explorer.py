"""Size and opening time of the attention explorer, against references measured in the same run.

Targets: a vmamba_micro export with 8 probe images gives a report of at most 15 MB that is interactive within
2 s of opening in Chromium. Opening time = navigation start to the page's ``ready`` flag (set after the first
render: data decoded, every view drawn), median of several loads. References, same run, same browser:
  size  the export itself (.npz, float16, compressed): the report's bytes per export byte;
  time  a page of the same size whose data is inert (same bytes, no script): the cost of just loading the file.
With ``--tiny`` it also builds reports from a random-weight vmamba_tiny_s1l8 at 224 px (stage-0 grid 56x56),
at the default budget and with every view kept, and prints their sizes and opening times.

    python experiments/benchmarks/bench_explorer.py                  # micro, PCA + t-SNE + UMAP, 5 loads
    python experiments/benchmarks/bench_explorer.py --quick          # micro, PCA only, 2 loads
    python experiments/benchmarks/bench_explorer.py --tiny --images 2 [--tiny-npz saved.npz]
"""
from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch

import patchorder.models  # noqa: F401  (registers the presets)
from patchorder.attention.embedding import METHODS
from patchorder.attention.export import save
from patchorder.attention.extract import extract_attention
from patchorder.explore.report import write_report

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def export_of(model_name: str, size: int, images: int, merge: str, path: Path) -> Path:
    torch.manual_seed(0)
    model = timm.create_model(model_name, ordering="spiral", num_classes=10)
    batch = torch.randn(images, 3, size, size, generator=torch.Generator().manual_seed(1))
    start = time.perf_counter()
    export = extract_attention(model, batch, merge=merge, reduce="mean_abs", labels=list(range(images)))
    print(f"  extracted {model_name} attention of {images} image(s) at {size} px in {time.perf_counter() - start:.1f} s")
    return save(path, export, dtype=np.float16)


def inert_copy(report: Path, folder: Path) -> Path:
    """The same file with its script removed: loading it costs what reading and parsing the bytes cost."""
    text = report.read_text(encoding="utf-8")
    inert = re.sub(r"<script>\n.*?</script>", "<script>window.inertReady = performance.now();</script>", text,
                   flags=re.S)
    path = folder / f"inert_{report.name}"
    path.write_text(inert, encoding="utf-8")
    return path


def opening_times(browser, path: Path, loads: int, flag: str) -> list[float]:
    times = []
    for _ in range(loads):
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        page.wait_for_function(f"{flag} !== undefined && {flag} !== null", timeout=120_000)
        times.append(page.evaluate(flag))
        if errors or page.evaluate("window.explorer ? explorer.errors : []"):
            raise RuntimeError(f"{path.name}: page errors {errors}")
        page.close()
    return times


def measure(browser, report, npz: Path, folder: Path, loads: int, label: str):
    ready = statistics.median(opening_times(browser, report.path, loads, "window.explorer && explorer.readyAt"))
    inert = statistics.median(opening_times(browser, inert_copy(report.path, folder), loads, "window.inertReady"))
    size_mb = report.size_bytes / 1e6
    print(f"{label}: {size_mb:.2f} MB ({size_mb / (npz.stat().st_size / 1e6):.2f}x the float16 .npz), "
          f"ready {ready:.0f} ms ({ready / inert:.2f}x loading the same bytes without the explorer: {inert:.0f} ms)")
    if report.omitted:
        print(f"  left out by the budget: {len(report.omitted)} view(s), {report.omitted_bytes / 1e6:.1f} MB")
    return size_mb, ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="PCA only, 2 loads")
    parser.add_argument("--tiny", action="store_true", help="also vmamba_tiny_s1l8 at 224 px (minutes of CPU)")
    parser.add_argument("--images", type=int, default=2, help="probe images for --tiny (default 2)")
    parser.add_argument("--tiny-npz", type=Path, help="reuse a saved vmamba_tiny_s1l8 export instead of extracting")
    args = parser.parse_args()
    methods = ("pca",) if args.quick else METHODS
    loads = 2 if args.quick else 5
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        folder = Path(tmp)
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        print("vmamba_micro, 64 px, 8 probe images, routes kept apart (merge none):")
        npz = export_of("vmamba_micro", 64, 8, "none", folder / "micro.npz")
        start = time.perf_counter()
        report = write_report(npz, folder / "micro.html", methods=methods)
        print(f"  report built in {time.perf_counter() - start:.1f} s ({', '.join(methods)})")
        size_mb, ready = measure(browser, report, npz, folder, loads, "  micro")
        print(f"  targets: <= 15 MB -> {'met' if size_mb <= 15 else 'MISSED'}; "
              f"ready <= 2000 ms -> {'met' if ready <= 2000 else 'MISSED'}")
        if args.tiny:
            print(f"vmamba_tiny_s1l8, 224 px, {args.images} probe image(s), merged routes:")
            npz = args.tiny_npz or export_of("vmamba_tiny_s1l8", 224, args.images, "sum", folder / "tiny.npz")
            for budget in (15.0, 1000.0):
                start = time.perf_counter()
                report = write_report(npz, folder / f"tiny_{budget:.0f}.html", methods=methods, max_mb=budget)
                print(f"  --max-mb {budget:.0f}: built in {time.perf_counter() - start:.1f} s")
                measure(browser, report, npz, folder, loads, f"  tiny, budget {budget:.0f} MB")
        browser.close()


if __name__ == "__main__":
    main()
