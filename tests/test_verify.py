"""``sohoa verify``: signatures, PDF/A, the conversion mark and the fields of real signed files."""

from __future__ import annotations

import gettext
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sohoa import cli, i18n
from sohoa.pdf import Attachment, ConversionMark, PageInput, build_pdf, qr_payload
from sohoa.signing import TokenSigner
from sohoa.testbed.demo import write_toml
from sohoa.testbed.legal import UNIT_NAME, add_key, compile_vietnamese_catalog, issue_unit_identity
from sohoa.testbed.pdf import render_page
from sohoa.testbed.pki import create_test_pki
from sohoa.testbed.softhsm import create_test_token

OPERATOR = "Lê Văn Bình"
PIN_ENV = "SOHOA_TEST_VERIFY_PIN"
SIGNED_AT = datetime(2026, 12, 4, 22, 40, 0, tzinfo=timezone(timedelta(hours=7)))
DPI = 150
MARK = ConversionMark(
    converted_at=SIGNED_AT, operator=OPERATOR, unit=UNIT_NAME, doc_code="H31.01_VB_000007_V1", pages_sha256="c4" * 32
)
METADATA = {"DocCode": MARK.doc_code, "TypeName": "Bằng tốt nghiệp", "CodeNumber": "", "UnsureFields": "CodeNumber"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return create_test_pki(tmp_path_factory.mktemp("pki"), signer_name=OPERATOR)


@pytest.fixture
def vietnamese(tmp_path, monkeypatch):
    """Vietnamese output from the catalog and this area's fragment, whatever --lang the parser saw."""
    with open(compile_vietnamese_catalog(tmp_path), "rb") as handle:
        catalog = gettext.GNUTranslations(handle)
    monkeypatch.setattr(cli, "set_language", lambda language=None: "vi")
    monkeypatch.setattr(i18n, "_translation", catalog)


@pytest.fixture
def documents(tmp_path, pki, monkeypatch):
    """The unsigned PDF/A and the same document signed by the operator and the unit."""
    unit = issue_unit_identity(pki, tmp_path / "unit")
    token = create_test_token(tmp_path / "hsm", pki, pin="424242")
    add_key(token, unit, "0b", "unit")
    for name, value in token.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(PIN_ENV, token.pin)
    config = token.signing_config(pin_env=PIN_ENV, unit_key_id="0b")

    image = tmp_path / "page-1.png"
    text = render_page(image, ["BẰNG TỐT NGHIỆP TRUNG HỌC PHỔ THÔNG", "Họ và tên: Trần Thị Mai"], dpi=DPI, mode="RGB")
    unsigned = tmp_path / "unsigned.pdf"
    build_pdf([PageInput(image, text, DPI)], unsigned, mark=MARK, metadata=METADATA)
    TokenSigner(config).sign_pdf(unsigned, tmp_path / "operator.pdf", signer_name=OPERATOR, signed_at=SIGNED_AT)
    signed = tmp_path / "signed.pdf"
    TokenSigner.for_unit(config).sign_pdf(tmp_path / "operator.pdf", signed, signer_name=UNIT_NAME, signed_at=SIGNED_AT)
    return unsigned, signed


def _run(capsys, *argv: str) -> tuple[int, str]:
    status = cli.main(list(argv))
    return status, capsys.readouterr().out


def test_signed_document_passes(documents, pki, capsys, vietnamese):
    _unsigned, signed = documents

    status, output = _run(capsys, "verify", str(signed), "--trust-root", str(pki.ca_cert_path))

    assert status == 0, output
    assert "Chữ ký 1 (SohoaSignature1): hợp lệ" in output
    assert "Chữ ký 2 (SohoaSignature2): hợp lệ" in output
    assert f"Người ký: {OPERATOR}" in output
    assert f"Người ký: {UNIT_NAME}" in output
    assert "Dấu thời gian: không có" in output
    assert "Khai báo PDF/A: PDF/A-2b" in output
    assert "Kiểm tra PDF/A: đạt" in output
    assert "Bản điện tử được chuyển đổi từ bản giấy" in output
    assert f"Mã QR: {qr_payload(MARK)}" in output
    assert "TypeName: Bằng tốt nghiệp" in output
    assert "Kết quả: đạt mọi kiểm tra" in output


def test_json_report(documents, pki, capsys):
    _unsigned, signed = documents

    status, output = _run(capsys, "verify", str(signed), "--trust-root", str(pki.ca_cert_path), "--format", "json")
    report = json.loads(output)

    assert status == 0
    assert report["ok"] is True
    assert [signature["signer"] for signature in report["signatures"]] == [OPERATOR, UNIT_NAME]
    assert report["signatures"][0]["covers_whole_file"] is False
    assert report["signatures"][1]["signing_time"] == SIGNED_AT.isoformat()
    assert report["pdfa"] == {"part": "2", "conformance": "B", "passed": True, "findings": []}
    assert report["mark"]["found"] is True
    assert report["mark"]["qr_payload"] == qr_payload(MARK)
    assert report["fields"] == METADATA


def test_tampered_document_fails(documents, pki, capsys, tmp_path):
    _unsigned, signed = documents
    data = bytearray(signed.read_bytes())
    data[len(data) // 4] ^= 0x01
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(bytes(data))

    status, output = _run(capsys, "--lang", "en", "verify", str(tampered), "--trust-root", str(pki.ca_cert_path), "--format", "json")
    report = json.loads(output)

    assert status == 1
    assert report["ok"] is False
    assert not all(signature["intact"] for signature in report["signatures"])


def test_untrusted_root_fails(documents, capsys, tmp_path):
    _unsigned, signed = documents
    stranger = create_test_pki(tmp_path / "stranger")

    status, output = _run(capsys, "verify", str(signed), "--trust-root", str(stranger.ca_cert_path), "--format", "json")

    assert status == 1
    assert [signature["trusted"] for signature in json.loads(output)["signatures"]] == [False, False]


def test_unsigned_document_fails(documents, pki, capsys, vietnamese):
    unsigned, _signed = documents

    status, output = _run(capsys, "verify", str(unsigned), "--trust-root", str(pki.ca_cert_path))

    assert status == 1
    assert "Không tìm thấy chữ ký nào." in output
    assert "Kiểm tra PDF/A: đạt" in output
    assert "Kết quả: KHÔNG ĐẠT" in output


def test_trust_roots_from_config(documents, pki, capsys, tmp_path):
    _unsigned, signed = documents
    config_path = tmp_path / "sohoa.toml"
    write_toml(
        config_path,
        {
            "box": {"site": "t", "device": "d", "unit": UNIT_NAME, "operator": OPERATOR, "agency_code": "H31.01", "data_dir": str(tmp_path / "data")},
            "scanner": {"device": "pnm:0"},
            "ocr": {"models_dir": str(tmp_path)},
            "signing": {"pkcs11_module": "/nonexistent.so", "token_label": "x", "key_id": "01", "trust_roots": [str(pki.ca_cert_path)]},
            "upload": {"url": "http://127.0.0.1:9", "token_file": str(tmp_path / "none")},
            "mqtt": {"host": "127.0.0.1"},
        },
    )

    status, output = _run(capsys, "--config", str(config_path), "--lang", "en", "verify", str(signed), "--format", "json")

    assert status == 0, output
    assert all(signature["trusted"] for signature in json.loads(output)["signatures"])


def test_missing_file_reports_error(capsys, tmp_path):
    status = cli.main(["--lang", "en", "verify", str(tmp_path / "absent.pdf")])

    assert status != 0
    assert "absent.pdf" in capsys.readouterr().err


def test_attached_fields_listed(pki, tmp_path, capsys, monkeypatch):
    token = create_test_token(tmp_path / "hsm", pki, pin="525252")
    for name, value in token.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(PIN_ENV, token.pin)
    image = tmp_path / "page-1.png"
    text = render_page(image, ["BẰNG TỐT NGHIỆP TRUNG HỌC PHỔ THÔNG"], dpi=DPI, mode="RGB")
    unsigned = tmp_path / "unsigned.pdf"
    attached = {"DocCode": MARK.doc_code, "TypeName": "Bằng tốt nghiệp", "FieldConfidence": {"CodeNumber": "unsure"}}
    attachment = Attachment("fields.json", json.dumps(attached, ensure_ascii=False).encode("utf-8"), "application/json", "Fields")
    build_pdf([PageInput(image, text, DPI)], unsigned, mark=MARK, metadata=METADATA, attachments=[attachment])
    signed = tmp_path / "signed.pdf"
    TokenSigner(token.signing_config(pin_env=PIN_ENV)).sign_pdf(unsigned, signed, signer_name=OPERATOR, signed_at=SIGNED_AT)

    status, output = _run(capsys, "--lang", "en", "verify", str(signed), "--trust-root", str(pki.ca_cert_path))
    json_status, json_output = _run(capsys, "verify", str(signed), "--trust-root", str(pki.ca_cert_path), "--format", "json")
    report = json.loads(json_output)

    assert status == 0, output
    assert "PDF/A identification: PDF/A-3b" in output
    assert "Attachments: fields.json" in output
    assert "  TypeName: Bằng tốt nghiệp" in output.split("Fields in the attachment:")[1]
    assert '  FieldConfidence: {"CodeNumber": "unsure"}' in output
    assert json_status == 0
    assert report["attachments"] == ["fields.json"]
    assert report["attached_fields"] == attached
    assert report["pdfa"]["part"] == "3"


def test_malformed_fields_attachment_fails(pki, tmp_path, capsys):
    image = tmp_path / "page-1.png"
    text = render_page(image, ["BẰNG TỐT NGHIỆP"], dpi=DPI, mode="RGB")
    unsigned = tmp_path / "unsigned.pdf"
    attachment = Attachment("fields.json", b"{not json", "application/json", "Fields")
    build_pdf([PageInput(image, text, DPI)], unsigned, mark=MARK, metadata=METADATA, attachments=[attachment])

    _status, output = _run(capsys, "verify", str(unsigned), "--format", "json")
    report = json.loads(output)

    assert report["ok"] is False
    assert report["attached_fields"] is None
    assert "not UTF-8 JSON" in report["attachment_problem"]
