"""Recognized documents without a scanner or OCR models, for the search and duplicate tests.

:func:`recognize_text` journals a job whose pages are already recognized
(an OCR JSON file per page, as the OCR step writes it) and runs the real
:meth:`Pipeline.recognize`, which then only extracts the fields, indexes the
text and runs the duplicate check.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from sohoa.config import Config, parse_config
from sohoa.fsutil import sha256_file, write_atomic
from sohoa.journal import Job, Journal
from sohoa.pipeline import Pipeline
from sohoa.testbed.demo import SAMPLES_DIR

LINE_CONFIDENCE = 0.95
PAGE_SIZE = (64, 64)


def sample_text(document: str) -> list[str]:
    """Return the ground-truth text of each page of a sample document, in page order."""
    return [path.read_text(encoding="utf-8") for path in sorted(SAMPLES_DIR.glob(f"{document}-p*.txt"))]


def pipeline_config(data_dir: Path) -> Config:
    """Return a config whose journal and spool live in ``data_dir``; the other services are never used."""
    return parse_config(
        {
            "box": {
                "site": "test",
                "device": "box-01",
                "unit": "Sở Giáo dục và Đào tạo",
                "operator": "Nguyễn Văn An",
                "agency_code": "H31.01",
                "data_dir": str(data_dir),
            },
            "scanner": {"device": "pnm:0"},
            "signing": {"pkcs11_module": "/usr/lib/softhsm/libsofthsm2.so", "token_label": "unused", "key_id": "01"},
            "upload": {"url": "http://127.0.0.1:9"},
        }
    )


def text_pipeline(config: Config, journal: Journal) -> Pipeline:
    """Return a pipeline that can only recognize pages that already have their OCR file."""

    def no_ocr():
        raise AssertionError("the pages are already recognized; the OCR engine must not load")

    return Pipeline(config, journal, scanner=None, ocr=no_ocr, signer=None, archive=None)


def recognize_text(pipeline: Pipeline, pages: Sequence[str]) -> Job:
    """Journal a captured job with one recognized page per text, then run the recognize step on it."""
    journal = pipeline.journal
    job = journal.create_job()
    job_dir = pipeline.job_dir(job.id)
    for seq, text in enumerate(pages, start=1):
        image_path = job_dir / f"page-{seq:04d}.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", PAGE_SIZE, 255).save(image_path)
        journal.add_page(job.id, seq, image_path, sha256_file(image_path), PAGE_SIZE[0], PAGE_SIZE[1], 300)
        ocr_path = job_dir / "ocr" / f"page-{seq:04d}.json"
        write_atomic(ocr_path, json.dumps(_page_record(text), ensure_ascii=False).encode("utf-8"))
        journal.set_page_recognized(job.id, seq, ocr_path)
    job = journal.set_state(job.id, "captured")
    return pipeline.recognize(job)


def _page_record(text: str) -> dict:
    lines = [line for line in text.splitlines() if line.strip()]
    return {
        "width": PAGE_SIZE[0],
        "height": PAGE_SIZE[1],
        "lines": [{"text": line, "box": [0, index, PAGE_SIZE[0], index + 1], "confidence": LINE_CONFIDENCE} for index, line in enumerate(lines)],
    }
