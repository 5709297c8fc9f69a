"""Start-up recovery on spool and journal states that a crash or a damaged card leaves behind.

Each test builds the on-disk state directly (the files a killed daemon
leaves), runs :func:`sohoa.recovery.open_journal` and checks what it repaired.
"""

from __future__ import annotations

import json
from pathlib import Path

import pikepdf
import pytest
from PIL import Image

from sohoa.config import parse_config
from sohoa.fsutil import sha256_file, write_atomic
from sohoa.journal import MANIFEST_NAME, Journal
from sohoa.recovery import check_database, open_journal
from sohoa.scanner import PAGE_NAME_TEMPLATE


@pytest.fixture
def config(tmp_path):
    return parse_config(
        {
            "box": {
                "site": "test",
                "device": "box-01",
                "unit": "Test unit",
                "operator": "Test operator",
                "agency_code": "H31.01",
                "data_dir": str(tmp_path / "data"),
            },
            "scanner": {"device": "pnm:0"},
            "signing": {"pkcs11_module": "/nonexistent.so", "token_label": "t", "key_id": "01"},
            "upload": {"url": "http://127.0.0.1:9"},
        }
    )


def open_plain(config) -> Journal:
    config.spool_dir.mkdir(parents=True, exist_ok=True)
    return Journal(config.journal_path, manifests_dir=config.spool_dir)


def write_page(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (40, 60), shade).save(path, dpi=(300, 300))


def add_scanned_job(journal: Journal, spool: Path, pages: int = 2):
    job = journal.create_job()
    batch = spool / job.id / "batch-01"
    for index in range(1, pages + 1):
        path = batch / PAGE_NAME_TEMPLATE.format(index=index)
        write_page(path, 40 * index)
        journal.add_page(job.id, index, path, sha256_file(path), 40, 60, 300)
    return journal.get_job(job.id)


def make_signed_job(journal: Journal, spool: Path, sequence: int):
    """Return a job in ``signed`` state with OCR results, an unsigned PDF and a stand-in signed file."""
    job = add_scanned_job(journal, spool)
    folder = spool / job.id
    for page in journal.pages(job.id):
        ocr_path = folder / "ocr" / f"page-{page.seq:04d}.json"
        write_atomic(ocr_path, json.dumps({"lines": []}).encode())
        journal.set_page_recognized(job.id, page.seq, ocr_path)
    journal.set_state(job.id, "recognized", fields={"Subject": {"value": "thử", "confidence": 0.9, "sure": True}})
    doc_code = f"H31.01_QĐ_{sequence:06d}_V1"
    journal.update_job(job.id, doc_code=doc_code)
    unsigned = folder / f"{doc_code}.unsigned.pdf"
    pdf = pikepdf.new()
    pdf.add_blank_page()
    pdf.save(unsigned)
    journal.set_state(job.id, "built", pdf_path=str(unsigned))
    signed = folder / f"{doc_code}.pdf"
    signed.write_bytes(unsigned.read_bytes() + b"%signed\n")
    return journal.set_state(job.id, "signed", signed_path=str(signed), sha256=sha256_file(signed))


def test_removes_part_files(config):
    journal = open_plain(config)
    job = add_scanned_job(journal, config.spool_dir)
    journal.set_state(job.id, "captured")
    journal.close()
    leftover = config.spool_dir / job.id / "batch-01" / ".page-0003.png.abc123.part"
    leftover.write_bytes(b"half a page")

    journal, report = open_journal(config)

    assert not leftover.exists()
    assert any("temporary file" in repair for repair in report.repairs)
    assert journal.get_job(job.id).state == "captured"
    journal.close()


def test_scanning_job_with_pages_becomes_interrupted(config):
    journal = open_plain(config)
    job = add_scanned_job(journal, config.spool_dir, pages=2)
    journal.close()

    journal, report = open_journal(config)

    recovered = journal.get_job(job.id)
    assert recovered.state == "interrupted"
    assert recovered.page_count == 2
    assert recovered.error_code == "scan_cut_short"
    assert report.repairs
    journal.close()


def test_scanning_job_adopts_unrecorded_page(config):
    journal = open_plain(config)
    job = add_scanned_job(journal, config.spool_dir, pages=1)
    journal.close()
    # The page file reached its final name, but the daemon died before its row was committed.
    write_page(config.spool_dir / job.id / "batch-01" / PAGE_NAME_TEMPLATE.format(index=2), 90)

    journal, _report = open_journal(config)

    pages = journal.pages(job.id)
    assert [page.seq for page in pages] == [1, 2]
    assert pages[1].sha256 == sha256_file(Path(pages[1].path))
    assert journal.get_job(job.id).state == "interrupted"
    journal.close()


def test_empty_scanning_job_is_discarded(config):
    journal = open_plain(config)
    job = journal.create_job()
    journal.close()

    journal, _report = open_journal(config)

    assert journal.jobs_in("scanning", "interrupted") == []
    assert not (config.spool_dir / job.id).exists()
    journal.close()


def test_intact_signed_job_is_kept(config):
    journal = open_plain(config)
    job = make_signed_job(journal, config.spool_dir, 1)
    journal.close()

    journal, report = open_journal(config)

    recovered = journal.get_job(job.id)
    assert recovered.state == "signed"
    assert recovered.signed_path == job.signed_path
    assert recovered.sha256 == job.sha256
    assert report.repairs == []
    journal.close()


def test_deleted_signed_pdf_steps_back_to_built(config):
    journal = open_plain(config)
    job = make_signed_job(journal, config.spool_dir, 1)
    journal.close()
    Path(job.signed_path).unlink()

    journal, _report = open_journal(config)

    recovered = journal.get_job(job.id)
    assert recovered.state == "built"
    assert recovered.signed_path is None
    assert recovered.pdf_path == job.pdf_path
    journal.close()


def test_broken_pdfs_step_back_to_recognized(config):
    journal = open_plain(config)
    job = make_signed_job(journal, config.spool_dir, 1)
    journal.close()
    Path(job.signed_path).write_bytes(b"%PDF-1.7 changed")
    Path(job.pdf_path).write_bytes(b"%PDF-1.7 trunc")

    journal, _report = open_journal(config)

    recovered = journal.get_job(job.id)
    assert recovered.state == "recognized"
    assert recovered.pdf_path is None
    assert all(page.state == "recognized" for page in journal.pages(job.id))
    journal.close()


def test_missing_ocr_result_steps_back_to_captured(config):
    journal = open_plain(config)
    job = make_signed_job(journal, config.spool_dir, 1)
    journal.close()
    Path(job.signed_path).unlink()
    Path(job.pdf_path).unlink()
    (config.spool_dir / job.id / "ocr" / "page-0002.json").unlink()

    journal, _report = open_journal(config)

    assert journal.get_job(job.id).state == "captured"
    assert [page.state for page in journal.pages(job.id)] == ["recognized", "captured"]
    journal.close()


def test_changed_page_file_fails_job(config):
    journal = open_plain(config)
    job = add_scanned_job(journal, config.spool_dir)
    journal.set_state(job.id, "captured")
    journal.close()
    write_page(Path(journal_pages_path(config, job.id, 1)), 200)

    journal, _report = open_journal(config)

    recovered = journal.get_job(job.id)
    assert recovered.state == "failed"
    assert recovered.error_code == "page_lost"
    journal.close()


def journal_pages_path(config, job_id: str, seq: int) -> str:
    journal = open_plain(config)
    try:
        return next(page.path for page in journal.pages(job_id) if page.seq == seq)
    finally:
        journal.close()


def test_orphan_folders_leave_spool(config):
    journal = open_plain(config)
    journal.close()
    empty = config.spool_dir / "20260101T000000Z-aaaaaa"
    empty.mkdir()
    (empty / "batch-01").mkdir()
    with_file = config.spool_dir / "20260101T000000Z-bbbbbb"
    write_page(with_file / "batch-01" / "page-0001.png", 10)

    journal, _report = open_journal(config)

    assert not empty.exists()
    assert not with_file.exists()
    assert (config.box.data_dir / "orphans" / with_file.name / "batch-01" / "page-0001.png").exists()
    journal.close()


def test_manifest_follows_state(config):
    journal = open_plain(config)
    job = make_signed_job(journal, config.spool_dir, 7)

    manifest = json.loads((config.spool_dir / job.id / MANIFEST_NAME).read_text(encoding="utf-8"))

    assert manifest["state"] == "signed"
    assert manifest["doc_code"] == "H31.01_QĐ_000007_V1"
    assert manifest["signed_pdf"] == Path(job.signed_path).name
    assert manifest["sha256"] == job.sha256
    assert [page["file"] for page in manifest["pages"]] == ["batch-01/page-0001.png", "batch-01/page-0002.png"]
    journal.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_journal_is_rebuilt(config, damage):
    journal = open_plain(config)
    signed = make_signed_job(journal, config.spool_dir, 41)
    captured = add_scanned_job(journal, config.spool_dir)
    journal.set_state(captured.id, "captured")
    journal.close()
    for suffix in ("-wal", "-shm"):
        config.journal_path.with_name(config.journal_path.name + suffix).unlink(missing_ok=True)
    if damage == "garbage":
        config.journal_path.write_bytes(b"this is not a database" * 100)
    else:
        data = config.journal_path.read_bytes()
        config.journal_path.write_bytes(data[:100] + b"\0" * (len(data) - 100))
    assert check_database(config.journal_path) is not None

    journal, report = open_journal(config)

    assert report.rebuilt
    assert report.jobs_restored == 2
    assert report.corrupt_copy is not None and report.corrupt_copy.exists()
    restored = journal.get_job(signed.id)
    assert restored.state == "signed"
    assert restored.sha256 == signed.sha256
    assert restored.signed_path == signed.signed_path
    assert restored.doc_code == signed.doc_code
    assert [page.state for page in journal.pages(signed.id)] == ["recognized", "recognized"]
    assert journal.get_job(captured.id).state == "captured"
    restored_pages = journal.pages(captured.id)
    assert len(restored_pages) == 2
    assert all(page.sha256 == sha256_file(Path(page.path)) for page in restored_pages)
    assert journal.next_sequence("doc_code:H31.01") == 42
    assert journal.next_sequence("mqtt_session") > 1_000_000
    indexed = {row["job_id"] for row in journal.db.query("select job_id from search_documents")}
    assert indexed == {signed.id}
    journal.close()


def test_rebuilt_journal_raises_alert(config):
    from sohoa.app import build_daemon

    journal = open_plain(config)
    make_signed_job(journal, config.spool_dir, 3)
    journal.close()
    config.journal_path.write_bytes(b"garbage" * 1000)

    daemon = build_daemon(config, with_panel=False, with_reporter=False)
    try:
        daemon.start()
        state = daemon.last_state
        assert state["alert_code"] == "journal_rebuilt"
        assert state["state"] == "alert"
        assert state["queue"]["to_upload"] == 1
    finally:
        daemon.stop()


# Retention purge


def upload_job(journal: Journal, job, receipt_sha256: str | None):
    receipt = {"DocCode": job.doc_code, "sha256": receipt_sha256, "archive_id": "a-1"} if receipt_sha256 else None
    return journal.set_state(job.id, "uploaded", receipt=receipt)


def test_purge_empties_confirmed_old_jobs(config):
    from datetime import datetime, timedelta, timezone

    from sohoa.retention import purge_uploaded

    journal = open_plain(config)
    confirmed = make_signed_job(journal, config.spool_dir, 1)
    confirmed = upload_job(journal, confirmed, receipt_sha256=confirmed.sha256)
    mismatched = make_signed_job(journal, config.spool_dir, 2)
    mismatched = upload_job(journal, mismatched, receipt_sha256="0" * 64)
    unreceipted = upload_job(journal, make_signed_job(journal, config.spool_dir, 3), receipt_sha256=None)
    waiting = make_signed_job(journal, config.spool_dir, 4)
    later = datetime.now(timezone.utc) + timedelta(days=31)

    assert purge_uploaded(journal, config.spool_dir, 30, now=datetime.now(timezone.utc)) == []
    purged = purge_uploaded(journal, config.spool_dir, 30, now=later)

    assert purged == [confirmed.id]
    folder = config.spool_dir / confirmed.id
    assert [path.name for path in folder.iterdir()] == [MANIFEST_NAME]
    assert json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))["purged_at"]
    assert journal.get_job(confirmed.id).purged_at is not None
    assert journal.get_job(confirmed.id).state == "uploaded"
    for kept in (mismatched, unreceipted, waiting):
        assert Path(kept.signed_path).exists(), kept.id
        assert journal.get_job(kept.id).purged_at is None
    assert purge_uploaded(journal, config.spool_dir, 30, now=later) == []
    journal.close()


def test_purge_empties_old_cancelled_jobs(config):
    from datetime import datetime, timedelta, timezone

    from sohoa.retention import purge_cancelled

    journal = open_plain(config)
    cancelled = add_scanned_job(journal, config.spool_dir)
    journal.set_state(cancelled.id, "cancelled")
    interrupted = add_scanned_job(journal, config.spool_dir)
    journal.set_state(interrupted.id, "interrupted")
    later = datetime.now(timezone.utc) + timedelta(days=31)

    assert purge_cancelled(journal, config.spool_dir, 30, now=datetime.now(timezone.utc)) == []
    assert purge_cancelled(journal, config.spool_dir, 30, now=later) == [cancelled.id]

    assert [path.name for path in (config.spool_dir / cancelled.id).iterdir()] == [MANIFEST_NAME]
    assert journal.get_job(cancelled.id).purged_at is not None
    assert journal.get_job(cancelled.id).state == "cancelled"
    assert all(Path(page.path).exists() for page in journal.pages(interrupted.id))
    assert purge_cancelled(journal, config.spool_dir, 30, now=later) == []
    journal.close()


def test_purged_jobs_survive_rebuild(config):
    from datetime import datetime, timedelta, timezone

    from sohoa.retention import purge_uploaded

    journal = open_plain(config)
    job = make_signed_job(journal, config.spool_dir, 9)
    upload_job(journal, job, receipt_sha256=job.sha256)
    purge_uploaded(journal, config.spool_dir, 0, now=datetime.now(timezone.utc) + timedelta(seconds=5))
    journal.close()
    config.journal_path.write_bytes(b"garbage" * 1000)

    journal, report = open_journal(config)

    assert report.rebuilt
    restored = journal.get_job(job.id)
    assert restored.state == "uploaded"
    assert restored.purged_at is not None
    assert [repair for repair in report.repairs if "missing" in repair] == []
    assert journal.next_sequence("doc_code:H31.01") == 10
    journal.close()


def test_missing_journal_with_manifests_is_rebuilt(config):
    journal = open_plain(config)
    job = make_signed_job(journal, config.spool_dir, 5)
    journal.close()
    for suffix in ("", "-wal", "-shm"):
        config.journal_path.with_name(config.journal_path.name + suffix).unlink(missing_ok=True)

    journal, report = open_journal(config)

    assert report.rebuilt
    assert report.corrupt_copy is None
    assert journal.get_job(job.id).state == "signed"
    journal.close()


def test_empty_journal_file_is_not_corrupt(config):
    config.box.data_dir.mkdir(parents=True)
    config.journal_path.touch()

    assert check_database(config.journal_path) is None


def test_rebuild_keeps_profile_and_origin(config):
    journal = open_plain(config)
    job = make_signed_job(journal, config.spool_dir, 9)
    journal.update_job(job.id, profile="vanbang", origin="scanner_button")
    journal.close()
    for suffix in ("", "-wal", "-shm"):
        config.journal_path.with_name(config.journal_path.name + suffix).unlink(missing_ok=True)

    journal, report = open_journal(config)

    restored = journal.get_job(job.id)
    assert report.rebuilt
    assert restored.profile == "vanbang"
    assert restored.origin == "scanner_button"
    journal.close()
