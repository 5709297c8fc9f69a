"""Separator and cover sheets: the QR text, the printed PDF, splitting a batch fed through
libsane's pnm backend, the page-count check and recovery after a SIGKILL mid-split.

Sheet pages are the command's own PDF rasterized with pdftoppm, fed between the
sample pages, so detection reads what a scanner would deliver.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import qrcode
from PIL import Image, ImageDraw, ImageFont
from sohoa.cli import main
from sohoa.config import parse_config
from sohoa.journal import Journal
from sohoa.pipeline import CaptureRequest, Pipeline
from sohoa.recovery import open_journal
from sohoa.scanner import Scanner
from sohoa.separator import (
    Sheet,
    detect_sheet,
    encode_sheet,
    is_blank_page,
    new_sheet_id,
    parse_sheet,
    render_sheets,
)
from sohoa.splitting import apply_declared_type
from sohoa.testbed.pages import blank_scan

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples" / "pages"
DAEMON_DIR = REPO / "daemon"
SHEET_DPI = 200


# Page images


def rasterize(pdf: Path, output_stem: Path, page: int = 1, dpi: int = SHEET_DPI) -> Path:
    subprocess.run(
        ["pdftoppm", "-r", str(dpi), "-gray", "-png", "-singlefile", "-f", str(page), "-l", str(page), str(pdf), str(output_stem)],
        check=True,
    )
    return output_stem.with_suffix(".png")


def sheet_page(folder: Path, name: str, sheet: Sheet) -> Path:
    """Print ``sheet`` to PDF and rasterize it, as a scanner would read the printed sheet."""
    folder.mkdir(parents=True, exist_ok=True)
    pdf = folder / f"{name}.pdf"
    render_sheets([sheet], pdf)
    return rasterize(pdf, folder / name)


def blank_back(folder: Path, name: str) -> Path:
    """A blank back as a scanner reads it: shaded paper with texture, noise, dust and the sheet's edge shadow."""
    path = folder / f"{name}.png"
    Image.fromarray(blank_scan(7, dpi=SHEET_DPI, colour=False)).save(path, dpi=(SHEET_DPI, SHEET_DPI))
    return path


def page_with_foreign_qr(folder: Path, name: str) -> Path:
    """A sample page with a QR code that is not a sohoa sheet, as on many official documents."""
    image = Image.open(SAMPLES / "giay-phep-p1.png").convert("L")
    code = qrcode.make("https://dichvucong.gov.vn/p/home/dvc-tra-cuu-ho-so.html?ma=000.00.12.H31-240105-0001", box_size=8)
    image.paste(code.get_image().convert("L"), (1800, 150))
    path = folder / f"{name}.png"
    image.save(path, dpi=(300, 300))
    return path


def damaged_sheet_page(folder: Path, name: str) -> Path:
    """A printed sheet whose QR code is half torn off, so no decoder reads it."""
    path = sheet_page(folder, name, Sheet(kind="separator", sheet_id=new_sheet_id(), expected_pages=9))
    image = Image.open(path)
    width = image.width
    ImageDraw.Draw(image).rectangle((0, 0, width // 2, int(image.height * 0.45)), fill=255)
    image.save(path)
    return path


def pixel_digest(path: Path) -> str:
    with Image.open(path) as image:
        return hashlib.sha256(np.asarray(image.convert("L")).tobytes()).hexdigest()


def load_feeder(feeder: Path, pages: list[Path]) -> None:
    feeder.mkdir(parents=True, exist_ok=True)
    for old in feeder.iterdir():
        old.unlink()
    for index, page in enumerate(pages, start=1):
        (feeder / f"{index:03d}.png").write_bytes(page.read_bytes())


def box_config(data_dir: Path, feeder: Path, *, separator_sheets: bool = True):
    return parse_config(
        {
            "box": {
                "site": "test",
                "device": "box-01",
                "unit": "Sở Giáo dục và Đào tạo",
                "operator": "Người vận hành máy",
                "agency_code": "H31.01",
                "data_dir": str(data_dir),
            },
            "scanner": {"device": "pnm:0", "feeder_dir": str(feeder), "mode": "Gray", "resolution": 300},
            "signing": {"pkcs11_module": "/nonexistent.so", "token_label": "t", "key_id": "01"},
            "upload": {"url": "http://127.0.0.1:9"},
            "profiles": {"vanbang": {"label": "Văn bằng", "mode": "Gray"}},
            "capture": {"separator_sheets": separator_sheets},
        }
    )


def scan_pipeline(config) -> tuple[Pipeline, Journal]:
    """A pipeline whose acquire step runs on the real pnm feeder; later steps are not used here."""
    config.spool_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(config.journal_path, manifests_dir=config.spool_dir)
    pipeline = Pipeline(config, journal, scanner=Scanner(config.scanner), ocr=lambda: None, signer=None, archive=None)
    return pipeline, journal


def documents_by_pixels(journal: Journal) -> list[list[str]]:
    """Return the pixel digests of every job's pages, jobs in creation order."""
    return [[pixel_digest(Path(page.path)) for page in journal.pages(job.id)] for job in journal.jobs_in(*JOB_STATES_ALL)]


JOB_STATES_ALL = ("scanning", "interrupted", "captured", "recognized", "built", "signed", "uploaded", "failed")


# The QR text


def test_payload_round_trip():
    sheet = Sheet(kind="cover", sheet_id="0a1b2c3d", profile="vanbang", type_code="QĐ", operator="Nguyễn Thị Hồng", expected_pages=12)
    text = encode_sheet(sheet)

    assert text.startswith("sohoa:sheet?v=1&")
    assert text.isascii()
    assert parse_sheet(text) == sheet


@pytest.mark.parametrize(
    "text",
    [
        "https://example.gov.vn/sohoa:sheet?v=1&kind=cover&id=0a1b2c3d",
        "DocCode=H31.01_QĐ_000001_V1;PagesSHA256=00",
        "sohoa:sheet?v=2&kind=cover&id=0a1b2c3d",
        "sohoa:sheet?v=1&kind=folder&id=0a1b2c3d",
        "sohoa:sheet?v=1&kind=cover&id=XYZ",
        "sohoa:sheet?v=1&kind=cover&id=0a1b2c3d&pages=-3",
        "sohoa:sheet?v=1&kind=cover&id=0a1b2c3d&pages=0",
        "sohoa:sheet?v=1&kind=cover&id=0a1b2c3d&type=ZZ",
        "sohoa:sheet?v=1&kind=cover&id=0a1b2c3d&profile=a%20b",
        "sohoa:sheet?v=1&kind=cover&id=0a1b2c3d&operator=%FF",
        "sohoa:sheet?garbage",
    ],
)
def test_payload_rejects_foreign_or_invalid(text):
    assert parse_sheet(text) is None


# The printed sheet


def test_sheets_command_prints_readable_sheets(tmp_path, capsys):
    output = tmp_path / "covers.pdf"

    status = main(["sheets", "--kind", "cover", "--type", "QĐ", "--operator", "Trần Văn Bình", "--pages", "3", "--count", "2", "-o", str(output)])

    assert status == 0
    assert f"Đã ghi 2 tờ vào {output}" in capsys.readouterr().out
    assert output.stat().st_mode & 0o044, "printed sheets must be readable by other users, such as a print spooler"
    sheets = [detect_sheet(Image.open(rasterize(output, tmp_path / f"page{page}", page=page))) for page in (1, 2)]
    assert all(sheet is not None for sheet in sheets)
    assert [sheet.kind for sheet in sheets] == ["cover", "cover"]
    assert sheets[0].sheet_id != sheets[1].sheet_id
    assert sheets[0].type_code == "QĐ"
    assert sheets[0].operator == "Trần Văn Bình"
    assert sheets[0].expected_pages == 3
    text = subprocess.run(["pdftotext", str(output), "-"], capture_output=True, text=True, check=True).stdout
    assert sheets[0].sheet_id in text
    assert "Trần Văn Bình" in text


def test_sheets_command_checks_profile(tmp_path, capsys):
    config_path = tmp_path / "sohoa.toml"
    config_path.write_text((REPO / "provisioning" / "sohoa.toml.example").read_text(encoding="utf-8"), encoding="utf-8")
    output = tmp_path / "sheet.pdf"

    status = main(["--config", str(config_path), "sheets", "--profile", "khongco", "-o", str(output)])

    assert status == 78
    assert "khongco" in capsys.readouterr().err
    assert not output.exists()
    assert main(["--config", str(config_path), "sheets", "--profile", "vanbang", "-o", str(output)]) == 0
    assert output.exists()


def test_sheets_command_without_profiles(tmp_path, capsys):
    config_path = tmp_path / "sohoa.toml"
    example = (REPO / "provisioning" / "sohoa.toml.example").read_text(encoding="utf-8")
    without_profiles = example.split("# Capture profiles")[0]
    without_buttons = re.sub(r"\[\[gpio\.buttons\]\][^\n]*\npin = \d+\nprofile = [^\n]*\n", "", without_profiles)
    config_path.write_text(without_buttons, encoding="utf-8")

    status = main(["--config", str(config_path), "--lang", "en", "sheets", "--profile", "vanbang", "-o", str(tmp_path / "x.pdf")])

    assert status == 78
    assert "has no [profiles.NAME] section" in capsys.readouterr().err


def test_sheets_command_rejects_bad_count(tmp_path):
    assert main(["sheets", "--count", "0", "-o", str(tmp_path / "x.pdf")]) == 78
    assert main(["sheets", "--pages", "0", "-o", str(tmp_path / "x.pdf")]) == 78


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--pages", "0", "--pages phải từ 1 đến 10000, không được là 0."),
        ("--operator", "Trần\tVăn Bình", "--operator phải là một tên"),
        ("--profile", "văn-bằng", "--profile văn-bằng không phải là tên hồ sơ quét"),
    ],
)
def test_sheets_command_explains_bad_option_in_vietnamese(tmp_path, capsys, option, value, expected):
    status = main(["--lang", "vi", "sheets", option, value, "-o", str(tmp_path / "x.pdf")])

    assert status == 78
    error = capsys.readouterr().err
    assert expected in error
    assert "is not" not in error
    assert not (tmp_path / "x.pdf").exists()


# Detection on page images


def test_detection_on_scanned_pages(tmp_path):
    sheet = Sheet(kind="separator", sheet_id=new_sheet_id(), profile="vanbang")

    assert detect_sheet(Image.open(sheet_page(tmp_path, "sheet", sheet))) == sheet
    assert detect_sheet(Image.open(page_with_foreign_qr(tmp_path, "foreign"))) is None
    assert detect_sheet(Image.open(damaged_sheet_page(tmp_path, "damaged"))) is None
    for sample in sorted(SAMPLES.glob("*.png")):
        assert detect_sheet(Image.open(sample)) is None, sample.name


@pytest.mark.parametrize("dpi", [150, 200, 300])
def test_long_sheet_detected_at_scan_resolutions(tmp_path, dpi):
    sheet = Sheet(
        kind="cover",
        sheet_id=new_sheet_id(),
        profile="vanbang",
        type_code="GCN",
        operator="Nguyễn Thị Hồng Nhung Trần Văn Bình Lê Thị Ánh Tuyết Phạm Hữu Đức",
        expected_pages=120,
    )
    pdf = tmp_path / "long.pdf"
    render_sheets([sheet], pdf)

    assert detect_sheet(Image.open(rasterize(pdf, tmp_path / "long", dpi=dpi))) == sheet


def test_blank_measure_is_conservative(tmp_path):
    assert is_blank_page(Image.open(blank_back(tmp_path, "back")), SHEET_DPI)
    one_word = Image.new("L", (2480, 3508), 250)
    font = ImageFont.truetype("/usr/share/fonts/truetype/noto/NotoSerif-Regular.ttf", 50)  # 12 pt at 300 dpi
    ImageDraw.Draw(one_word).text((400, 1700), "Đã ký", fill=0, font=font)
    assert not is_blank_page(one_word, 300)
    for sample in sorted(SAMPLES.glob("*.png")):
        assert not is_blank_page(Image.open(sample), 300), sample.name


def test_declared_type_fills_only_unsure():
    unsure = {"TypeName": {"value": None, "confidence": 0.0, "sure": False}}
    sure_other = {"TypeName": {"value": "Quyết định", "confidence": 0.95, "sure": True}}

    fields, check = apply_declared_type({"type_code": "GP"}, unsure)
    assert fields["TypeName"]["value"] == "Giấy phép"
    assert check["result"] == "declared"

    fields, check = apply_declared_type({"type_code": "GP"}, sure_other)
    assert fields["TypeName"]["value"] == "Quyết định"
    assert check == {"declared": "GP", "recognized": "QĐ", "result": "conflict"}

    assert apply_declared_type(None, unsure) == (unsure, None)


# Splitting a batch on the pnm feeder


def test_one_press_makes_documents(tmp_path):
    pages_dir = tmp_path / "pages"
    pages_dir.mkdir()
    separator = Sheet(kind="separator", sheet_id=new_sheet_id(), type_code="GP", operator="Trần Văn Bình", expected_pages=1)
    cover = Sheet(kind="cover", sheet_id=new_sheet_id(), profile="vanbang", expected_pages=2)
    first = [SAMPLES / "quyet-dinh-p1.png", SAMPLES / "quyet-dinh-p2.png"]
    second = [SAMPLES / "giay-phep-p1.png"]
    third = [SAMPLES / "ban-sao-bang-p1.png", page_with_foreign_qr(pages_dir, "foreign"), damaged_sheet_page(pages_dir, "damaged")]
    feed = [
        *first,
        sheet_page(pages_dir, "separator", separator),
        blank_back(pages_dir, "back"),
        *second,
        sheet_page(pages_dir, "cover", cover),
        *third,
    ]
    config = box_config(tmp_path / "data", tmp_path / "feeder")
    load_feeder(tmp_path / "feeder", feed)
    pipeline, journal = scan_pipeline(config)

    result = pipeline.acquire(CaptureRequest(origin="button"))

    assert result.error is None
    assert result.pages_scanned == len(feed)
    jobs = journal.jobs_in(*JOB_STATES_ALL)
    assert [job.state for job in jobs] == ["captured", "captured", "captured"]
    assert [job.id for job in result.documents] == [job.id for job in jobs]
    assert documents_by_pixels(journal) == [[pixel_digest(page) for page in document] for document in (first, second, third)]

    plain, separated, covered = jobs
    assert plain.declared is None
    assert separated.declared["sheet_id"] == separator.sheet_id
    assert separated.declared["page_check"] == {"expected": 1, "scanned": 1, "match": True}
    assert [entry["role"] for entry in separated.declared["sheet_files"]] == ["sheet", "back"]
    assert covered.profile == "vanbang"
    assert covered.declared["page_check"] == {"expected": 2, "scanned": 3, "match": False}
    assert [entry["role"] for entry in covered.declared["sheet_files"]] == ["sheet"]

    # Every job keeps its own files: pages in its batch folder, sheets in sheets/.
    for job in jobs:
        job_dir = config.spool_dir / job.id
        for page in journal.pages(job.id):
            assert Path(page.path).parent.parent == job_dir
        for entry in (job.declared or {}).get("sheet_files", []):
            assert (job_dir / entry["file"]).exists()
        manifest = json.loads((job_dir / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["declared"] == job.declared
        assert len(manifest["pages"]) == job.page_count
    first_batch = config.spool_dir / plain.id / "batch-01"
    assert sorted(path.name for path in first_batch.glob("*.png")) == ["page-0001.png", "page-0002.png"]

    assert pipeline.operator_of(separated) == "Trần Văn Bình"
    assert pipeline.operator_of(plain) == "Người vận hành máy"
    metadata = pipeline.upload_metadata(journal.get_job(covered.id))
    assert metadata["x_page_check"] == {"expected": 2, "scanned": 3, "match": False}
    assert metadata["x_sheet"]["sheet_id"] == cover.sheet_id


def test_sheets_off_keeps_one_document(tmp_path):
    pages_dir = tmp_path / "pages"
    pages_dir.mkdir()
    feed = [SAMPLES / "quyet-dinh-p1.png", sheet_page(pages_dir, "sheet", Sheet(kind="separator", sheet_id=new_sheet_id())), SAMPLES / "giay-phep-p1.png"]
    config = box_config(tmp_path / "data", tmp_path / "feeder", separator_sheets=False)
    load_feeder(tmp_path / "feeder", feed)
    pipeline, journal = scan_pipeline(config)

    result = pipeline.acquire()

    assert [job.page_count for job in result.documents] == [3]


def test_cover_first_and_trailing_sheet(tmp_path):
    pages_dir = tmp_path / "pages"
    pages_dir.mkdir()
    cover = Sheet(kind="cover", sheet_id=new_sheet_id(), expected_pages=1)
    feed = [
        sheet_page(pages_dir, "cover", cover),
        SAMPLES / "giay-phep-p1.png",
        sheet_page(pages_dir, "last", Sheet(kind="separator", sheet_id=new_sheet_id())),
    ]
    config = box_config(tmp_path / "data", tmp_path / "feeder")
    load_feeder(tmp_path / "feeder", feed)
    pipeline, journal = scan_pipeline(config)

    result = pipeline.acquire()

    jobs = journal.jobs_in(*JOB_STATES_ALL)
    assert len(jobs) == 1
    assert result.job.id == jobs[0].id
    assert jobs[0].declared["sheet_id"] == cover.sheet_id
    assert jobs[0].declared["page_check"]["match"] is True
    assert sorted(path.name for path in config.spool_dir.iterdir()) == [jobs[0].id]


def test_jam_after_split_interrupts_new_job(tmp_path):
    pages_dir = tmp_path / "pages"
    pages_dir.mkdir()
    cover = Sheet(kind="cover", sheet_id=new_sheet_id(), expected_pages=2)
    config = box_config(tmp_path / "data", tmp_path / "feeder")
    load_feeder(tmp_path / "feeder", [SAMPLES / "quyet-dinh-p1.png", sheet_page(pages_dir, "cover", cover), SAMPLES / "giay-phep-p1.png"])
    (tmp_path / "feeder" / "004.jam").touch()
    pipeline, journal = scan_pipeline(config)

    result = pipeline.acquire()

    assert result.error is not None
    assert [job.state for job in journal.jobs_in(*JOB_STATES_ALL)] == ["captured", "interrupted"]
    assert result.job.declared["sheet_id"] == cover.sheet_id

    load_feeder(tmp_path / "feeder", [SAMPLES / "ban-sao-bang-p1.png"])
    result = pipeline.acquire()

    assert result.job.declared["page_check"] == {"expected": 2, "scanned": 2, "match": True}
    assert len(documents_by_pixels(journal)[1]) == 2


# SIGKILL in the middle of a split

KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    import test_separators as helpers
    import sohoa.splitting as splitting

    point, number = sys.argv[1], int(sys.argv[2])
    calls = {{"move": 0}}
    real_move, real_start = splitting.move_durably, splitting.BatchSplitter._start_document

    def move(source, target):
        calls["move"] += 1
        if point == "before_move" and calls["move"] == number:
            os.kill(os.getpid(), signal.SIGKILL)
        real_move(source, target)
        if point == "after_move" and calls["move"] == number:
            os.kill(os.getpid(), signal.SIGKILL)

    def start_document(self, path, sheet):
        if point == "sheet_detected":
            os.kill(os.getpid(), signal.SIGKILL)
        real_start(self, path, sheet)

    splitting.move_durably = move
    splitting.BatchSplitter._start_document = start_document
    config = helpers.box_config(Path(sys.argv[3]), Path(sys.argv[4]))
    pipeline, journal = helpers.scan_pipeline(config)
    pipeline.acquire()
    """
)


@pytest.mark.parametrize(
    ("point", "number", "scanned"),
    [
        ("sheet_detected", 0, 2),  # the sheet is on disk, nothing else done
        ("before_move", 1, 2),  # the old job is captured and the new job exists; the sheet is not moved
        ("before_move", 2, 3),  # the page after the sheet is on disk in the first job's batch folder
        ("after_move", 2, 3),  # that page is in the new job's folder without its journal row
    ],
)
def test_kill_during_split_keeps_every_page_once(tmp_path, point, number, scanned):
    pages_dir = tmp_path / "pages"
    pages_dir.mkdir()
    cover = Sheet(kind="cover", sheet_id=new_sheet_id(), expected_pages=2)
    first = [SAMPLES / "quyet-dinh-p1.png"]
    second = [SAMPLES / "giay-phep-p1.png", SAMPLES / "ban-sao-bang-p1.png"]
    feed = [*first, sheet_page(pages_dir, "cover", cover), *second]
    load_feeder(tmp_path / "feeder", feed)
    env = {**os.environ, "PYTHONPATH": str(DAEMON_DIR)}

    killed = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT.format(tests=str(Path(__file__).parent)), point, str(number), str(tmp_path / "data"), str(tmp_path / "feeder")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    config = box_config(tmp_path / "data", tmp_path / "feeder")
    journal, report = open_journal(config)
    assert report.repairs
    digests = documents_by_pixels(journal)
    assert digests[0] == [pixel_digest(page) for page in first]
    assert sum(len(document) for document in digests) == scanned - 1
    journal.close()

    # The next press continues the new document with the pages not yet scanned.
    load_feeder(tmp_path / "feeder", feed[scanned:])
    pipeline, journal = scan_pipeline(config)
    result = pipeline.acquire()

    assert result.error is None
    jobs = journal.jobs_in(*JOB_STATES_ALL)
    assert [job.state for job in jobs] == ["captured", "captured"]
    assert documents_by_pixels(journal) == [[pixel_digest(page) for page in document] for document in (first, second)]
    assert jobs[1].declared["sheet_id"] == cover.sheet_id
    assert jobs[1].declared["page_check"]["match"] is True
    assert [entry["role"] for entry in jobs[1].declared["sheet_files"]] == ["sheet"]
    for job in jobs:
        for page in journal.pages(job.id):
            assert hashlib.sha256(Path(page.path).read_bytes()).hexdigest() == page.sha256


# The whole box: MQTT event, alert, mark and upload metadata


def test_page_count_mismatch_reaches_staff_and_archive(testbed, start_daemon, tmp_path):
    from sohoa.testbed.demo import press_button, wait_for_state
    from sohoa.testbed.mosquitto import MessageRecorder

    cover = Sheet(kind="cover", sheet_id=new_sheet_id(), type_code="GP", operator="Trần Văn Bình", expected_pages=2)
    load_feeder(testbed.feeder_dir, [sheet_page(tmp_path / "pages", "cover", cover), SAMPLES / "giay-phep-p1.png"])
    recorder = MessageRecorder(testbed.broker.host, testbed.broker.port, "sohoa/demo/box-01/#")
    try:
        daemon = start_daemon()
        recorder.wait_for(lambda m: m.topic.endswith("/availability") and m.payload == b"online", timeout=10)
        press_button(daemon)

        state = wait_for_state(daemon, lambda s: s["alert_code"] == "page_count_mismatch", 120)
        assert state is not None, "no page-count alert"
        assert cover.sheet_id in state["message"]
        event = recorder.wait_for(
            lambda m: m.topic.endswith("/event") and json.loads(m.payload).get("event") == "page_count_mismatch", timeout=10
        )
        payload = json.loads(event.payload)
        assert payload["expected"] == 2
        assert payload["scanned"] == 1
        assert payload["sheet_id"] == cover.sheet_id

        # The document is not held: it is signed and uploaded, marked with the difference.
        state = wait_for_state(daemon, lambda s: s["totals"]["documents_uploaded"] >= 1, 600)
        assert state is not None, "the flagged document did not reach the archive"
    finally:
        recorder.stop()

    records = testbed.receiver.records()
    assert len(records) == 1
    record = records[0]
    metadata = record["metadata"]
    assert metadata["x_page_check"] == {"expected": 2, "scanned": 1, "match": False}
    assert metadata["operator"] == "Trần Văn Bình"
    assert metadata["x_sheet"]["sheet_id"] == cover.sheet_id
    assert metadata["PageAmount"] == 1
    journal = Journal(testbed.config().journal_path)
    job = journal.jobs_in("uploaded")[0]
    journal.close()
    text = subprocess.run(["pdftotext", job.signed_path, "-"], capture_output=True, text=True, check=True).stdout
    assert "Trần Văn Bình" in text
    assert job.declared["type_check"]["declared"] == "GP"
