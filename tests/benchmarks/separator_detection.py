"""Time sheet detection and the blank-back measure on sample pages and printed sheets.

Every scanned page goes through :func:`sohoa.separator.detect_sheet` while
separator sheets are on, so its cost is added to each page of a batch. The
script rasterizes a short and a long cover sheet at 200 and 300 dpi with
pdftoppm and times detection on them and on the sample pages.

Run from the repository root::

    PYTHONPATH=daemon .venv/bin/python tests/benchmarks/separator_detection.py [--repeat 5]

The script prints a Markdown table with the median time per page, the
detection result and the page clean-up's ink ratio.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy
from PIL import Image
from sohoa.cleanup import is_blank
from sohoa.separator import Sheet, detect_sheet, new_sheet_id, render_sheets

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "pages"


def printed_sheets(folder: Path) -> list[tuple[str, Path]]:
    """Return (label, image) pairs for a short and a long cover sheet at 200 and 300 dpi."""
    short = Sheet(kind="separator", sheet_id=new_sheet_id())
    long = Sheet(
        kind="cover",
        sheet_id=new_sheet_id(),
        profile="a" * 40,
        type_code="GCN",
        operator="Nguyễn Thị Hồng Nhung Trần Văn Bình Lê Thị Ánh Tuyết Phạm Hữu Đức",
        expected_pages=10000,
    )
    images = []
    for label, sheet in (("short sheet", short), ("long sheet", long)):
        pdf = folder / f"{label.replace(' ', '-')}.pdf"
        render_sheets([sheet], pdf)
        for dpi in (200, 300):
            stem = folder / f"{pdf.stem}-{dpi}"
            subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-png", "-singlefile", str(pdf), str(stem)], check=True)
            images.append((f"{label}, {dpi} dpi", stem.with_suffix(".png")))
    return images


def median_seconds(image: Image.Image, repeat: int) -> tuple[float, object]:
    times = []
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = detect_sheet(image)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="detections per page; the median is printed")
    args = parser.parse_args()

    print(f"Machine: {platform.machine()}, {platform.processor() or 'unknown CPU'}, Python {platform.python_version()}")
    print()
    print("| Page | Size (px) | Detection, median (s) | Result | Ink ratio |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="sohoa-sheet-bench-") as folder:
        pages = [(path.stem, path) for path in sorted(SAMPLES.glob("*.png"))] + printed_sheets(Path(folder))
        for label, path in pages:
            with Image.open(path) as image:
                image.load()
                seconds, result = median_seconds(image, args.repeat)
                kind = result.kind if result is not None else "page"
                print(f"| {label} | {image.width}x{image.height} | {seconds:.3f} | {kind} | {ink_ratio(image):.5f} |")
    return 0



def ink_ratio(image: Image.Image) -> float:
    """Return the page clean-up's ink ratio of ``image``, the measure that decides a blank back."""
    dpi = float(image.info.get("dpi", (300, 300))[0])
    return is_blank(numpy.asarray(image.convert("L")), dpi).ink_ratio


if __name__ == "__main__":
    raise SystemExit(main())
