"""RFC 3161 timestamps from a local time-stamping authority on 127.0.0.1: B-T, B-B fallback, document timestamps."""

from __future__ import annotations

import hashlib
import json
import socket
from datetime import datetime
from pathlib import Path

import pikepdf
import pytest
import requests

from sohoa.config import UploadConfig, parse_config
from sohoa.errors import TimestampUnavailableError
from sohoa.fields import Field, fields_to_json
from sohoa.fsutil import sha256_file
from sohoa.journal import Journal
from sohoa.pdf import ConversionMark, PageInput, build_pdf
from sohoa.pdf.conformance import check_pdfa
from sohoa.pipeline import Pipeline
from sohoa.receiver import ArchiveReceiver
from sohoa.recovery import RecoveryReport, repair_jobs
from sohoa.signing import TokenSigner, add_document_timestamp, make_timestamper, verify_pdf
from sohoa.testbed.legal import UNIT_NAME, add_key, issue_tsa_identity, issue_unit_identity, run_local_tsa
from sohoa.testbed.pdf import render_page
from sohoa.testbed.pki import create_test_pki
from sohoa.testbed.softhsm import create_test_token
from sohoa.upload import ArchiveClient

OPERATOR = "Phạm Thị Hương"
PIN_ENV = "SOHOA_TEST_TSA_PIN"
DPI = 150
TSA_NAME = "Sohoa Test TSA (not for production)"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return create_test_pki(tmp_path_factory.mktemp("pki"), signer_name=OPERATOR)


@pytest.fixture
def tsa(pki, tmp_path):
    with run_local_tsa(issue_tsa_identity(pki, tmp_path / "tsa")) as authority:
        yield authority


@pytest.fixture
def signing(pki, tsa, tmp_path, monkeypatch):
    """Signing settings for a token with the operator's and the unit's keys, with the local TSA."""
    token = create_test_token(tmp_path / "hsm", pki, pin="808080")
    add_key(token, issue_unit_identity(pki, tmp_path / "unit"), "0c", "unit")
    for name, value in token.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(PIN_ENV, token.pin)
    return token.signing_config(pin_env=PIN_ENV, unit_key_id="0c", tsa_url=tsa.url, tsa_timeout_seconds=5)


@pytest.fixture
def unsigned(tmp_path):
    image = tmp_path / "page-1.png"
    text = render_page(image, ["CHỨNG CHỈ", "Số: 3/CC-SGDĐT"], dpi=DPI)
    mark = ConversionMark(
        converted_at=datetime.now().astimezone(),
        operator=OPERATOR,
        unit=UNIT_NAME,
        doc_code="H31.01_CC_000003_V1",
        pages_sha256="9e" * 32,
    )
    out = tmp_path / "unsigned.pdf"
    build_pdf([PageInput(image, text, DPI)], out, mark=mark, metadata={"DocCode": mark.doc_code})
    return out


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/tsa"


def test_signature_carries_timestamp(signing, unsigned, tmp_path, pki, tsa):
    signed = tmp_path / "signed.pdf"

    outcome = TokenSigner(signing).sign_pdf(unsigned, signed, signer_name=OPERATOR)
    result = verify_pdf(signed, [pki.ca_cert_path])

    assert outcome.timestamped
    assert not outcome.timestamp_pending
    assert tsa.requests >= 1
    (status,) = result.signatures
    assert status.timestamp is not None
    assert status.timestamp_valid is True
    assert status.ok, status.summary
    assert check_pdfa(signed).findings == ()


def test_tsa_down_signs_without_timestamp(signing, unsigned, tmp_path, pki, tsa):
    tsa.available = False
    signed = tmp_path / "signed.pdf"

    outcome = TokenSigner(signing).sign_pdf(unsigned, signed, signer_name=OPERATOR)
    result = verify_pdf(signed, [pki.ca_cert_path])

    assert not outcome.timestamped
    assert outcome.timestamp_pending
    assert result.signatures[0].timestamp is None
    assert result.signatures[0].ok


def test_tsa_unreachable_signs_without_timestamp(signing, unsigned, tmp_path):
    config = signing.model_copy(update={"tsa_url": _closed_port_url()})

    outcome = TokenSigner(config).sign_pdf(unsigned, tmp_path / "signed.pdf", signer_name=OPERATOR)

    assert outcome.timestamp_pending
    assert (tmp_path / "signed.pdf").exists()


def test_no_tsa_configured_is_plain_b_b(signing, unsigned, tmp_path, tsa):
    config = signing.model_copy(update={"tsa_url": None})

    outcome = TokenSigner(config).sign_pdf(unsigned, tmp_path / "signed.pdf", signer_name=OPERATOR)

    assert not outcome.timestamped
    assert not outcome.timestamp_pending
    assert tsa.requests == 0


def test_document_timestamp_added_later(signing, unsigned, tmp_path, pki, tsa):
    tsa.available = False
    signed = tmp_path / "signed.pdf"
    TokenSigner(signing).sign_pdf(unsigned, signed, signer_name=OPERATOR)
    tsa.available = True
    stamped = tmp_path / "stamped.pdf"

    add_document_timestamp(signed, stamped, make_timestamper(signing))
    result = verify_pdf(stamped, [pki.ca_cert_path])

    assert result.valid, result.summary

    assert result.intact, result.summary

    assert result.trusted, result.summary
    signature, timestamp = result.signatures
    assert signature.kind == "signature"
    assert signature.modification == "LTA_UPDATES"
    assert timestamp.kind == "document_timestamp"
    assert timestamp.signer == TSA_NAME
    assert timestamp.timestamp is not None
    assert check_pdfa(stamped).findings == ()


def test_document_timestamp_unavailable_raises(signing, unsigned, tmp_path, tsa):
    tsa.available = False
    signed = tmp_path / "signed.pdf"
    TokenSigner(signing).sign_pdf(unsigned, signed, signer_name=OPERATOR)

    with pytest.raises(TimestampUnavailableError):
        add_document_timestamp(signed, tmp_path / "stamped.pdf", make_timestamper(signing))

    assert not (tmp_path / "stamped.pdf").exists()


def test_both_signatures_timestamped(signing, unsigned, tmp_path, pki):
    TokenSigner(signing).sign_pdf(unsigned, tmp_path / "operator.pdf", signer_name=OPERATOR)
    TokenSigner.for_unit(signing).sign_pdf(tmp_path / "operator.pdf", tmp_path / "signed.pdf", signer_name=UNIT_NAME)

    result = verify_pdf(tmp_path / "signed.pdf", [pki.ca_cert_path])

    assert [status.timestamp_valid for status in result.signatures] == [True, True]
    assert result.valid
    assert result.intact
    assert result.trusted


# The pipeline: a B-B signature gets its document timestamp before upload.


def _signed_job(tmp_path: Path, signing, *, attach_fields: bool = False) -> tuple[Pipeline, object]:
    config = parse_config(
        {
            "box": {"site": "t", "device": "d", "unit": UNIT_NAME, "operator": OPERATOR, "agency_code": "H31.01", "data_dir": str(tmp_path / "data")},
            "scanner": {"device": "pnm:0"},
            "ocr": {"models_dir": str(tmp_path)},
            "signing": signing.model_dump(mode="json"),
            "pdf": {"attach_fields": attach_fields},
            "upload": {"url": "http://127.0.0.1:9", "token_file": str(tmp_path / "none")},
            "mqtt": {"host": "127.0.0.1"},
        }
    )
    journal = Journal(config.journal_path, manifests_dir=config.spool_dir)
    pipeline = Pipeline(config, journal, scanner=None, ocr=None, signer=TokenSigner(config.signing), archive=None)
    job = journal.create_job()
    image = tmp_path / "page-0001.png"
    text = render_page(image, ["QUYẾT ĐỊNH", "Số: 5/QĐ-SGDĐT"], dpi=DPI)
    journal.add_page(job.id, 1, image, "00" * 32, 100, 100, DPI)
    ocr_path = tmp_path / "page-0001.json"
    ocr_path.write_text(json.dumps(text.to_dict(), ensure_ascii=False), encoding="utf-8")
    journal.set_page_recognized(job.id, 1, ocr_path)
    job = journal.set_state(job.id, "recognized", fields=fields_to_json({"TypeName": Field("Quyết định", 0.95, True)}))
    return pipeline, pipeline.build(job)


def test_tsa_down_sets_journal_column(signing, tmp_path, tsa):
    tsa.available = False
    pipeline, job = _signed_job(tmp_path, signing)

    job = pipeline.sign(job)

    assert job.state == "signed"
    assert job.timestamp_pending == tsa.url
    assert pipeline.journal.get_job(job.id).timestamp_pending == tsa.url
    assert pipeline.journal.manifest(job.id)["timestamp_pending"] == tsa.url
    assert not pipeline.legacy_timestamp_marker(job).exists()


def test_pipeline_timestamps_pending_job(signing, tmp_path, tsa):
    tsa.available = False
    pipeline, job = _signed_job(tmp_path, signing)
    job = pipeline.sign(job)

    unchanged = pipeline.add_pending_timestamp(job)
    assert unchanged.sha256 == job.sha256
    assert unchanged.timestamp_pending == tsa.url

    tsa.available = True
    stamped = pipeline.add_pending_timestamp(job)

    assert stamped.timestamp_pending is None
    assert pipeline.journal.manifest(job.id)["timestamp_pending"] is None
    assert stamped.sha256 == sha256_file(Path(job.signed_path))
    assert stamped.sha256 != job.sha256
    kinds = [status.kind for status in verify_pdf(Path(job.signed_path), signing.trust_roots).signatures]
    assert kinds == ["signature", "document_timestamp"]
    with pikepdf.open(job.signed_path) as pdf:
        assert pdf.open_metadata()["pdfaid:part"] == "2"


def test_document_timestamp_keeps_pdfa_3b(signing, tmp_path, tsa):
    tsa.available = False
    pipeline, job = _signed_job(tmp_path, signing, attach_fields=True)
    job = pipeline.sign(job)
    tsa.available = True

    stamped = pipeline.add_pending_timestamp(job)

    assert stamped.timestamp_pending is None
    report = check_pdfa(Path(job.signed_path))
    assert report.findings == ()
    assert report.flavour == "3b"


def test_timestamp_added_before_upload(signing, tmp_path, tsa):
    tsa.available = False
    pipeline, job = _signed_job(tmp_path, signing)
    job = pipeline.sign(job)
    tsa.available = True
    receiver = ArchiveReceiver(tmp_path / "store")
    receiver.start()
    try:
        pipeline.archive = ArchiveClient(UploadConfig(url=receiver.url, timeout_seconds=5))
        pipeline.upload(job)
        download = requests.get(f"{receiver.url}/api/v1/documents/download/{job.doc_code}", timeout=5)
    finally:
        receiver.stop()

    uploaded = pipeline.journal.get_job(job.id)
    assert uploaded.state == "uploaded"
    assert uploaded.timestamp_pending is None
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == uploaded.sha256
    stored = tmp_path / "downloaded.pdf"
    stored.write_bytes(download.content)
    kinds = [status.kind for status in verify_pdf(stored, signing.trust_roots).signatures]
    assert kinds == ["signature", "document_timestamp"]


def test_legacy_marker_still_honoured(signing, tmp_path, tsa):
    pipeline, job = _signed_job(tmp_path, signing)
    tsa.available = False
    job = pipeline.sign(job)
    # A job spooled by the version that kept the pending state in a file.
    job = pipeline.journal.update_job(job.id, timestamp_pending=None)
    marker = pipeline.legacy_timestamp_marker(job)
    marker.write_text(f"{tsa.url}\n", encoding="utf-8")
    tsa.available = True

    stamped = pipeline.add_pending_timestamp(job)

    assert not marker.exists()
    assert stamped.timestamp_pending is None
    assert stamped.sha256 != job.sha256
    kinds = [status.kind for status in verify_pdf(Path(job.signed_path), signing.trust_roots).signatures]
    assert kinds == ["signature", "document_timestamp"]


def test_recovery_moves_legacy_marker(signing, tmp_path, tsa):
    tsa.available = False
    pipeline, job = _signed_job(tmp_path, signing)
    job = pipeline.sign(job)
    job = pipeline.journal.update_job(job.id, timestamp_pending=None)
    marker = pipeline.legacy_timestamp_marker(job)
    marker.write_text(f"{tsa.url}\n", encoding="utf-8")
    report = RecoveryReport()

    repair_jobs(pipeline.journal, pipeline.config, report)

    assert pipeline.journal.get_job(job.id).timestamp_pending == tsa.url
    assert not marker.exists()
    assert any("marker file" in repair for repair in report.repairs)


def test_pipeline_timestamped_job_has_no_pending(signing, tmp_path):
    pipeline, job = _signed_job(tmp_path, signing)

    job = pipeline.sign(job)

    assert job.timestamp_pending is None
    assert pipeline.add_pending_timestamp(job) == job
