"""A capture profile's document type fills the type the recognizer is unsure of, and never replaces a sure one."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from sohoa.config import ProfileConfig
from sohoa.fsutil import sha256_file
from sohoa.journal import Journal
from sohoa.ocr import OcrEngine
from sohoa.pipeline import Pipeline
from sohoa.testbed.search import pipeline_config

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples" / "pages"
FONT = "/usr/share/fonts/truetype/noto/NotoSerif-Regular.ttf"
DPI = 300


@pytest.fixture(scope="module")
def engine() -> OcrEngine:
    return OcrEngine.load(pipeline_config(Path("/nonexistent")).ocr.models_dir, threads=2)


def profile_pipeline(tmp_path: Path, engine: OcrEngine) -> Pipeline:
    config = pipeline_config(tmp_path / "data")
    config = config.model_copy(update={"profiles": {"vanbang": ProfileConfig(label="Văn bằng", type_code="VB")}})
    journal = Journal(config.journal_path, manifests_dir=config.spool_dir)
    return Pipeline(config, journal, scanner=None, ocr=lambda: engine, signer=None, archive=None)


def page_without_type(path: Path) -> Path:
    """Write an A4 page at 300 dpi whose text names no document type."""
    image = Image.new("L", (2480, 3508), 255)
    font = ImageFont.truetype(FONT, 50)
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(("Họ và tên: Nguyễn Văn An", "Ngày sinh: 12/03/1990", "Xếp loại: Khá")):
        draw.text((300, 600 + row * 120), line, fill=0, font=font)
    image.save(path, dpi=(DPI, DPI))
    return path


def captured_job(pipeline: Pipeline, page: Path, profile: str | None):
    journal = pipeline.journal
    job = journal.create_job(profile=profile, origin="button")
    with Image.open(page) as image:
        width, height = image.size
    journal.add_page(job.id, 1, page, sha256_file(page), width, height, DPI)
    return journal.set_state(job.id, "captured")


def test_profile_type_fills_unsure_type(tmp_path, engine):
    pipeline = profile_pipeline(tmp_path, engine)
    job = captured_job(pipeline, page_without_type(tmp_path / "page.png"), "vanbang")

    job = pipeline.recognize(job)

    assert job.fields["TypeName"]["value"] == "Bằng tốt nghiệp"
    assert job.declared["type_check"] == {"declared": "VB", "recognized": None, "result": "declared", "source": "profile"}
    assert pipeline.document_metadata(job)["FieldConfidence"]["TypeName"] == "confirmed"
    assert pipeline.upload_metadata(job)["x_type_check"]["source"] == "profile"
    assert "x_sheet" not in pipeline.upload_metadata(job)


def test_profile_type_keeps_sure_recognized_type(tmp_path, engine):
    pipeline = profile_pipeline(tmp_path, engine)
    job = captured_job(pipeline, SAMPLES_DIR / "quyet-dinh-p1.png", "vanbang")

    job = pipeline.recognize(job)

    assert job.fields["TypeName"]["value"].lower() == "quyết định"
    assert job.declared["type_check"]["result"] == "conflict"
    assert pipeline.document_metadata(job)["FieldConfidence"]["TypeName"] == "extracted"


def test_no_profile_leaves_type_unsure(tmp_path, engine):
    pipeline = profile_pipeline(tmp_path, engine)
    job = captured_job(pipeline, page_without_type(tmp_path / "page.png"), None)

    job = pipeline.recognize(job)

    assert not job.fields["TypeName"].get("sure")
    assert job.declared is None
    assert pipeline.document_metadata(job)["FieldConfidence"]["TypeName"] == "unsure"
