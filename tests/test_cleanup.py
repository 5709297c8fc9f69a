"""Page clean-up on real page images: blank backs dropped, near-blank pages kept, skew and borders removed.

The sample pages in samples/pages/ are rendered administrative pages degraded
like scans. Blank and near-blank pages are drawn with OpenCV on a scan-like
blank page (shading, paper texture, sensor noise, dust, edge shadow), see
:mod:`sohoa.testbed.pages`.
"""

from __future__ import annotations

import json
import re
import subprocess
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sohoa import cleanup
from sohoa.errors import AllPagesBlankError
from sohoa.fsutil import sha256_file
from sohoa.journal import Journal
from sohoa.ocr import OcrEngine
from sohoa.pipeline import Pipeline
from sohoa.testbed import pages as testpages
from sohoa.testbed.demo import SAMPLES_DIR, sample_pages
from sohoa.testbed.search import pipeline_config

REPO = Path(__file__).resolve().parents[1]
DPI = 300
# How close a deskewed page's remaining skew must be to level, in degrees.
SKEW_TOLERANCE = 0.3
PHRASES = ("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "QUYẾT ĐỊNH", "SỞ GIÁO DỤC VÀ ĐÀO TẠO")


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)


def _turn(page: np.ndarray, degrees: float) -> np.ndarray:
    """Turn ``page`` counterclockwise on a canvas of the same size, filled with white, as a skewed feed does."""
    image = Image.fromarray(page)
    fill = 255 if image.mode == "L" else (255, 255, 255)
    return np.asarray(image.rotate(degrees, resample=Image.BICUBIC, fillcolor=fill))


@pytest.fixture(scope="module")
def engine() -> OcrEngine:
    return OcrEngine.load(pipeline_config(Path("/nonexistent")).ocr.models_dir, threads=2)


# blank pages


@pytest.mark.parametrize("colour", [True, False], ids=["colour", "grey"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_blank_scan_is_blank(seed, colour):
    verdict = cleanup.is_blank(testpages.blank_scan(seed, colour=colour), DPI)
    assert verdict.blank, verdict.describe()
    assert verdict.marks == 0
    assert verdict.specks > 0, "the generated page must carry dust for the test to mean anything"


@pytest.mark.parametrize("angle", [0.0, 1.5])
def test_blank_scan_on_dark_background_is_blank(angle):
    page = testpages.on_dark_background(testpages.blank_scan(4), 4, angle=angle)
    verdict = cleanup.is_blank(page, DPI)
    assert verdict.blank, verdict.describe()


def test_noisier_paper_is_blank():
    verdict = cleanup.is_blank(testpages.blank_scan(5, noise=7.0, paper_level=225), DPI)
    assert verdict.blank, verdict.describe()


NEAR_BLANK = {
    "signature": lambda page: testpages.draw_signature(page, 11),
    "faint stamp": testpages.draw_faint_stamp,
    "page number": testpages.draw_page_number,
    "single digit 1": lambda page: testpages.draw_page_number(page, "1"),
    "pencil mark": testpages.draw_pencil_mark,
    "very light pencil mark": lambda page: testpages.draw_pencil_mark(page, darkness=28),
}


@pytest.mark.parametrize("colour", [True, False], ids=["colour", "grey"])
@pytest.mark.parametrize("mark", sorted(NEAR_BLANK))
def test_near_blank_page_is_kept(mark, colour):
    page = NEAR_BLANK[mark](testpages.blank_scan(21, colour=colour))
    verdict = cleanup.is_blank(page, DPI)
    assert not verdict.blank, verdict.describe()
    # Either the ink in total keeps the page, and groups are not counted, or a group of ink does.
    assert verdict.marks is None or verdict.marks >= 1, verdict.describe()


@pytest.mark.parametrize("mark", ["page number", "pencil mark", "very light pencil mark"])
def test_single_small_mark_keeps_page(mark):
    verdict = cleanup.is_blank(NEAR_BLANK[mark](testpages.blank_scan(23)), DPI)
    assert verdict.ink_ratio <= cleanup.MAX_BLANK_INK_RATIO, "this case must test the mark, not the ink in total"
    assert verdict.marks == 1, verdict.describe()
    assert not verdict.blank


@pytest.mark.parametrize("mark", ["signature", "page number", "pencil mark"])
def test_near_blank_page_on_dark_background_is_kept(mark):
    page = testpages.on_dark_background(NEAR_BLANK[mark](testpages.blank_scan(22)), 5, angle=-2.0)
    verdict = cleanup.is_blank(page, DPI)
    assert not verdict.blank, verdict.describe()


@pytest.mark.parametrize("path", sorted(SAMPLES_DIR.glob("*.png")), ids=lambda path: path.stem)
def test_sample_page_is_not_blank(path):
    verdict = cleanup.is_blank(_load(path), DPI)
    assert not verdict.blank, verdict.describe()


def test_bilevel_blank_and_marked_pages():
    blank = Image.fromarray(testpages.blank_scan(6, colour=False)).point(lambda level: 255 if level > 128 else 0).convert("1")
    marked = Image.fromarray(testpages.draw_page_number(testpages.blank_scan(6, colour=False))).convert("1")

    assert cleanup.clean_page(blank, DPI, remove_blank=True, crop=True, straighten=True).dropped
    result = cleanup.clean_page(marked, DPI, remove_blank=True, crop=True, straighten=True)
    assert not result.dropped
    assert result.image.mode == "1"


def test_blank_page_kept_when_removal_is_off():
    result = cleanup.clean_page(testpages.to_image(testpages.blank_scan(7)), DPI, remove_blank=False, crop=True, straighten=True)
    assert not result.dropped
    assert result.verdict is None


# deskew


@pytest.mark.parametrize("name", ["quyet-dinh-p1", "giay-phep-p1"])
@pytest.mark.parametrize("degrees", [2.5, -4.0, 8.0])
def test_skew_estimate_follows_known_turn(name, degrees):
    page = _load(SAMPLES_DIR / f"{name}.png")
    # The sample pages are themselves scanned with a slight skew, so the known turn is compared as a difference.
    base = cleanup.estimate_skew(page, DPI).angle
    turned = cleanup.estimate_skew(_turn(page, degrees), DPI).angle
    assert base is not None
    assert turned is not None
    assert turned == pytest.approx(base - degrees, abs=SKEW_TOLERANCE)


@pytest.mark.parametrize("degrees", [3.0, -6.0])
def test_deskew_levels_page_and_keeps_size_and_mode(degrees):
    original = _load(SAMPLES_DIR / "quyet-dinh-p1.png")
    straightened, estimate, turned = cleanup.deskew(_turn(original, degrees), DPI)

    assert turned
    assert straightened.shape == original.shape
    assert straightened.dtype == original.dtype
    remaining = cleanup.estimate_skew(straightened, DPI)
    assert remaining.angle is not None
    assert abs(remaining.angle) <= SKEW_TOLERANCE


def test_deskew_skips_turn_beyond_limit():
    page = _turn(_load(SAMPLES_DIR / "quyet-dinh-p1.png"), 20.0)
    result, estimate, turned = cleanup.deskew(page, DPI)
    assert not turned
    assert estimate.angle is None
    assert result is page


def test_deskew_skips_page_without_lines():
    page = testpages.draw_signature(testpages.blank_scan(8), 3)
    result, estimate, turned = cleanup.deskew(page, DPI)
    assert not turned
    assert estimate.angle is None


def test_deskewed_page_reads(engine):
    page = _load(SAMPLES_DIR / "quyet-dinh-p1.png")
    result = cleanup.clean_page(Image.fromarray(_turn(page, 5.0)), DPI, remove_blank=True, crop=True, straighten=True)
    assert result.deskewed
    text = _fold(engine.recognize(result.image).text)
    for phrase in PHRASES:
        assert _fold(phrase) in text, phrase


# crop


def test_crop_removes_dark_background_and_keeps_every_pixel():
    original = _load(SAMPLES_DIR / "quyet-dinh-p2.png")
    border_mm = 8.0
    scanned = testpages.on_dark_background(original.copy(), 9, border_mm=border_mm)

    cropped, sheet = cleanup.crop_to_paper(scanned, DPI)

    assert sheet is not None
    margin = testpages.mm(cleanup.CROP_MARGIN_MM, DPI)
    edge = testpages.mm(1.0, DPI)
    height, width = original.shape[:2]
    assert abs(cropped.shape[0] - (height + 2 * margin)) <= edge
    assert abs(cropped.shape[1] - (width + 2 * margin)) <= edge
    # Everything of the sheet more than 1 mm inside its edge is unchanged.
    top, left = testpages.mm(border_mm, DPI) - (sheet.box[1] - margin), testpages.mm(border_mm, DPI) - (sheet.box[0] - margin)
    inner = cropped[top + edge : top + height - edge, left + edge : left + width - edge]
    assert np.array_equal(inner, original[edge : height - edge, edge : width - edge])
    # No dark background is left around it.
    outline = np.concatenate([cropped[:edge].ravel(), cropped[-edge:].ravel(), cropped[:, :edge].ravel(), cropped[:, -edge:].ravel()])
    assert outline.min() > 150


def test_crop_of_tilted_sheet_keeps_text(engine):
    original = _load(SAMPLES_DIR / "quyet-dinh-p1.png")
    scanned = testpages.on_dark_background(original.copy(), 10, border_mm=10.0, angle=3.0)
    result = cleanup.clean_page(Image.fromarray(scanned), DPI, remove_blank=True, crop=True, straighten=True)

    assert result.sheet is not None
    assert result.deskewed
    cleaned = np.asarray(result.image)
    assert cleaned.shape[0] < scanned.shape[0]
    assert cleaned.shape[1] < scanned.shape[1]
    assert cleaned[:20].min() > 150, "dark background left at the top"
    assert cleaned[:, :20].min() > 150, "dark background left at the left"
    text = _fold(engine.recognize(result.image).text)
    for line in (SAMPLES_DIR / "quyet-dinh-p1.txt").read_text(encoding="utf-8").splitlines()[:3]:
        assert _fold(line) in text, line


def test_crop_leaves_page_without_dark_background():
    page = _load(SAMPLES_DIR / "giay-phep-p1.png")
    cropped, sheet = cleanup.crop_to_paper(page, DPI)
    assert sheet is None
    assert cropped is page


# the pipeline


def _pipeline(tmp_path: Path, engine: OcrEngine | None, **capture) -> Pipeline:
    config = pipeline_config(tmp_path / "data")
    if capture:
        config = config.model_copy(update={"capture": config.capture.model_copy(update=capture)})
    journal = Journal(config.journal_path, manifests_dir=config.spool_dir)

    def ocr():
        if engine is None:
            raise AssertionError("OCR must not run in this test")
        return engine

    return Pipeline(config, journal, scanner=None, ocr=ocr, signer=None, archive=None)


def _captured_job(pipeline: Pipeline, images: list[np.ndarray]):
    journal = pipeline.journal
    job = journal.create_job()
    batch = pipeline.job_dir(job.id) / "batch-01"
    batch.mkdir(parents=True)
    for seq, page in enumerate(images, start=1):
        path = batch / f"page-{seq:04d}.png"
        testpages.save_png(page, path)
        journal.add_page(job.id, seq, path, sha256_file(path), page.shape[1], page.shape[0], DPI)
    return journal.set_state(job.id, "captured")


def test_all_blank_job_fails_and_keeps_pages(tmp_path):
    pipeline = _pipeline(tmp_path, None)
    job = _captured_job(pipeline, [testpages.blank_scan(31), testpages.blank_scan(32, colour=False)])
    scans = {page.seq: (page.path, page.sha256) for page in pipeline.journal.pages(job.id)}

    with pytest.raises(AllPagesBlankError) as caught:
        pipeline.recognize(job)

    assert caught.value.code == "all_pages_blank"
    assert "đều trắng" in caught.value.user_message()
    pages = pipeline.journal.pages(job.id)
    assert [page.dropped for page in pages] == [True, True]
    assert all(page.drop_reason.startswith("blank: ink") for page in pages)
    for seq, (path, digest) in scans.items():
        assert sha256_file(Path(path)) == digest, f"scan of page {seq} changed"
    manifest = json.loads((pipeline.job_dir(job.id) / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["pages_dropped"] == [1, 2]


def test_clean_is_not_repeated_after_restart(tmp_path, monkeypatch):
    pipeline = _pipeline(tmp_path, None)
    skewed = testpages.draw_page_number(testpages.blank_scan(33))
    job = _captured_job(pipeline, [testpages.blank_scan(34), skewed])

    kept = pipeline.clean(job)
    assert [page.seq for page in kept] == [2]
    assert kept[0].clean_path is not None

    def fail(*args, **kwargs):
        raise AssertionError("a page already cleaned or dropped was cleaned again")

    monkeypatch.setattr(cleanup, "clean_page", fail)
    again = pipeline.clean(job)
    assert [page.seq for page in again] == [2]


def test_page_read_before_cleanup_keeps_its_scan(tmp_path, monkeypatch):
    from sohoa.fsutil import write_atomic

    pipeline = _pipeline(tmp_path, None)
    job = _captured_job(pipeline, [testpages.on_dark_background(testpages.draw_page_number(testpages.blank_scan(37)), 2)])
    (page,) = pipeline.journal.pages(job.id)
    ocr_path = pipeline.job_dir(job.id) / "ocr" / "page-0001.json"
    write_atomic(ocr_path, json.dumps({"width": page.width, "height": page.height, "lines": []}).encode())
    pipeline.journal.set_page_recognized(job.id, 1, ocr_path)

    def fail(*args, **kwargs):
        raise AssertionError("a page whose OCR result refers to its scan was cleaned")

    monkeypatch.setattr(cleanup, "clean_page", fail)
    (kept,) = pipeline.clean(job)
    assert kept.clean_path == kept.path


def test_cleanup_settings_off_keep_scans(tmp_path):
    pipeline = _pipeline(tmp_path, None, remove_blank_pages=False, deskew=False, crop=False)
    job = _captured_job(pipeline, [testpages.on_dark_background(testpages.blank_scan(35), 1)])
    kept = pipeline.clean(job)
    assert len(kept) == 1
    assert kept[0].clean_path == kept[0].path


def test_upside_down_page_is_upright_in_pdf(tmp_path, engine):
    pipeline = _pipeline(tmp_path, engine)
    upright = _load(SAMPLES_DIR / "quyet-dinh-p1.png")
    job = _captured_job(pipeline, [np.ascontiguousarray(np.rot90(upright, 2)), testpages.blank_scan(36)])

    job = pipeline.recognize(job)
    job = pipeline.build(job)

    pages = pipeline.journal.pages(job.id)
    assert pages[1].dropped
    assert json.loads(Path(pages[0].ocr_path).read_text(encoding="utf-8"))["rotation"] == 0
    assert Path(pages[0].clean_path) != Path(pages[0].path)
    assert pipeline.document_metadata(job)["PageAmount"] == 1

    pdf = Path(job.pdf_path)
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Pages:\s+1$", info, re.MULTILINE), info
    text = _fold(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout)
    for phrase in PHRASES:
        assert _fold(phrase) in text, phrase

    # The page as drawn matches the upright scan, not the one turned by 180 degrees.
    prefix = tmp_path / "render"
    subprocess.run(["pdftoppm", "-r", "30", "-gray", "-png", "-singlefile", str(pdf), str(prefix)], check=True)
    with Image.open(f"{prefix}.png") as rendered:
        drawn = np.asarray(rendered.convert("L"), dtype=np.float32)
    reference = np.asarray(Image.fromarray(upright).convert("L").resize((drawn.shape[1], drawn.shape[0])), dtype=np.float32)
    upright_error = float(np.abs(drawn - reference).mean())
    turned_error = float(np.abs(drawn - reference[::-1, ::-1]).mean())
    assert upright_error < turned_error / 2, (upright_error, turned_error)


def test_daemon_drops_blank_back_between_pages(testbed, start_daemon, tmp_path):
    from sohoa.testbed.demo import load_feeder, press_button, wait_for_state
    from sohoa.testbed.mosquitto import MessageRecorder

    blank_back = tmp_path / "blank-back.png"
    testpages.save_png(testpages.blank_scan(41), blank_back)
    first, second = sample_pages("quyet-dinh")
    load_feeder(testbed.feeder_dir, [first, blank_back, second])
    recorder = MessageRecorder(testbed.broker.host, testbed.broker.port, "sohoa/demo/box-01/#")
    try:
        daemon = start_daemon()
        recorder.wait_for(lambda m: m.topic.endswith("/availability") and m.payload == b"online", timeout=10)
        press_button(daemon)
        state = wait_for_state(daemon, lambda s: s["totals"]["documents_uploaded"] >= 1 or s["state"] == "alert", 600)
        assert state is not None, "no document reached the archive in time"
        assert state["state"] != "alert", state
        finished = recorder.wait_for(
            lambda m: m.topic.endswith("/event") and json.loads(m.payload).get("event") == "job_finished", timeout=10
        )
    finally:
        recorder.stop()

    journal = Journal(testbed.config().journal_path)
    try:
        (job,) = journal.jobs_in("uploaded")
        pages = journal.pages(job.id)
    finally:
        journal.close()
    assert job.page_count == 3
    assert [page.dropped for page in pages] == [False, True, False]
    assert pages[1].drop_reason.startswith("blank: ")
    assert Path(pages[1].path).exists(), "the scan of a dropped page must stay on disk"
    assert json.loads(finished.payload)["pages_dropped"] == 1

    info = subprocess.run(["pdfinfo", job.signed_path], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Pages:\s+2$", info, re.MULTILINE), info
    (record,) = testbed.receiver.records()
    assert int(record["metadata"]["PageAmount"]) == 2


# recovery after a crash


def _recognized_job_with_dropped_page(config):
    """Journal a recognized job of two small pages: page 1 cleaned and read, page 2 dropped as blank."""
    from sohoa.fsutil import write_atomic

    config.spool_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(config.journal_path, manifests_dir=config.spool_dir)
    job = journal.create_job()
    folder = config.spool_dir / job.id
    for seq in (1, 2):
        path = folder / "batch-01" / f"page-{seq:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (40, 60), 200).save(path, dpi=(DPI, DPI))
        journal.add_page(job.id, seq, path, sha256_file(path), 40, 60, DPI)
    clean = folder / "clean" / "page-0001.png"
    clean.parent.mkdir(parents=True)
    Image.new("L", (38, 58), 200).save(clean, dpi=(DPI, DPI))
    journal.set_page_cleaned(job.id, 1, clean)
    ocr_path = folder / "ocr" / "page-0001.json"
    write_atomic(ocr_path, json.dumps({"width": 38, "height": 58, "lines": []}).encode())
    journal.set_page_recognized(job.id, 1, ocr_path)
    journal.set_page_dropped(job.id, 2, "blank: test")
    journal.set_state(job.id, "recognized")
    journal.close()
    return job


def test_recovery_keeps_recognized_job_with_dropped_page(tmp_path):
    from sohoa.recovery import open_journal

    config = pipeline_config(tmp_path / "data")
    job = _recognized_job_with_dropped_page(config)

    journal, _report = open_journal(config)
    try:
        assert journal.get_job(job.id).state == "recognized"
        assert [page.state for page in journal.pages(job.id)] == ["recognized", "captured"]
    finally:
        journal.close()


def test_recovery_cleans_again_when_cleaned_image_is_lost(tmp_path):
    from sohoa.recovery import open_journal

    config = pipeline_config(tmp_path / "data")
    job = _recognized_job_with_dropped_page(config)
    (config.spool_dir / job.id / "clean" / "page-0001.png").unlink()

    journal, _report = open_journal(config)
    try:
        assert journal.get_job(job.id).state == "captured"
        first, second = journal.pages(job.id)
        assert first.clean_path is None
        assert first.ocr_path is None
        assert second.dropped
    finally:
        journal.close()


def test_rebuilt_journal_keeps_cleaned_and_dropped_pages(tmp_path):
    from sohoa.recovery import open_journal

    config = pipeline_config(tmp_path / "data")
    job = _recognized_job_with_dropped_page(config)
    config.journal_path.write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        config.journal_path.with_name(config.journal_path.name + suffix).unlink(missing_ok=True)

    journal, report = open_journal(config)
    try:
        assert report.rebuilt
        first, second = journal.pages(job.id)
        assert first.clean_path == str(config.spool_dir / job.id / "clean" / "page-0001.png")
        assert first.state == "recognized"
        assert not first.dropped
        assert second.dropped
        assert second.drop_reason == "blank: test"
    finally:
        journal.close()


def test_crop_keeps_printed_frame():
    import cv2

    page = _load(SAMPLES_DIR / "giay-phep-p1.png").copy()
    # A dark frame 8 mm wide, 2 mm inside the paper's edge, as on some certificates.
    inset, thickness = testpages.mm(2.0, DPI), testpages.mm(8.0, DPI)
    height, width = page.shape[:2]
    corner = inset + thickness // 2
    cv2.rectangle(page, (corner, corner), (width - corner, height - corner), (20, 20, 90), thickness)

    cropped, sheet = cleanup.crop_to_paper(page, DPI)

    assert sheet is None, "a frame printed inside the paper's margin was taken for the scanner background"
    assert cropped is page
