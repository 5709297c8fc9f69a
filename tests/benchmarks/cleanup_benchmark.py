"""Time page clean-up on 300 dpi A4 pages: seconds per page for each step.

Pages: two sample pages (grey and colour) from ``samples/pages/``, a blank
back drawn by :mod:`sohoa.testbed.pages`, and the colour sample page laid on
a dark scanner background and tilted by 2 degrees. For each page the script
prints the median of ``--repeat`` runs of:

* blank check: :func:`sohoa.cleanup.is_blank`, finding the sheet included;
* crop: :func:`sohoa.cleanup.crop_to_paper`, finding the sheet included;
* deskew: :func:`sohoa.cleanup.deskew`, estimate and turn;
* clean_page: the whole step as the pipeline runs it, all three settings on;
* PNG write: saving the cleaned page as the pipeline does (level 3).

OpenCV runs with ``--threads`` threads (``cv2.setNumThreads``); 1 is the
pessimistic case for a box whose other core is busy with OCR.

Run from the repository root::

    PYTHONPATH=daemon python tests/benchmarks/cleanup_benchmark.py [--repeat 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from sohoa import cleanup
from sohoa.testbed import pages as testpages

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "samples" / "pages"
DPI = 300


def load(name: str) -> np.ndarray:
    with Image.open(SAMPLES_DIR / name) as image:
        return np.asarray(image)


def median_seconds(step: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def save_png(image: Image.Image) -> None:
    image.save(io.BytesIO(), format="PNG", dpi=(DPI, DPI), compress_level=3)


def measure(name: str, page: np.ndarray, repeat: int) -> list[str]:
    image = Image.fromarray(page)
    cleaned = cleanup.clean_page(image, DPI, remove_blank=True, crop=True, straighten=True)
    figures = [
        median_seconds(lambda: cleanup.is_blank(page, DPI), repeat),
        median_seconds(lambda: cleanup.crop_to_paper(page, DPI), repeat),
        median_seconds(lambda: cleanup.deskew(page, DPI), repeat),
        median_seconds(lambda: cleanup.clean_page(image, DPI, remove_blank=True, crop=True, straighten=True), repeat),
        median_seconds(lambda: save_png(cleaned.image), repeat) if cleaned.image is not None else None,
    ]
    if cleaned.dropped:
        outcome = "dropped"
    elif cleaned.changed:
        outcome = "changed"
    else:
        outcome = "unchanged"
    size = f"{page.shape[1]}x{page.shape[0]} {'RGB' if page.ndim == 3 else 'L'}"
    cells = [f"{value:.3f}" if value is not None else "-" for value in figures]
    return [name, size, *cells, outcome]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per step and page; the median is printed")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (cv2.setNumThreads)")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)

    colour = load("quyet-dinh-p2.png")
    pages = {
        "sample, grey": load("quyet-dinh-p1.png"),
        "sample, colour": colour,
        "blank back, colour": testpages.blank_scan(1),
        "on dark background, tilted 2°": testpages.on_dark_background(colour.copy(), 1, angle=2.0),
    }
    print(f"# {platform.machine()}, {platform.processor() or 'unknown CPU'}, OpenCV {cv2.__version__}, {args.threads} thread(s)")
    print(f"# seconds per page, median of {args.repeat} runs")
    header = ["page", "pixels", "blank check", "crop", "deskew", "clean_page", "PNG write", "result"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, page in pages.items():
        print("| " + " | ".join(measure(name, page, args.repeat)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
