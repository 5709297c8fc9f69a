"""Compare sohoa's OCR with Tesseract 5 ``vie`` on rendered Vietnamese pages.

The script renders its own A4 pages at 300 dpi in Liberation Serif (the
metrics of Times New Roman): several seeded documents, each clean, degraded
like an office scan, and degraded like a poor photocopy with a red seal over
the signature block. It then runs sohoa (int8 models from ``models/``) and
``tesseract -l vie --psm 3`` on the same page files, at 1, 2 and 4 threads,
each engine and thread count in its own child process, and prints one table.

Figures:

* CER (lines): line-matched character error rate. Each reference line is
  compared with its closest span of the page's output text, so it ignores
  reading order and two columns joined into one output line.
* CER (page): the whole page text against the reference in reading order
  (header left column, right column, title, body, recipients, signer).
  Lines out of order count as deletions and insertions.
* WER: line-matched word error rate, words being runs between spaces.
* Diacritics: share of reference letters with a tone or vowel mark (NFD has
  a combining mark) or a stroke (đ, Đ) that the output deleted or replaced,
  after the line-matched character alignment. The figure in brackets is the
  share replaced by the same base letter with other marks (ổ read as ố).
* s/page: wall time per page. For sohoa, decoding the PNG and recognition
  in a process that loaded the models once; the load time is printed apart.
  For Tesseract, one ``tesseract`` process per page, as a caller would run
  it, so its start and model load are included. Threads: onnxruntime's
  intra-op threads for sohoa, ``OMP_THREAD_LIMIT`` for Tesseract.
* CPU s/page: processor time (user and system) per page at 1 thread, the
  sohoa child's own and the sum of each ``tesseract`` process's. It varies
  less than wall time when other work shares the machine.
* Peak RSS: the largest resident set of the process doing the OCR, from
  ``VmHWM`` of the sohoa child itself (Python, libraries, models) and
  ``getrusage`` of the largest ``tesseract`` process.
* Models: the files the engine loads (sohoa's manifest entries; Tesseract's
  ``vie.traineddata``).

Run from the repository root::

    PYTHONPATH=daemon /tmp/venv/bin/python tests/benchmarks/ocr_benchmark.py [--documents 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "daemon"))

MODELS_DIR = REPO / "models"
TESSDATA_DIRS = (Path("/usr/share/tesseract-ocr/5/tessdata"), Path("/usr/share/tesseract-ocr/4.00/tessdata"))
QUALITIES = ("clean", "office scan", "poor copy")
THREAD_COUNTS = (1, 2, 4)
ENGINES = ("sohoa", "tesseract")
# Linux keeps a process's peak RSS across exec, so a child forked from a
# parent that holds rendered pages would report the parent's size. Pages are
# therefore rendered in a child too, and the parent imports no image library
# until every engine has run.
WORKERS = ("render", *ENGINES)
# A page that takes longer than this in Tesseract is counted as failed.
TESSERACT_TIMEOUT_SECONDS = 120


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=3, help="number of rendered documents; each gives 3 pages")
    parser.add_argument("--json", type=Path, help="also write every figure and page text to this file")
    parser.add_argument("--models", type=Path, default=MODELS_DIR, help="folder with sohoa's manifest.json and models (default: %(default)s)")
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--pages", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "render":
        render_pages(args.pages, args.documents)
        return 0
    if args.worker:
        if args.worker == "sohoa":
            result = run_sohoa(args.pages, args.threads, args.models)
        else:
            result = run_tesseract(args.pages, args.threads)
        json.dump(result, sys.stdout, ensure_ascii=False)
        return 0
    return run_benchmark(args.documents, args.json, args.models)


# --- pages -------------------------------------------------------------------


def document_bodies(count: int) -> list[tuple[tuple[str, ...], float]]:
    """Return (body paragraphs, font size in points) of each document; the first is the sample decision."""
    from sohoa.testbed.ocr import DECISION_BODY, EXTRA_BODY

    documents = [(DECISION_BODY, 13.0)]
    for index in range(1, count):
        rng = random.Random(2000 + index)
        body = tuple(rng.sample(EXTRA_BODY, k=8)) + tuple(rng.sample(DECISION_BODY[1:], k=3))
        documents.append((body, rng.choice((12.0, 13.0, 14.0))))
    return documents


def render_pages(folder: Path, documents: int) -> None:
    """Write every page as PNG into ``folder`` and list its file, quality and reference lines in ``pages.json``."""
    from sohoa.testbed.ocr import SIGNATURE_RIGHT, degrade_like_office_scan, degrade_like_poor_copy, render_decision_page

    pages = []
    for number, (body, size_pt) in enumerate(document_bodies(documents)):
        page = render_decision_page(body=body, size_pt=size_pt)
        title = next(line for line in page.lines if line.text == SIGNATURE_RIGHT[1])
        seal_center = ((title.box[0] + title.box[2]) // 2 - 120, title.box[3] + 40)
        images = {
            "clean": page.image,
            "office scan": degrade_like_office_scan(page.image, seed=100 + number),
            "poor copy": degrade_like_poor_copy(page.image, seed=200 + number, seal_center=seal_center),
        }
        for quality, image in images.items():
            path = folder / f"doc{number}-{quality.replace(' ', '-')}.png"
            image.save(path, dpi=(300, 300))
            pages.append({"file": path.name, "quality": quality, "reference": [line.text for line in page.lines]})
    (folder / "pages.json").write_text(json.dumps(pages, ensure_ascii=False), encoding="utf-8")


# --- engines, each run in a child process --------------------------------------


def run_sohoa(folder: Path, threads: int, models_dir: Path) -> dict:
    from PIL import Image

    from sohoa.ocr import OcrEngine

    started = time.perf_counter()
    engine = OcrEngine.load(models_dir, threads=threads)
    load_seconds = time.perf_counter() - started

    outputs, seconds, cpu_seconds = [], [], []
    for page in json.loads((folder / "pages.json").read_text(encoding="utf-8")):
        started = time.perf_counter()
        cpu_started = time.process_time()
        with Image.open(folder / page["file"]) as image:
            result = engine.recognize(image)
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu_started)
        outputs.append([line.text for line in result.lines])
    return {
        "outputs": outputs,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "load_seconds": load_seconds,
        "peak_rss_mb": own_peak_rss_mb(),
    }


def own_peak_rss_mb() -> float:
    """Return this process's peak resident set (VmHWM), which, unlike ru_maxrss, starts afresh at exec."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_tesseract(folder: Path, threads: int) -> dict:
    environment = dict(os.environ, OMP_THREAD_LIMIT=str(threads))
    outputs, seconds, cpu_seconds = [], [], []
    for page in json.loads((folder / "pages.json").read_text(encoding="utf-8")):
        command = ["tesseract", str(folder / page["file"]), "stdout", "-l", "vie", "--psm", "3"]
        started = time.perf_counter()
        cpu_started = children_cpu_seconds()
        completed = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=TESSERACT_TIMEOUT_SECONDS, check=True
        )
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(children_cpu_seconds() - cpu_started)
        outputs.append([line for line in completed.stdout.splitlines() if line.strip()])
    # The tesseract children are forked from this small process, so their ru_maxrss is their own.
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "outputs": outputs,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "load_seconds": 0.0,
        "peak_rss_mb": peak_kib / 1024,
    }


def children_cpu_seconds() -> float:
    """Return the user and system time of this process's ended children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_worker(worker: str, folder: Path, threads: int = 1, documents: int = 0, models_dir: Path = MODELS_DIR) -> dict:
    command = [sys.executable, __file__, "--worker", worker, "--pages", str(folder), "--models", str(models_dir)]
    command += ["--threads", str(threads), "--documents", str(documents)]
    environment = dict(os.environ, PYTHONPATH=str(REPO / "daemon"))
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"{worker} worker with {threads} thread(s) failed:\n{completed.stderr}")
    return json.loads(completed.stdout) if completed.stdout.strip() else {}


def model_megabytes(engine: str, models_dir: Path) -> float:
    if engine == "sohoa":
        manifest = json.loads((models_dir / "manifest.json").read_text(encoding="utf-8"))
        files = [model["file"] for model in manifest["models"]]
        files += [model["charset_file"] for model in manifest["models"] if model.get("charset_file")]
        return sum((models_dir / name).stat().st_size for name in files) / 1e6
    for directory in TESSDATA_DIRS:
        if (directory / "vie.traineddata").is_file():
            return (directory / "vie.traineddata").stat().st_size / 1e6
    return float("nan")


# --- figures -----------------------------------------------------------------


def score(pages: list[dict], outputs: list[list[str]], quality: str) -> dict:
    """Sum the line-matched counts and average the page CER over the pages of one quality."""
    from sohoa.testbed.ocr import line_matched_errors, page_cer

    totals = {"characters": 0, "character_errors": 0, "words": 0, "word_errors": 0}
    totals.update(diacritic_letters=0, diacritic_errors=0, wrong_mark_errors=0)
    page_rates = []
    for page, output in zip(pages, outputs):
        if page["quality"] != quality:
            continue
        counts = line_matched_errors(page["reference"], output)
        for name in totals:
            totals[name] += getattr(counts, name)
        page_rates.append(page_cer(page["reference"], output))
    return {
        "cer_lines": totals["character_errors"] / max(1, totals["characters"]),
        "cer_page": sum(page_rates) / max(1, len(page_rates)),
        "wer": totals["word_errors"] / max(1, totals["words"]),
        "diacritics": totals["diacritic_errors"] / max(1, totals["diacritic_letters"]),
        "wrong_marks": totals["wrong_mark_errors"] / max(1, totals["diacritic_letters"]),
        "counts": totals,
    }


def seconds_per_page(pages: list[dict], seconds: list[float], quality: str) -> float:
    times = [value for page, value in zip(pages, seconds) if page["quality"] == quality]
    return sum(times) / max(1, len(times))


def machine_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPU(s), {platform.machine()}, Python {platform.python_version()}"


def engine_versions() -> dict[str, str]:
    import onnxruntime

    tesseract = subprocess.run(["tesseract", "--version"], capture_output=True, text=True, check=False)
    first_line = (tesseract.stdout or tesseract.stderr).splitlines()[0] if (tesseract.stdout or tesseract.stderr) else "?"
    return {"onnxruntime": onnxruntime.__version__, "tesseract": first_line.strip()}


def run_benchmark(documents: int, json_path: Path | None, models_dir: Path) -> int:
    with tempfile.TemporaryDirectory(prefix="sohoa-ocr-benchmark-") as work:
        folder = Path(work)
        run_worker("render", folder, documents=documents)
        pages = json.loads((folder / "pages.json").read_text(encoding="utf-8"))
        runs = {
            (engine, threads): run_worker(engine, folder, threads, models_dir=models_dir)
            for engine in ENGINES
            for threads in THREAD_COUNTS
        }

    rows = []
    for engine in ENGINES:
        single, double, multi = runs[(engine, 1)], runs[(engine, 2)], runs[(engine, 4)]
        for quality in QUALITIES:
            figures = score(pages, single["outputs"], quality)
            rows.append(
                {
                    "engine": engine,
                    "quality": quality,
                    **figures,
                    "seconds_1_thread": seconds_per_page(pages, single["seconds"], quality),
                    "seconds_2_threads": seconds_per_page(pages, double["seconds"], quality),
                    "seconds_4_threads": seconds_per_page(pages, multi["seconds"], quality),
                    "cpu_seconds_1_thread": seconds_per_page(pages, single["cpu_seconds"], quality),
                    "peak_rss_mb": max(run["peak_rss_mb"] for run in (single, double, multi)),
                    "model_mb": model_megabytes(engine, models_dir),
                }
            )

    print_table(rows, len(pages), runs)
    if json_path:
        document = {
            "machine": machine_description(),
            "versions": engine_versions(),
            "pages": pages,
            "rows": rows,
            "runs": {f"{engine}-{threads}": run for (engine, threads), run in runs.items()},
        }
        json_path.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


def print_table(rows: list[dict], page_count: int, runs: dict) -> None:
    print(f"Machine: {machine_description()}")
    print(f"Versions: {engine_versions()}")
    print(f"Pages: {page_count} ({page_count // len(QUALITIES)} documents x {len(QUALITIES)} qualities), 300 dpi A4")
    print()
    header = (
        "| engine | quality | CER (lines) | CER (page) | WER | diacritics (wrong mark) "
        "| s/page 1 thread | CPU s/page 1 thread | s/page 2 threads | s/page 4 threads | peak RSS | models |"
    )
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    for row in rows:
        print(
            f"| {row['engine']} | {row['quality']} | {row['cer_lines']:.2%} | {row['cer_page']:.2%} | {row['wer']:.2%} "
            f"| {row['diacritics']:.2%} ({row['wrong_marks']:.2%}) | {row['seconds_1_thread']:.2f} "
            f"| {row['cpu_seconds_1_thread']:.2f} | {row['seconds_2_threads']:.2f} | {row['seconds_4_threads']:.2f} "
            f"| {row['peak_rss_mb']:.0f} MB | {row['model_mb']:.1f} MB |"
        )
    print()
    means = {key: sum(run["seconds"]) / len(run["seconds"]) for key, run in runs.items()}
    for engine in ENGINES:
        single = runs[(engine, 1)]
        mean_cpu = sum(single["cpu_seconds"]) / len(single["cpu_seconds"])
        per_thread = ", ".join(f"{means[(engine, threads)]:.2f} s/page at {threads} thread(s)" for threads in THREAD_COUNTS)
        print(f"{engine}: mean {per_thread}; {mean_cpu:.2f} s CPU per page at 1 thread; model load {single['load_seconds']:.2f} s (1 thread)")
    # The speed ratio: how many times faster sohoa is than Tesseract per page.
    ratios = ", ".join(f"{means[('tesseract', threads)] / means[('sohoa', threads)]:.2f}x at {threads} thread(s)" for threads in THREAD_COUNTS)
    best = min(means[("tesseract", threads)] for threads in THREAD_COUNTS) / min(means[("sohoa", threads)] for threads in THREAD_COUNTS)
    print(f"sohoa against tesseract: {ratios}; {best:.2f}x with each engine at its fastest thread count")

if __name__ == "__main__":
    sys.exit(main())
