"""Upload client against the reference archive receiver, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import requests
from fpdf import FPDF

import sohoa
from sohoa.config import UploadConfig
from sohoa.errors import ArchiveUnreachableError, ConfigError, UploadConflictError, UploadRejectedError, UploadSettingsError
from sohoa.receiver import ArchiveReceiver, add_parser, parse_listen, run, validate_metadata
from sohoa.upload import ArchiveClient, Backoff

TOKEN = "test-token-5f2c"
DOC_CODE = "G06.01_CV_000021_V1"


def make_pdf(path: Path, text: str, padding_bytes: int = 0) -> Path:
    """Write a one-page PDF; ``padding_bytes`` of random data in a comment make it larger."""
    document = FPDF()
    document.add_page()
    document.set_font("Helvetica", size=12)
    document.cell(text=text)
    data = bytes(document.output())
    if padding_bytes:
        filler = random.Random(7).randbytes(padding_bytes)
        data = data.replace(b"%%EOF", b"%" + filler.replace(b"\n", b"x").replace(b"\r", b"x") + b"\n%%EOF")
    path.write_bytes(data)
    return path


def make_metadata(doc_code: str = DOC_CODE, **overrides: object) -> dict:
    metadata = {
        "DocCode": doc_code,
        "TypeName": "Công văn",
        "CodeNumber": "15",
        "CodeNotation": "CV-SGDĐT",
        "IssuedDate": "2024-01-05",
        "OrganName": "Sở Giáo dục và Đào tạo",
        "Subject": "Về việc tổ chức kỳ thi",
        "Language": "vi",
        "PageAmount": 1,
        "Position": "Giám đốc",
        "FullName": "Nguyễn Văn An",
        "FieldConfidence": {"CodeNumber": "extracted", "Subject": "unsure"},
        "site": "sgd-hq",
        "device": "box-01",
        "operator": "Trần Thị Bình",
        "scanned_at": "2026-12-04T21:30:00+07:00",
    }
    metadata.update(overrides)
    return metadata


def multipart(parts: list[tuple[str, bytes]], boundary: str = "test-boundary-1") -> tuple[bytes, str]:
    """Build a multipart/form-data body by hand, for requests the client would never send."""
    body = b""
    for name, value in parts:
        filename = '; filename="doc.pdf"' if name == "file" else ""
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode() + value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.fixture
def receiver(tmp_path):
    archive = ArchiveReceiver(tmp_path / "store", token=TOKEN)
    archive.start()
    yield archive
    archive.stop()


def client_for(url: str, tmp_path: Path, token: str = TOKEN) -> ArchiveClient:
    token_file = tmp_path / f"token-{hashlib.sha1(token.encode()).hexdigest()[:8]}"
    token_file.write_text(token + "\n", encoding="utf-8")
    return ArchiveClient(UploadConfig(url=url, token_file=token_file, timeout_seconds=3.0))


@pytest.fixture
def client(receiver, tmp_path):
    archive_client = client_for(receiver.url, tmp_path)
    yield archive_client
    archive_client.close()


@pytest.fixture
def pdf(tmp_path):
    return make_pdf(tmp_path / f"{DOC_CODE}_20240105_cong-van.pdf", "Cong van so 15")


def auth() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


def stored_files(receiver: ArchiveReceiver) -> list[Path]:
    return sorted(path for path in (receiver.store.root / "documents").rglob("*.pdf"))


# Client against the receiver


def test_upload_returns_matching_receipt(receiver, client, pdf):
    receipt = client.upload(DOC_CODE, pdf, make_metadata())

    assert receipt.doc_code == DOC_CODE
    assert receipt.sha256 == hashlib.sha256(pdf.read_bytes()).hexdigest()
    assert receipt.size == pdf.stat().st_size
    assert receipt.archive_id
    assert receipt.stored_at.endswith("+00:00")
    assert receipt.raw["DocCode"] == DOC_CODE
    assert [record["DocCode"] for record in receiver.records()] == [DOC_CODE]


def test_download_returns_same_bytes(receiver, client, pdf):
    receipt = client.upload(DOC_CODE, pdf, make_metadata())

    response = requests.get(f"{receiver.url}/api/v1/documents/download/{DOC_CODE}", headers=auth(), timeout=3)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.content == pdf.read_bytes()
    assert receipt.sha256 == hashlib.sha256(response.content).hexdigest()
    assert "filename*=UTF-8''G06.01_CV_000021_V1_20240105_cong-van.pdf" in response.headers["Content-Disposition"]
    assert response.headers["Repr-Digest"].startswith("sha-256=:")


def test_large_file_streams_intact(receiver, client, tmp_path):
    big = make_pdf(tmp_path / "big.pdf", "big", padding_bytes=700_000)

    receipt = client.upload(DOC_CODE, big, make_metadata())
    response = requests.get(f"{receiver.url}/api/v1/documents/download/{DOC_CODE}", headers=auth(), timeout=3)

    assert receipt.size == big.stat().st_size
    assert response.content == big.read_bytes()


def test_reupload_same_content_is_idempotent(receiver, client, pdf):
    first = client.upload(DOC_CODE, pdf, make_metadata())
    second = client.upload(DOC_CODE, pdf, make_metadata())

    assert second == first
    assert len(receiver.records()) == 1
    assert len(stored_files(receiver)) == 1
    assert list((receiver.store.root / "incoming").iterdir()) == []


def test_same_code_other_content_conflicts(receiver, client, pdf, tmp_path):
    client.upload(DOC_CODE, pdf, make_metadata())
    other = make_pdf(tmp_path / "other.pdf", "Another page")

    with pytest.raises(UploadConflictError) as caught:
        client.upload(DOC_CODE, other, make_metadata())

    assert DOC_CODE in str(caught.value)
    assert len(stored_files(receiver)) == 1
    assert receiver.records()[0]["sha256"] == hashlib.sha256(pdf.read_bytes()).hexdigest()


def test_closed_port_is_unreachable_quickly(tmp_path, pdf):
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    archive_client = client_for(f"http://127.0.0.1:{port}", tmp_path)

    started = time.monotonic()
    with pytest.raises(ArchiveUnreachableError):
        archive_client.upload(DOC_CODE, pdf, make_metadata())

    assert time.monotonic() - started < 2.0
    assert archive_client.probe() is False


def test_silent_server_times_out(tmp_path, pdf):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN, encoding="utf-8")
        config = UploadConfig(url=f"http://127.0.0.1:{silent.getsockname()[1]}", token_file=token_file, timeout_seconds=0.3)
        archive_client = ArchiveClient(config)

        started = time.monotonic()
        with pytest.raises(ArchiveUnreachableError):
            archive_client.upload(DOC_CODE, pdf, make_metadata())

    assert time.monotonic() - started < 3.0


def test_concurrent_same_upload_stores_once(receiver, pdf, tmp_path):
    receipts: list = []
    errors: list = []

    def upload_once(archive_client: ArchiveClient) -> None:
        try:
            receipts.append(archive_client.upload(DOC_CODE, pdf, make_metadata()))
        except Exception as exc:
            errors.append(exc)
        finally:
            archive_client.close()

    clients = [client_for(receiver.url, tmp_path) for _ in range(4)]
    workers = [threading.Thread(target=upload_once, args=(archive_client,)) for archive_client in clients]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=10)

    assert errors == []
    assert len(receipts) == 4
    assert len({receipt.archive_id for receipt in receipts}) == 1
    assert len(stored_files(receiver)) == 1


def test_injected_failures_then_success(receiver, client, pdf):
    receiver.fail_next(2, 503)

    for _attempt in range(2):
        with pytest.raises(ArchiveUnreachableError) as caught:
            client.upload(DOC_CODE, pdf, make_metadata())
        assert "503" in str(caught.value)
    receipt = client.upload(DOC_CODE, pdf, make_metadata())

    assert receipt.doc_code == DOC_CODE
    assert len(receiver.records()) == 1


def test_wrong_token_is_rejected(receiver, pdf, tmp_path):
    archive_client = client_for(receiver.url, tmp_path, token="wrong-token")

    with pytest.raises(UploadSettingsError) as caught:
        archive_client.upload(DOC_CODE, pdf, make_metadata())

    assert caught.value.code == "upload_settings_invalid"
    assert "401" in str(caught.value)
    assert "upload.token_file" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert receiver.records() == []


def test_missing_token_is_rejected(receiver, pdf):
    archive_client = ArchiveClient(UploadConfig(url=receiver.url, timeout_seconds=3.0))

    with pytest.raises(UploadRejectedError):
        archive_client.upload(DOC_CODE, pdf, make_metadata())


def test_invalid_metadata_is_rejected_by_client(receiver, client, pdf):
    metadata = make_metadata()
    del metadata["TypeName"]

    with pytest.raises(UploadRejectedError) as caught:
        client.upload(DOC_CODE, pdf, metadata)

    assert not isinstance(caught.value, UploadSettingsError)
    assert caught.value.code == "upload_rejected"
    assert "400" in str(caught.value)
    assert "TypeName: missing" in str(caught.value)


def test_metadata_with_other_doc_code_fails_locally(receiver, client, pdf):
    with pytest.raises(UploadRejectedError):
        client.upload(DOC_CODE, pdf, make_metadata("G06.01_CV_000099_V1"))

    assert receiver.records() == []


def test_too_large_body_is_rejected(tmp_path, pdf):
    archive = ArchiveReceiver(tmp_path / "small-store", max_bytes=500)
    archive.start()
    try:
        archive_client = ArchiveClient(UploadConfig(url=archive.url, timeout_seconds=3.0))
        with pytest.raises(UploadRejectedError) as caught:
            archive_client.upload(DOC_CODE, pdf, make_metadata())
    finally:
        archive.stop()

    assert "413" in str(caught.value)


def test_unsure_required_field_may_be_empty(receiver, client, pdf):
    metadata = make_metadata(CodeNumber=None, IssuedDate="", FieldConfidence={"CodeNumber": "unsure", "IssuedDate": "unsure"})

    receipt = client.upload(DOC_CODE, pdf, metadata)

    assert receipt.doc_code == DOC_CODE
    assert receiver.records()[0]["metadata"]["FieldConfidence"]["CodeNumber"] == "unsure"


def test_vietnamese_doc_code_round_trips(receiver, client, tmp_path):
    doc_code = "G06.01_QĐ_000022_V1"
    document = make_pdf(tmp_path / f"{doc_code}_20240105_quyet-dinh.pdf", "Quyet dinh")

    client.upload(doc_code, document, make_metadata(doc_code, TypeName="Quyết định"))
    quoted = urllib.parse.quote(doc_code)
    record = requests.get(f"{receiver.url}/api/v1/documents/{quoted}", headers=auth(), timeout=3)
    download = requests.get(f"{receiver.url}/api/v1/documents/download/{quoted}", headers=auth(), timeout=3)

    assert record.status_code == 200
    assert record.json()["metadata"]["TypeName"] == "Quyết định"
    assert record.json()["filename"] == document.name
    assert download.content == document.read_bytes()


def test_probe_sees_running_archive(receiver, client):
    assert client.probe() is True


# Receiver responses to requests the client would not send


def post_import(receiver: ArchiveReceiver, body: bytes, content_type: str) -> requests.Response:
    return requests.post(
        f"{receiver.url}/api/v1/documents/import",
        data=body,
        headers={**auth(), "Content-Type": content_type},
        timeout=3,
    )


def test_receiver_rejects_missing_doc_code(receiver, pdf):
    metadata = make_metadata()
    del metadata["DocCode"]
    data = pdf.read_bytes()
    body, content_type = multipart(
        [("metadata", json.dumps(metadata).encode()), ("sha256", hashlib.sha256(data).hexdigest().encode()), ("file", data)]
    )

    response = post_import(receiver, body, content_type)

    assert response.status_code == 400
    assert "DocCode: missing" in response.json()["problems"]


def test_receiver_rejects_non_json_metadata(receiver, pdf):
    data = pdf.read_bytes()
    body, content_type = multipart(
        [("metadata", b"{not json"), ("sha256", hashlib.sha256(data).hexdigest().encode()), ("file", data)]
    )

    response = post_import(receiver, body, content_type)

    assert response.status_code == 400
    assert response.json()["error"] == "metadata_invalid"


def test_receiver_rejects_sha256_mismatch(receiver, pdf):
    data = pdf.read_bytes()
    body, content_type = multipart(
        [("metadata", json.dumps(make_metadata()).encode()), ("sha256", hashlib.sha256(b"other").hexdigest().encode()), ("file", data)]
    )

    response = post_import(receiver, body, content_type)

    assert response.status_code == 422
    assert response.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert receiver.records() == []
    assert list((receiver.store.root / "incoming").iterdir()) == []


def test_receiver_rejects_file_before_metadata(receiver, pdf):
    data = pdf.read_bytes()
    body, content_type = multipart([("file", data), ("metadata", json.dumps(make_metadata()).encode())])

    response = post_import(receiver, body, content_type)

    assert response.status_code == 400
    assert response.json()["error"] == "metadata_missing"


def test_receiver_rejects_non_pdf(receiver):
    data = b"GIF89a not a pdf"
    body, content_type = multipart(
        [("metadata", json.dumps(make_metadata()).encode()), ("sha256", hashlib.sha256(data).hexdigest().encode()), ("file", data)]
    )

    response = post_import(receiver, body, content_type)

    assert response.status_code == 400
    assert response.json()["error"] == "file_not_pdf"


def test_receiver_rejects_non_multipart(receiver):
    response = post_import(receiver, json.dumps(make_metadata()).encode(), "application/json")

    assert response.status_code == 400


def test_receiver_health_needs_no_token(receiver):
    response = requests.get(f"{receiver.url}/api/v1/health", timeout=3)

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_read_unknown_document_is_404(receiver):
    response = requests.get(f"{receiver.url}/api/v1/documents/G06.01_CV_000404_V1", headers=auth(), timeout=3)

    assert response.status_code == 404


def test_update_replaces_metadata(receiver, client, pdf):
    receipt = client.upload(DOC_CODE, pdf, make_metadata())
    corrected = make_metadata(CodeNumber="16", FieldConfidence={"CodeNumber": "confirmed"})

    response = requests.put(f"{receiver.url}/api/v1/documents/{DOC_CODE}", json=corrected, headers=auth(), timeout=3)
    record = requests.get(f"{receiver.url}/api/v1/documents/{DOC_CODE}", headers=auth(), timeout=3).json()

    assert response.status_code == 200
    assert record["metadata"]["CodeNumber"] == "16"
    assert record["sha256"] == receipt.sha256
    assert record["archive_id"] == receipt.archive_id


def test_update_rejects_other_doc_code(receiver, client, pdf):
    client.upload(DOC_CODE, pdf, make_metadata())

    response = requests.put(
        f"{receiver.url}/api/v1/documents/{DOC_CODE}", json=make_metadata("G06.01_CV_000099_V1"), headers=auth(), timeout=3
    )

    assert response.status_code == 400


def test_update_unknown_document_is_404(receiver):
    response = requests.put(
        f"{receiver.url}/api/v1/documents/G06.01_CV_000404_V1",
        json=make_metadata("G06.01_CV_000404_V1"),
        headers=auth(),
        timeout=3,
    )

    assert response.status_code == 404


def test_receiver_keeps_records_across_restart(tmp_path, pdf):
    store = tmp_path / "store"
    first = ArchiveReceiver(store, token=TOKEN)
    first.start()
    try:
        receipt = client_for(first.url, tmp_path).upload(DOC_CODE, pdf, make_metadata())
    finally:
        first.stop()
    (store / "incoming" / "leftover.pdf").write_bytes(b"%PDF-partial")

    second = ArchiveReceiver(store, token=TOKEN)
    second.start()
    try:
        again = client_for(second.url, tmp_path).upload(DOC_CODE, pdf, make_metadata())
        download = requests.get(f"{second.url}/api/v1/documents/download/{DOC_CODE}", headers=auth(), timeout=3)
    finally:
        second.stop()

    assert [record["archive_id"] for record in second.records()] == [receipt.archive_id]
    assert again == receipt
    assert download.content == pdf.read_bytes()
    assert list((store / "incoming").iterdir()) == []


# Metadata rules


def test_metadata_rules():
    assert validate_metadata(make_metadata()) == []
    assert validate_metadata([]) == ["metadata must be a JSON object"]
    cases = {
        "CodeNumber: empty": make_metadata(CodeNumber=""),
        "IssuedDate: '05/01/2024'": make_metadata(IssuedDate="05/01/2024"),
        "PageAmount: must be an integer": make_metadata(PageAmount="3"),
        "CodeNumber: 12 characters": make_metadata(CodeNumber="123456789012"),
        "scanned_at: '2026-12-04T21:30:00' has no time zone": make_metadata(scanned_at="2026-12-04T21:30:00"),
        "operator: missing or empty": make_metadata(operator=""),
        "Colour: unknown field": make_metadata(Colour="red"),
        "FieldConfidence.CodeNumber: 'maybe'": make_metadata(FieldConfidence={"CodeNumber": "maybe"}),
        "DocCode: 'bad code' does not have the form": make_metadata("bad code"),
    }
    for expected, metadata in cases.items():
        problems = validate_metadata(metadata)
        assert any(problem.startswith(expected) for problem in problems), (expected, problems)
    assert validate_metadata(make_metadata(x_batch="42")) == []


# Command line


def test_listen_address_parsing():
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ConfigError):
        parse_listen("8080")


def test_receiver_rejects_remote_listen(tmp_path):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["receiver", "--listen", "0.0.0.0:0", "--store", str(tmp_path / "store")])

    with pytest.raises(ConfigError) as caught:
        run(args)

    assert "--allow-remote" in str(caught.value)
    assert not (tmp_path / "store").exists()


RECEIVER_SCRIPT = """
import argparse, logging, sys
from sohoa.receiver import add_parser, run
logging.basicConfig(level=logging.INFO)
parser = argparse.ArgumentParser()
add_parser(parser.add_subparsers())
sys.exit(run(parser.parse_args(sys.argv[1:])))
"""


def test_receiver_command_serves_until_sigterm(tmp_path):
    token_file = tmp_path / "receiver-token"
    token_file.write_text(TOKEN, encoding="utf-8")
    environment = {**os.environ, "PYTHONPATH": str(Path(sohoa.__file__).parents[1]), "SOHOA_LANG": "en"}
    command = [sys.executable, "-c", RECEIVER_SCRIPT, "receiver", "--listen", "127.0.0.1:0", "--store", str(tmp_path / "store"), "--token-file", str(token_file)]
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", banner).group(0)
        health = requests.get(f"{url}/api/v1/health", timeout=3)
        unauthorized = requests.get(f"{url}/api/v1/documents/{DOC_CODE}", timeout=3)
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    log_output = process.stderr.read()

    assert health.status_code == 200
    assert unauthorized.status_code == 401
    assert status == 0
    assert f"GET /api/v1/documents/{DOC_CODE} DocCode={DOC_CODE} -> 401" in log_output
    assert TOKEN not in log_output


# Backoff


class UpperBoundRandom(random.Random):
    """A random source whose uniform draw is always the upper bound, to expose the ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_grows_exponentially_to_cap():
    backoff = Backoff(2.0, 30.0, rng=UpperBoundRandom())

    delays = [backoff.next_delay() for _ in range(8)]

    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_backoff_jitter_stays_within_bounds():
    backoff = Backoff(1.0, 10.0, rng=random.Random(1234))

    delays = [backoff.next_delay() for _ in range(200)]

    assert all(0.0 <= delay <= 10.0 for delay in delays)
    assert all(0.0 <= delay <= 1.0 * 2**index for index, delay in enumerate(delays))
    assert len(set(delays)) > 150


def test_backoff_reset_starts_over():
    backoff = Backoff(2.0, 30.0, rng=UpperBoundRandom())
    for _ in range(5):
        backoff.next_delay()

    backoff.reset()

    assert backoff.next_delay() == 2.0


def test_backoff_rejects_bad_bounds():
    with pytest.raises(ValueError):
        Backoff(0.0, 10.0)
    with pytest.raises(ValueError):
        Backoff(5.0, 1.0)


def test_backoff_survives_many_attempts():
    backoff = Backoff(0.5, 300.0, rng=UpperBoundRandom())

    delays = [backoff.next_delay() for _ in range(5000)]

    assert delays[-1] == 300.0
