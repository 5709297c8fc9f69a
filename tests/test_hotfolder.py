"""The hot folder with watchdog's real observer, real files, a SoftHSM2 signer and, for the
end-to-end cases, the whole testbed: mosquitto, the reference archive and the OCR models."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pikepdf
import pytest
from fpdf import FPDF
from PIL import Image

from sohoa.config import parse_config
from sohoa.hotfolder import ledger
from sohoa.hotfolder.importer import FINISHED, IMPORTED, REJECTED, REASON_SUFFIX, HotFolderImporter, prepare_hot_folder
from sohoa.hotfolder.names import classify, is_temporary_name
from sohoa.hotfolder.watcher import CompleteFile, HotFolderWatcher
from sohoa.journal import JOB_STATES, Journal
from sohoa.pipeline import Pipeline
from sohoa.recovery import open_journal
from sohoa.separator import Sheet, new_sheet_id, render_sheets
from sohoa.signing import TokenSigner
from sohoa.signing.verify import verify_pdf
from sohoa.splitting import page_count_error
from sohoa.testbed.demo import PIN_ENV, sample_pages, wait_for_state
from sohoa.testbed.mosquitto import MessageRecorder
from sohoa.testbed.pages import blank_scan

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
DECISION_LINES = [
    "ỦY BAN NHÂN DÂN TỈNH HÀ NAM",
    "SỞ GIÁO DỤC VÀ ĐÀO TẠO",
    "Số: 15/QĐ-SGDĐT",
    "Hà Nam, ngày 05 tháng 01 năm 2026",
    "QUYẾT ĐỊNH",
    "Về việc công nhận kết quả kỳ thi",
]
EVENT_TIMEOUT = 20
PIPELINE_TIMEOUT = 900


# helpers


def box_config(tmp_path: Path, **capture: object):
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    return parse_config(
        {
            "box": {
                "site": "demo",
                "device": "box-01",
                "unit": "Sở Giáo dục và Đào tạo",
                "operator": "Nguyễn Văn An",
                "agency_code": "H31.01",
                "data_dir": str(tmp_path / "data"),
            },
            "scanner": {"device": "pnm:0", "resolution": 150},
            "signing": {"pkcs11_module": "/usr/lib/softhsm/libsofthsm2.so", "token_label": "t", "key_id": "0A"},
            "upload": {"url": "http://127.0.0.1:9"},
            "capture": {"hot_folder": str(inbox), **capture},
            "profiles": {"van-bang": {"label": "Văn bằng", "type_code": "VB"}},
        }
    )


def text_pdf(path: Path, lines: list[str] = DECISION_LINES) -> Path:
    """Write a one-page PDF with a real text layer in a Unicode font."""
    pdf = FPDF(format="A4")
    pdf.add_page()
    pdf.add_font("DejaVu", fname=str(FONT))
    pdf.set_font("DejaVu", size=12)
    for line in lines:
        pdf.cell(0, 8, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path


def two_page_tiff(path: Path) -> Path:
    first, second = (Image.open(page) for page in sample_pages("quyet-dinh")[:2])
    first.save(path, save_all=True, append_images=[second], compression="tiff_lzw", dpi=(300, 300))
    return path


def two_page_pdf(path: Path) -> Path:
    first, second = (Image.open(page).convert("RGB") for page in sample_pages("quyet-dinh")[:2])
    first.save(path, save_all=True, append_images=[second], resolution=300)
    return path


def write_slowly(path: Path, data: bytes, chunks: int, between) -> None:
    """Write ``data`` in ``chunks`` pieces through one open file, calling ``between()`` after each flushed piece."""
    step = -(-len(data) // chunks)
    with open(path, "wb") as handle:
        for start in range(0, len(data), step):
            handle.write(data[start : start + step])
            handle.flush()
            between()


class Reports:
    """Collects what a watcher reports, for tests to wait on."""

    def __init__(self) -> None:
        self.queue: queue.Queue[CompleteFile] = queue.Queue()

    def __call__(self, complete: CompleteFile) -> None:
        self.queue.put(complete)

    def next(self, timeout: float = EVENT_TIMEOUT) -> CompleteFile:
        return self.queue.get(timeout=timeout)

    def none_within(self, timeout: float) -> bool:
        try:
            self.queue.get(timeout=timeout)
        except queue.Empty:
            return True
        return False


@pytest.fixture
def watch(tmp_path):
    """Return a function that starts a watcher on a fresh inbox; every watcher is stopped afterwards."""
    watchers = []

    def start(settle_seconds: float, inbox: Path | None = None) -> tuple[Path, Reports]:
        inbox = inbox or tmp_path / "inbox"
        inbox.mkdir(exist_ok=True)
        reports = Reports()
        watcher = HotFolderWatcher(
            inbox, profiles=["van-bang"], default_profile=None, settle_seconds=settle_seconds, on_complete=reports
        )
        watcher.start()
        watchers.append(watcher)
        return inbox, reports

    yield start
    for watcher in watchers:
        watcher.stop()


@pytest.fixture
def importer(tmp_path):
    config = box_config(tmp_path)
    journal = Journal(config.journal_path, manifests_dir=config.spool_dir)
    prepare_hot_folder(config.capture.hot_folder)
    pipeline = Pipeline(config, journal, scanner=None, ocr=None, signer=None, archive=None)
    yield HotFolderImporter(config, journal, pipeline)
    journal.close()


@pytest.fixture(scope="module")
def token_signer(tmp_path_factory):
    """A TokenSigner on a SoftHSM2 token of a test CA, and the CA certificate that validates it."""
    from sohoa.testbed.pki import create_test_pki
    from sohoa.testbed.softhsm import create_test_token

    folder = tmp_path_factory.mktemp("hotfolder-signer")
    pki = create_test_pki(folder / "pki", signer_name="Trần Thị Bình")
    token = create_test_token(folder / "hsm", pki, pin="135790")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in token.env.items():
            patch.setenv(name, value)
        patch.setenv(PIN_ENV, token.pin)
        yield TokenSigner(token.signing_config(pin_env=PIN_ENV)), pki.ca_cert_path


def signed_pdf(signer: TokenSigner, folder: Path, name: str, lines: list[str] = DECISION_LINES) -> Path:
    source = text_pdf(folder / f"{name}.unsigned.pdf", lines)
    target = folder / f"{name}.pdf"
    signer.sign_pdf(source, target, signer_name="Trần Thị Bình")
    source.unlink()
    return target


def with_trust_root(importer: HotFolderImporter, ca_cert: Path) -> HotFolderImporter:
    signing = importer.config.signing.model_copy(update={"trust_roots": [ca_cert]})
    importer.config = importer.config.model_copy(update={"signing": signing})
    importer.pipeline.config = importer.config
    return importer


# names


@pytest.mark.parametrize(
    ("name", "ignored"),
    [
        ("scan_0001.pdf", False),
        ("Ảnh quét 01.JPG", False),
        (".scan.pdf.a1B2c3", True),  # rsync
        (".in.scan.pdf.", True),  # ProFTPD HiddenStores
        (".pureftpd-upload.5f3c.pdf", True),
        ("._scan.pdf", True),  # macOS AppleDouble
        ("~$bao-cao.docx", True),
        ("scan.pdf~", True),
        ("scan.pdf.tmp", True),
        ("scan.TMP", True),
        ("scan.pdf.part", True),
        ("scan.pdf.crdownload", True),
        ("scan.pdf.filepart", True),
        ("Thumbs.db", True),
        ("desktop.ini", True),
    ],
)
def test_temporary_names(name, ignored):
    assert is_temporary_name(name) is ignored


def test_classify_by_folder(tmp_path):
    root = tmp_path / "inbox"
    profiles = ["van-bang"]
    assert classify(root / "a.pdf", root, profiles, "chung") == (True, "chung")
    assert classify(root / "van-bang" / "a.pdf", root, profiles, None) == (True, "van-bang")
    assert classify(root / "khac" / "a.pdf", root, profiles, None) == (False, None)
    assert classify(root / "done" / "a.pdf", root, profiles, None) == (False, None)
    assert classify(root / "rejected" / "a.pdf", root, profiles, None) == (False, None)
    assert classify(root / "van-bang" / "x" / "a.pdf", root, profiles, None) == (False, None)
    assert classify(root / ".a.pdf.part", root, profiles, None) == (False, None)


# the watcher


def test_chunked_write_reported_once_after_close(watch):
    inbox, reports = watch(settle_seconds=60)
    data = Path(sample_pages()[0]).read_bytes()
    early: list[bool] = []
    write_slowly(inbox / "scan.png", data, chunks=5, between=lambda: early.append(reports.none_within(0.2)))
    assert early == [True] * 5, "the file was reported while it was still being written"

    complete = reports.next()
    assert complete.path == inbox / "scan.png"
    assert complete.reason == "closed"
    assert complete.path.stat().st_size == len(data)
    # Opening the file for writing and closing it again repeats the close event without a change.
    open(complete.path, "ab").close()
    assert reports.none_within(1.0)


def test_renamed_temporary_file_reported_once(watch):
    inbox, reports = watch(settle_seconds=60)
    temporary = inbox / "scan.pdf.part"
    temporary.write_bytes(b"%PDF-1.7\n" + b"0" * 10_000 + b"\n%%EOF\n")
    assert reports.none_within(0.5)
    temporary.rename(inbox / "scan.pdf")

    complete = reports.next()
    assert complete.path == inbox / "scan.pdf"
    assert complete.reason == "renamed"
    assert reports.none_within(1.0)


def test_files_present_at_start_settle(tmp_path, watch):
    inbox = tmp_path / "inbox"
    (inbox / "van-bang").mkdir(parents=True)
    (inbox / "top.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    (inbox / "van-bang" / "bang.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"1" * 100)
    (inbox / ".hidden.png").write_bytes(b"x")
    _, reports = watch(settle_seconds=0.5, inbox=inbox)

    found = {reports.next().path: None for _ in range(2)}
    assert set(found) == {inbox / "top.png", inbox / "van-bang" / "bang.png"}
    assert reports.none_within(1.5), "a file was reported twice, or a hidden file was reported"


def test_empty_file_waits_to_settle(watch):
    inbox, reports = watch(settle_seconds=0.5)
    (inbox / "blank.pdf").write_bytes(b"")
    complete = reports.next()
    assert complete.reason == "settled"


# the importer


def test_png_imported_then_duplicate_rejected(importer):
    inbox = importer.root
    shutil.copyfile(sample_pages()[0], inbox / "scan.png")
    outcome = importer.import_file(CompleteFile(inbox / "scan.png", None, "closed"))
    assert outcome.status == IMPORTED
    assert outcome.job.state == "captured"
    assert outcome.job.origin == "hot_folder"
    assert outcome.job.page_count == 1
    assert outcome.moved_to == inbox / "done" / "scan.png"
    assert not (inbox / "scan.png").exists()
    page = importer.journal.pages(outcome.job.id)[0]
    with Image.open(page.path) as image:
        assert image.format == "PNG"
        with Image.open(sample_pages()[0]) as original:
            assert image.size == original.size
            assert image.tobytes() == original.convert(image.mode).tobytes()
    record = ledger.find_by_job(importer.journal, outcome.job.id)
    assert record.file_name == "scan.png"
    assert record.archived_to == str(inbox / "done" / "scan.png")

    shutil.copyfile(sample_pages()[0], inbox / "again.png")
    repeat = importer.import_file(CompleteFile(inbox / "again.png", None, "closed"))
    assert repeat.status == REJECTED
    assert repeat.error.code == "import_duplicate"
    assert repeat.moved_to == inbox / "rejected" / "again.png"
    assert len(importer.journal.jobs_in("captured")) == 1


def test_two_page_tiff_and_profile(importer):
    folder = importer.root / "van-bang"
    folder.mkdir()
    two_page_tiff(folder / "bang.tif")
    outcome = importer.import_file(CompleteFile(folder / "bang.tif", "van-bang", "closed"))
    assert outcome.status == IMPORTED
    assert outcome.job.page_count == 2
    assert outcome.job.profile == "van-bang"
    assert [page.dpi for page in importer.journal.pages(outcome.job.id)] == [300, 300]
    assert outcome.moved_to == importer.root / "done" / "van-bang" / "bang.tif"


def test_unsigned_pdf_rasterized(importer):
    two_page_pdf(importer.root / "two.pdf")
    outcome = importer.import_file(CompleteFile(importer.root / "two.pdf", None, "closed"))
    assert outcome.status == IMPORTED
    pages = importer.journal.pages(outcome.job.id)
    assert len(pages) == 2
    # A4 at the configured 150 dpi.
    assert (pages[0].width, pages[0].height) == (1240, 1754)
    assert pages[0].dpi == 150


def _encrypted_pdf(path: Path) -> None:
    text_pdf(path.with_suffix(".plain"))
    with pikepdf.open(path.with_suffix(".plain")) as pdf:
        pdf.save(path, encryption=pikepdf.Encryption(owner="chu", user="", R=6))
    path.with_suffix(".plain").unlink()


def _truncated_pdf(path: Path) -> None:
    text_pdf(path.with_suffix(".plain"))
    data = path.with_suffix(".plain").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    path.with_suffix(".plain").unlink()


@pytest.mark.parametrize(
    ("name", "make", "code"),
    [
        ("empty.pdf", lambda path: path.write_bytes(b""), "import_empty"),
        ("broken.png", lambda path: path.write_bytes(sample_pages()[0].read_bytes()[:4000]), "import_corrupt"),
        ("notes.docx", lambda path: path.write_bytes(b"PK\x03\x04" + b"\x00" * 200), "import_unsupported"),
        ("fake.jpg", lambda path: path.write_bytes(b"GIF89a" + b"\x00" * 200), "import_unsupported"),
        ("cut.pdf", _truncated_pdf, "import_corrupt"),
        ("locked.pdf", _encrypted_pdf, "import_encrypted"),
    ],
)
def test_bad_file_rejected_with_reason(importer, name, make, code):
    make(importer.root / name)
    outcome = importer.import_file(CompleteFile(importer.root / name, None, "closed"))
    assert outcome.status == REJECTED
    assert outcome.error.code == code
    assert outcome.moved_to == importer.root / "rejected" / name
    reason = (importer.root / "rejected" / (name + REASON_SUFFIX)).read_text(encoding="utf-8")
    assert name in reason
    assert code in reason
    assert outcome.error.user_message() in reason
    assert importer.journal.jobs_in("captured", "signed") == []
    assert list(importer.config.spool_dir.glob("*")) == []


def test_cut_move_finished_without_second_job(importer, monkeypatch):
    inbox = importer.root
    shutil.copyfile(sample_pages()[0], inbox / "scan.png")
    move = importer._move_out

    def crash_before_done(source, folder_name):
        raise OSError("simulated power cut before the move")

    monkeypatch.setattr(importer, "_move_out", crash_before_done)
    with pytest.raises(OSError):
        importer.import_file(CompleteFile(inbox / "scan.png", None, "closed"))
    assert (inbox / "scan.png").exists()
    assert len(importer.journal.jobs_in("captured")) == 1

    monkeypatch.setattr(importer, "_move_out", move)
    outcome = importer.import_file(CompleteFile(inbox / "scan.png", None, "settled"))
    assert outcome.status == FINISHED
    assert (inbox / "done" / "scan.png").exists()
    assert len(importer.journal.jobs_in("captured")) == 1


def test_signed_pdf_archived_as_is(importer, token_signer, tmp_path):
    signer, ca_cert = token_signer
    with_trust_root(importer, ca_cert)
    source = signed_pdf(signer, tmp_path, "quyet-dinh-ky-so")
    original = source.read_bytes()
    shutil.move(source, importer.root / source.name)

    outcome = importer.import_file(CompleteFile(importer.root / source.name, None, "closed"))
    assert outcome.status == IMPORTED
    job = outcome.job
    assert job.state == "signed"
    assert Path(job.signed_path).read_bytes() == original
    assert job.sha256 == outcome.record.sha256
    assert job.doc_code == "H31.01_QĐ_000001_V1"
    assert job.page_count == 1
    assert importer.journal.pages(job.id) == []
    assert job.fields["CodeNumber"]["value"] == "15"
    assert outcome.record.kind == ledger.KIND_SIGNED_PDF
    assert outcome.record.signature_valid is True
    assert outcome.record.signature_trusted is True
    metadata = importer.pipeline.upload_metadata(job)
    assert metadata["Format"] == "Bản điện tử có chữ ký số"
    assert metadata["x_import"]["signature"]["trusted"] is True
    assert metadata["PageAmount"] == 1


def test_tampered_signed_pdf_rejected(importer, token_signer, tmp_path):
    signer, ca_cert = token_signer
    with_trust_root(importer, ca_cert)
    source = signed_pdf(signer, tmp_path, "sua-sau-khi-ky")
    data = bytearray(source.read_bytes())
    # The creation date in the Info dictionary is inside the signed byte range; one changed digit keeps the PDF readable.
    offset = data.index(b"/CreationDate (D:") + len(b"/CreationDate (D:")
    data[offset : offset + 1] = b"1" if data[offset : offset + 1] != b"1" else b"2"
    (importer.root / "sua.pdf").write_bytes(bytes(data))

    outcome = importer.import_file(CompleteFile(importer.root / "sua.pdf", None, "closed"))
    assert outcome.status == REJECTED
    assert outcome.error.code == "import_signature_invalid"
    assert (importer.root / "rejected" / "sua.pdf").read_bytes() == bytes(data)
    assert importer.journal.jobs_in("signed") == []


# the daemon, end to end


def _events(recorder: MessageRecorder) -> list[dict]:
    return [json.loads(message.payload) for message in recorder.messages if message.topic.endswith("/event")]


def _hot_folder_testbed(testbed) -> Path:
    inbox = testbed.folder / "inbox"
    inbox.mkdir()
    testbed.rewrite_config("capture", hot_folder=str(inbox), hot_folder_settle_seconds=2.0)
    return inbox


def test_hot_folder_files_reach_archive(testbed, start_daemon):
    inbox = _hot_folder_testbed(testbed)
    config = testbed.config()
    signer = TokenSigner(config.signing)
    staging = testbed.folder / "staging"
    staging.mkdir()
    signed = signed_pdf(signer, staging, "van-ban-da-ky")
    signed_bytes = signed.read_bytes()
    recorder = MessageRecorder(testbed.broker.host, testbed.broker.port, "sohoa/demo/box-01/#")
    try:
        assert recorder.wait_subscribed(10)
        daemon = start_daemon()
        shutil.move(signed, inbox / signed.name)
        two_page_pdf(staging / "hai-trang.pdf").rename(inbox / "hai-trang.pdf")
        first, second = sample_pages("quyet-dinh")[:2]
        separator = Sheet(kind="separator", sheet_id=new_sheet_id(), expected_pages=1)
        batch_pdf(staging / "lo-co-to-tach.pdf", [first, separator, second]).rename(inbox / "lo-co-to-tach.pdf")
        # Written in pieces into the inbox itself: a partial TIFF would be rejected, so two pages prove it waited.
        tiff = two_page_tiff(staging / "hai-trang.tif").read_bytes()
        write_slowly(inbox / "hai-trang.tif", tiff, chunks=8, between=lambda: threading.Event().wait(0.1))
        (inbox / "hong.png").write_bytes(sample_pages()[0].read_bytes()[:3000])
        (inbox / "rong.jpg").write_bytes(b"")
        (inbox / "ghi-chu.txt").write_text("không phải ảnh quét", encoding="utf-8")

        state = wait_for_state(daemon, lambda s: s["totals"]["documents_uploaded"] >= 5, PIPELINE_TIMEOUT)
        assert state is not None, f"the imported documents did not reach the archive: {daemon.state()}"
        assert daemon._health_problem() is None

        split = [record for record in testbed.receiver.records() if record["metadata"]["x_import"]["file_name"] == "lo-co-to-tach.pdf"]
        assert len(split) == 2, "the file with a separator sheet did not become two documents"
        assert sorted(record["metadata"]["PageAmount"] for record in split) == [1, 1]
        assert [record["metadata"]["x_sheet"]["sheet_id"] for record in split if "x_sheet" in record["metadata"]] == [separator.sheet_id]
        records = {
            record["metadata"]["x_import"]["file_name"]: record for record in testbed.receiver.records() if record not in split
        }
        assert set(records) == {signed.name, "hai-trang.pdf", "hai-trang.tif"}
        stored = testbed.receiver.store.file_path(records[signed.name]["DocCode"])
        assert stored.read_bytes() == signed_bytes
        assert records[signed.name]["metadata"]["Format"] == "Bản điện tử có chữ ký số"
        assert records[signed.name]["sha256"] == hashlib.sha256(signed_bytes).hexdigest()
        for name in ("hai-trang.pdf", "hai-trang.tif"):
            with pikepdf.open(testbed.receiver.store.file_path(records[name]["DocCode"])) as pdf:
                assert len(pdf.pages) == 2, name
            assert records[name]["metadata"]["PageAmount"] == 2

        journal = Journal(config.journal_path)
        try:
            signed_job = next(job for job in journal.jobs_in("uploaded") if job.doc_code == records[signed.name]["DocCode"])
            assert journal.pages(signed_job.id) == [], "the signed PDF was rasterized or recognized"
            assert not (config.spool_dir / signed_job.id / "ocr").exists()
        finally:
            journal.close()

        for name in ("hong.png", "rong.jpg", "ghi-chu.txt"):
            assert (inbox / "rejected" / (name + REASON_SUFFIX)).exists(), name
        assert sorted(path.name for path in (inbox / "done").iterdir()) == sorted(
            [signed.name, "hai-trang.pdf", "hai-trang.tif", "lo-co-to-tach.pdf"]
        )
        for name in ("hong.png", "rong.jpg", "ghi-chu.txt"):
            recorder.wait_for(
                lambda m, name=name: m.topic.endswith("/event") and json.loads(m.payload).get("file") == name
                and json.loads(m.payload)["event"] == "import_rejected",
                timeout=10,
            )
        events = _events(recorder)
        rejected = sorted(event["file"] for event in events if event["event"] == "import_rejected")
        assert rejected == ["ghi-chu.txt", "hong.png", "rong.jpg"]
        assert sorted(event["file"] for event in events if event["event"] == "job_imported") == sorted([*records, "lo-co-to-tach.pdf"])
        split_event = next(event for event in events if event["event"] == "job_imported" and event["file"] == "lo-co-to-tach.pdf")
        assert len(split_event["job_ids"]) == 2
        assert {event["file"] for event in events if event["event"] == "import_started"} >= set(records)
    finally:
        recorder.stop()


def test_restart_imports_each_file_once(testbed, start_daemon):
    inbox = _hot_folder_testbed(testbed)
    config = testbed.config()
    signer = TokenSigner(config.signing)
    staging = testbed.folder / "staging"
    staging.mkdir()
    first = signed_pdf(signer, staging, "lan-mot")
    first_copy = staging / "ban-sao.pdf"
    shutil.copyfile(first, first_copy)

    daemon = start_daemon()
    shutil.move(first, inbox / first.name)
    assert wait_for_state(daemon, lambda s: s["totals"]["documents_uploaded"] == 1, 120) is not None
    daemon.stop()

    # While the daemon is down: the same content again, and a new signed document.
    shutil.move(first_copy, inbox / first_copy.name)
    second = signed_pdf(signer, staging, "lan-hai", DECISION_LINES[:3] + ["THÔNG BÁO", "Về việc lịch thi"])
    shutil.move(second, inbox / second.name)

    restarted = start_daemon()
    state = wait_for_state(restarted, lambda s: s["totals"]["documents_uploaded"] == 2 and not (inbox / first_copy.name).exists(), 120)
    assert state is not None, restarted.state()
    assert len(testbed.receiver.records()) == 2
    assert (inbox / "rejected" / first_copy.name).exists()
    assert "import_duplicate" in (inbox / "rejected" / (first_copy.name + REASON_SUFFIX)).read_text(encoding="utf-8")
    assert sorted(path.name for path in (inbox / "done").iterdir()) == ["lan-hai.pdf", "lan-mot.pdf"]


def test_missing_hot_folder_is_an_alert(testbed, start_daemon):
    testbed.rewrite_config("capture", hot_folder=str(testbed.folder / "no-such-inbox"))
    daemon = start_daemon()
    state = wait_for_state(daemon, lambda s: "hot_folder_unavailable" in s["alerts"], 10)
    assert state is not None
    assert state["state"] == "alert"


def test_reason_file_readable_like_source(importer):
    importer.root.chmod(0o2770)
    (importer.root / "x.bin").write_bytes(b"\x00" * 64)
    (importer.root / "x.bin").chmod(0o664)
    outcome = importer.import_file(CompleteFile(importer.root / "x.bin", None, "closed"))
    assert outcome.status == REJECTED
    reason = importer.root / "rejected" / ("x.bin" + REASON_SUFFIX)
    assert reason.stat().st_mode & 0o777 == 0o664


def test_lost_signed_import_fails_at_recovery(importer, token_signer, tmp_path):
    from sohoa.recovery import open_journal

    signer, ca_cert = token_signer
    with_trust_root(importer, ca_cert)
    source = signed_pdf(signer, tmp_path, "mat-tep")
    shutil.move(source, importer.root / source.name)
    job = importer.import_file(CompleteFile(importer.root / source.name, None, "closed")).job
    importer.journal.close()
    Path(job.signed_path).write_bytes(b"%PDF-1.7 damaged")

    journal, report = open_journal(importer.config)
    try:
        failed = journal.get_job(job.id)
        assert failed.state == "failed"
        assert failed.error_code == "import_lost"
        assert any("imported signed PDF" in repair for repair in report.repairs)
    finally:
        journal.close()
        importer.journal = Journal(importer.config.journal_path)


def test_disk_reserve_keeps_file_in_inbox(testbed, start_daemon):
    inbox = _hot_folder_testbed(testbed)
    testbed.rewrite_config("box", min_free_mb=10_000_000)
    daemon = start_daemon()
    shutil.copyfile(sample_pages()[0], inbox / "scan.png")
    state = wait_for_state(daemon, lambda s: s["alert_code"] == "disk_full", 30)
    assert state is not None, daemon.state()
    assert (inbox / "scan.png").exists()
    assert not (inbox / "done" / "scan.png").exists()
    assert daemon.journal.state_counts()["captured"] == 0


# separator and cover sheets in a file


def _sheet_pdf(folder: Path, sheet: Sheet) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"sheet-{sheet.sheet_id}.pdf"
    render_sheets([sheet], path)
    return path


def batch_pdf(path: Path, parts: list[Path | Sheet]) -> Path:
    """Write one PDF whose pages are the sample page images and the printed sheets in ``parts``, in order."""
    staging = path.parent / f"{path.stem}-parts"
    staging.mkdir()
    with pikepdf.new() as batch:
        for number, part in enumerate(parts):
            if isinstance(part, Sheet):
                part_pdf = _sheet_pdf(staging, part)
            else:
                part_pdf = staging / f"page-{number}.pdf"
                Image.open(part).convert("RGB").save(part_pdf, resolution=300)
            with pikepdf.open(part_pdf) as single:
                batch.pages.extend(single.pages)
        batch.save(path)
    shutil.rmtree(staging)
    return path


def test_sheet_in_pdf_splits_into_jobs(importer):
    first, second = sample_pages("quyet-dinh")[:2]
    separator = Sheet(kind="separator", sheet_id=new_sheet_id(), profile="van-bang", type_code="VB", operator="Lê Văn Cường", expected_pages=1)
    batch_pdf(importer.root / "lo.pdf", [first, separator, second])

    outcome = importer.import_file(CompleteFile(importer.root / "lo.pdf", None, "closed"))

    assert outcome.status == IMPORTED
    assert [job.page_count for job in outcome.jobs] == [1, 1]
    assert [job.state for job in outcome.jobs] == ["captured", "captured"]
    assert outcome.job == outcome.jobs[0]
    opened = outcome.jobs[1]
    assert opened.profile == "van-bang"
    assert opened.origin == "hot_folder"
    assert opened.declared["sheet_id"] == separator.sheet_id
    assert opened.declared["operator"] == "Lê Văn Cường"
    assert opened.declared["page_check"] == {"expected": 1, "scanned": 1, "match": True}
    assert [entry["role"] for entry in opened.declared["sheet_files"]] == ["sheet"]
    assert outcome.jobs[0].declared is None
    for job in outcome.jobs:
        assert ledger.find_by_job(importer.journal, job.id).sha256 == outcome.record.sha256
        pages = importer.journal.pages(job.id)
        assert [Path(page.path).parent.parent.name for page in pages] == [job.id]
    assert ledger.job_ids(importer.journal, outcome.record) == [job.id for job in outcome.jobs]
    metadata = importer.pipeline.upload_metadata(opened)
    assert metadata["x_import"]["file_name"] == "lo.pdf"
    assert metadata["x_sheet"]["sheet_id"] == separator.sheet_id


def test_sheet_page_count_mismatch_flagged(importer):
    first, second = sample_pages("quyet-dinh")[:2]
    cover = Sheet(kind="cover", sheet_id=new_sheet_id(), expected_pages=3)
    batch_pdf(importer.root / "thieu-trang.pdf", [cover, first, second])

    outcome = importer.import_file(CompleteFile(importer.root / "thieu-trang.pdf", None, "closed"))

    assert outcome.status == IMPORTED
    assert len(outcome.jobs) == 1, "a cover before any page describes the first job"
    job = outcome.job
    assert job.page_count == 2
    assert job.declared["page_check"] == {"expected": 3, "scanned": 2, "match": False}
    assert page_count_error(job).code == "page_count_mismatch"


def test_failed_split_leaves_no_job(importer, monkeypatch):
    first, second = sample_pages("quyet-dinh")[:2]
    separator = Sheet(kind="separator", sheet_id=new_sheet_id())
    source = batch_pdf(importer.root / "lo.pdf", [first, separator, second])
    original_insert = ledger.insert

    def fail_insert(db, record, job_ids=()):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ledger, "insert", fail_insert)
    with pytest.raises(OSError):
        importer.import_file(CompleteFile(source, None, "closed"))
    assert source.exists(), "the file left the inbox although no job was committed"
    assert importer.journal.jobs_in(*JOB_STATES) == []
    assert not any(importer.config.spool_dir.glob("*/batch-01")), "the failed import left page files behind"

    monkeypatch.setattr(ledger, "insert", original_insert)
    outcome = importer.import_file(CompleteFile(source, None, "closed"))
    assert outcome.status == IMPORTED
    assert [job.page_count for job in outcome.jobs] == [1, 1]
    assert len(importer.journal.jobs_in(*JOB_STATES)) == 2


KILL_DURING_SPLIT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path

    sys.path.insert(0, {tests!r})
    import test_hotfolder as helpers
    import sohoa.splitting as splitting
    from sohoa.hotfolder.importer import HotFolderImporter
    from sohoa.hotfolder.watcher import CompleteFile
    from sohoa.journal import Journal
    from sohoa.pipeline import Pipeline

    real_set_aside = splitting.BatchSplitter._set_aside

    def set_aside_then_die(self, path, role, sheet_id):
        real_set_aside(self, path, role, sheet_id)
        os.kill(os.getpid(), signal.SIGKILL)

    splitting.BatchSplitter._set_aside = set_aside_then_die
    config = helpers.box_config(Path(sys.argv[1]))
    journal = Journal(config.journal_path, manifests_dir=config.spool_dir)
    pipeline = Pipeline(config, journal, scanner=None, ocr=None, signer=None, archive=None)
    HotFolderImporter(config, journal, pipeline).import_file(CompleteFile(Path(sys.argv[2]), None, "closed"))
    """
)


def test_kill_during_split_imports_once(tmp_path):
    config = box_config(tmp_path)
    prepare_hot_folder(config.capture.hot_folder)
    first, second = sample_pages("quyet-dinh")[:2]
    source = batch_pdf(Path(config.capture.hot_folder) / "lo.pdf", [first, Sheet(kind="separator", sheet_id=new_sheet_id()), second])

    # Killed after the second job's row and its sheet file exist, inside the import's transaction.
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DURING_SPLIT.format(tests=str(Path(__file__).parent)), str(tmp_path), str(source)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "daemon")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    journal, _report = open_journal(config)
    try:
        assert journal.jobs_in(*JOB_STATES) == [], "a half-imported file left jobs in the journal"
        assert source.exists()
        assert not any(path.is_dir() for path in config.spool_dir.iterdir()), "the uncommitted jobs' folders stayed in the spool"
        assert len(list((config.box.data_dir / "orphans").iterdir())) == 2
        pipeline = Pipeline(config, journal, scanner=None, ocr=None, signer=None, archive=None)
        outcome = HotFolderImporter(config, journal, pipeline).import_file(CompleteFile(source, None, "closed"))
        assert outcome.status == IMPORTED
        assert [job.page_count for job in outcome.jobs] == [1, 1]
        assert len(journal.jobs_in(*JOB_STATES)) == 2
    finally:
        journal.close()


def test_only_sheets_rejected(importer):
    source = batch_pdf(importer.root / "chi-to-tach.pdf", [Sheet(kind="separator", sheet_id=new_sheet_id())])
    outcome = importer.import_file(CompleteFile(source, None, "closed"))
    assert outcome.status == REJECTED
    assert outcome.error.code == "import_blank"
    assert importer.journal.jobs_in(*JOB_STATES) == []


# what is not imported


def test_box_signed_output_rejected(importer):
    source = text_pdf(importer.root / "H31.01_QĐ_000007_V1.pdf")
    made_here = importer.journal.create_job(origin="button")
    importer.journal.set_state(made_here.id, "uploaded", doc_code="H31.01_QĐ_000007_V1", sha256=hashlib.sha256(source.read_bytes()).hexdigest())

    outcome = importer.import_file(CompleteFile(source, None, "closed"))

    assert outcome.status == REJECTED
    assert outcome.error.code == "import_duplicate"
    assert "H31.01_QĐ_000007_V1" in str(outcome.error)
    reason = (importer.root / "rejected" / (source.name + REASON_SUFFIX)).read_text(encoding="utf-8")
    assert "H31.01_QĐ_000007_V1" in reason
    assert importer.journal.jobs_in(*JOB_STATES) == [importer.journal.get_job(made_here.id)]


def test_untrusted_signer_warned_and_described(importer, token_signer, tmp_path, caplog):
    signer, _ca_cert = token_signer
    source = signed_pdf(signer, tmp_path, "ngoai-danh-sach")
    signer_name = verify_pdf(source, []).signer
    assert signer_name
    shutil.move(source, importer.root / source.name)

    with caplog.at_level(logging.INFO):
        outcome = importer.import_file(CompleteFile(importer.root / source.name, None, "closed"))

    assert outcome.status == IMPORTED
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1, [(record.name, record.getMessage()) for record in warnings]
    assert warnings[0].name == "sohoa.hotfolder.importer"
    assert warnings[0].exc_info is None
    message = warnings[0].getMessage()
    assert source.name in message
    assert signer_name in message
    assert "not trusted by the configured trust roots" in message
    assert not any("FAILED" in record.getMessage() for record in caplog.records if record.name.startswith("sohoa"))

    metadata = importer.pipeline.upload_metadata(outcome.job)
    assert metadata["x_import"]["signature"] == {"valid": True, "intact": True, "trusted": False, "signer": signer_name}
    sent = json.dumps(metadata, ensure_ascii=False)
    assert "FAILED" not in sent
    assert str(importer.config.spool_dir) not in sent


def test_blank_image_rejected(importer):
    source = importer.root / "trang-trang.png"
    Image.fromarray(blank_scan(3, dpi=300, colour=False)).save(source, dpi=(300, 300))

    outcome = importer.import_file(CompleteFile(source, None, "closed"))

    assert outcome.status == REJECTED
    assert outcome.error.code == "import_blank"
    assert (importer.root / "rejected" / "trang-trang.png").exists()
    reason = (importer.root / "rejected" / ("trang-trang.png" + REASON_SUFFIX)).read_text(encoding="utf-8")
    assert "import_blank" in reason
    assert importer.journal.jobs_in(*JOB_STATES) == []


def test_unknown_subfolder_warned_once(tmp_path, caplog):
    inbox = tmp_path / "inbox"
    (inbox / "khac").mkdir(parents=True)
    (inbox / "khac" / "scan.png").write_bytes(sample_pages()[0].read_bytes())
    (inbox / "van-bang").mkdir()
    (inbox / "done").mkdir()
    watcher = HotFolderWatcher(inbox, profiles=["van-bang"], default_profile=None, settle_seconds=1, on_complete=Reports())

    with caplog.at_level(logging.WARNING, logger="sohoa.hotfolder.watcher"):
        watcher._list_folder()
        watcher._list_folder()

    warnings = [record.getMessage() for record in caplog.records if record.name == "sohoa.hotfolder.watcher"]
    assert len(warnings) == 1, warnings
    assert str(inbox / "khac") in warnings[0]
    assert "van-bang" in warnings[0]
