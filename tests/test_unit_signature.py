"""The converting unit's second signature, and PDF/A conformance of signed files.

Every test signs a real PDF/A-2b built by sohoa.pdf with keys on SoftHSM2
tokens through PyKCS11: two keys on one token, or one key on each of two
tokens in the same SoftHSM token folder.
"""

from __future__ import annotations

import gettext
import json
import re
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pikepdf
import pytest

from sohoa import i18n
from sohoa.config import parse_config
from sohoa.errors import ConfigError, KeyNotFoundError, PdfError, TokenNotFoundError
from sohoa.fields import Field, fields_to_json
from sohoa.journal import Journal
from sohoa.pdf import ConversionMark, PageInput, build_pdf
from sohoa.pdf import metadata as xmp
from sohoa.pdf.conformance import check_pdfa
from sohoa.pipeline import Pipeline
from sohoa.signing import TokenSigner, verify_pdf
from sohoa.testbed.legal import UNIT_NAME, add_key, compile_vietnamese_catalog, issue_unit_identity
from sohoa.testbed.pdf import render_page
from sohoa.testbed.pki import create_test_pki
from sohoa.testbed.softhsm import TestToken, create_test_token

OPERATOR = "Nguyễn Thị Hồng Nhung"
OPERATOR_PIN_ENV = "SOHOA_TEST_OPERATOR_PIN"
UNIT_PIN_ENV = "SOHOA_TEST_UNIT_PIN"
UNIT_KEY_ID = "a7"
SIGNED_AT = datetime(2026, 12, 4, 21, 15, 3, tzinfo=timezone(timedelta(hours=7)))
DPI = 150
FIELD_MARGIN = 18


@pytest.fixture(scope="module", params=["rsa", "ec"])
def identities(request, tmp_path_factory):
    """The test CA with the operator's certificate, and the unit's certificate from the same CA."""
    folder = tmp_path_factory.mktemp(f"pki-{request.param}")
    pki = create_test_pki(folder / "operator", signer_name=OPERATOR, key_type=request.param)
    return pki, issue_unit_identity(pki, folder / "unit")


@pytest.fixture
def vietnamese(tmp_path, monkeypatch):
    with open(compile_vietnamese_catalog(tmp_path), "rb") as handle:
        monkeypatch.setattr(i18n, "_translation", gettext.GNUTranslations(handle))


@pytest.fixture
def one_token(tmp_path, identities, monkeypatch):
    """The operator's key (CKA_ID 01) and the unit's key (CKA_ID a7, other labels) on one token."""
    pki, unit = identities
    token = create_test_token(tmp_path / "hsm", pki, pin="246810")
    add_key(token, unit, UNIT_KEY_ID, "khoa-don-vi")
    _use(monkeypatch, token, OPERATOR_PIN_ENV)
    return token.signing_config(pin_env=OPERATOR_PIN_ENV, unit_key_id=UNIT_KEY_ID)


@pytest.fixture
def two_tokens(tmp_path, identities, monkeypatch):
    """The operator's token and the unit's own token, each with its PIN, in one SoftHSM folder."""
    pki, unit = identities
    operator_token = create_test_token(tmp_path / "hsm", pki, label="operator-token", pin="246810")
    folders_before = set(operator_token.token_dir.iterdir())
    unit_token = create_test_token(tmp_path / "hsm", unit, label="unit-token", pin="135790", key_id=UNIT_KEY_ID)
    (unit_folder,) = set(unit_token.token_dir.iterdir()) - folders_before
    _use(monkeypatch, operator_token, OPERATOR_PIN_ENV)
    monkeypatch.setenv(UNIT_PIN_ENV, unit_token.pin)
    config = operator_token.signing_config(
        pin_env=OPERATOR_PIN_ENV, unit_key_id=UNIT_KEY_ID, unit_token_label=unit_token.label, unit_pin_env=UNIT_PIN_ENV
    )
    return config, RemovableToken(unit_folder, tmp_path / "unplugged" / unit_folder.name)


class RemovableToken:
    """One SoftHSM token folder among several, moved out of the token folder to imitate pulling the token out."""

    def __init__(self, folder: Path, outside: Path) -> None:
        self.folder = folder
        self.outside = outside

    def unplug(self) -> None:
        self.outside.parent.mkdir(parents=True, exist_ok=True)
        self.folder.rename(self.outside)

    def replug(self) -> None:
        self.outside.rename(self.folder)


def _use(monkeypatch, token: TestToken, pin_env: str) -> None:
    for name, value in token.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(pin_env, token.pin)


@pytest.fixture
def unsigned(tmp_path):
    """A PDF/A-2b of one rendered certificate page, with document fields in XMP."""
    image = tmp_path / "page-1.png"
    text = render_page(image, ["GIẤY CHỨNG NHẬN", "Số: 12/GCN-SGDĐT", "Chứng nhận bà Trần Thị Mai"], dpi=DPI, mode="RGB")
    mark = ConversionMark(
        converted_at=SIGNED_AT, operator=OPERATOR, unit=UNIT_NAME, doc_code="H31.01_GCN_000001_V1", pages_sha256="5a" * 32
    )
    out = tmp_path / "unsigned.pdf"
    build_pdf([PageInput(image, text, DPI)], out, mark=mark, metadata={"DocCode": mark.doc_code, "CodeNumber": "12"})
    return out


def _sign_both(config, unsigned: Path, tmp_path: Path) -> Path:
    operator_signed = tmp_path / "operator.pdf"
    signed = tmp_path / "signed.pdf"
    TokenSigner(config).sign_pdf(unsigned, operator_signed, signer_name=OPERATOR, signed_at=SIGNED_AT)
    TokenSigner.for_unit(config).sign_pdf(operator_signed, signed, signer_name=UNIT_NAME, signed_at=SIGNED_AT + timedelta(seconds=2))
    return signed


def _widgets(path: Path) -> dict[str, tuple[list[float], bytes, pikepdf.Dictionary]]:
    """Return each signature field's rectangle, appearance stream bytes and widget, by field name."""
    with pikepdf.open(path) as pdf:
        page = pdf.pages[0]
        box = [float(value) for value in page.mediabox]
        widgets = {}
        for annotation in page.obj.Annots:
            appearance = annotation.AP.N
            content = appearance.read_bytes()
            for child in (appearance.get("/Resources", {}).get("/XObject") or {}).values():
                content += child.read_bytes()
            widgets[str(annotation.T)] = ([float(value) for value in annotation.Rect], content, box)
    return widgets


def test_two_keys_one_token_both_verify(one_token, unsigned, tmp_path, identities):
    pki, _unit = identities

    result = verify_pdf(_sign_both(one_token, unsigned, tmp_path), [pki.ca_cert_path])

    assert result.valid, result.summary

    assert result.intact, result.summary

    assert result.trusted, result.summary
    assert [status.signer for status in result.signatures] == [OPERATOR, UNIT_NAME]
    assert all(status.ok for status in result.signatures)
    assert result.signer == UNIT_NAME
    assert result.signatures[0].covers_whole_file is False
    assert result.signatures[0].modification == "FORM_FILLING"
    assert result.signatures[1].covers_whole_file is True


def test_two_tokens_both_verify(two_tokens, unsigned, tmp_path, identities):
    config, _unit_token = two_tokens
    pki, _unit = identities

    result = verify_pdf(_sign_both(config, unsigned, tmp_path), [pki.ca_cert_path])

    assert result.valid, result.summary

    assert result.intact, result.summary

    assert result.trusted, result.summary
    assert [status.signer for status in result.signatures] == [OPERATOR, UNIT_NAME]


def test_unit_field_top_right_operator_top_left(one_token, unsigned, tmp_path):
    widgets = _widgets(_sign_both(one_token, unsigned, tmp_path))
    (operator_rect, _operator_stream, page_box), (unit_rect, unit_stream, _box) = widgets.values()
    left, _bottom, right, top = page_box

    assert operator_rect[0] == pytest.approx(left + FIELD_MARGIN, abs=1)
    assert operator_rect[3] == pytest.approx(top - FIELD_MARGIN, abs=1)
    assert unit_rect[2] == pytest.approx(right - FIELD_MARGIN, abs=1)
    assert unit_rect[3] == pytest.approx(top - FIELD_MARGIN, abs=1)
    assert unit_rect[0] > (left + right) / 2 - 1
    assert b" 10 Tf" in unit_stream
    # No border and no image: the appearance draws text only.
    assert b" re" not in unit_stream
    assert b" Do" not in unit_stream.split(b"BT", 1)[1]


def test_unit_field_text_vietnamese(one_token, unsigned, tmp_path, vietnamese):
    signed = _sign_both(one_token, unsigned, tmp_path)
    with pikepdf.open(signed) as pdf:
        page = pdf.pages[0]
        width = float(page.mediabox[2])
    right_half = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", "-f", "1", "-l", "1", "-x", str(int(width / 2)), "-y", "0", "-W", str(int(width / 2)), "-H", "90", str(signed), "-"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode("utf-8")

    assert "Sao từ bản giấy" in right_half
    assert UNIT_NAME in right_half
    assert re.search(r"2026-12-04T21:15:05\+07:00", right_half), right_half


def test_signed_file_stays_pdfa(one_token, unsigned, tmp_path):
    signed = _sign_both(one_token, unsigned, tmp_path)

    for path in (unsigned, tmp_path / "operator.pdf", signed):
        report = check_pdfa(path)
        assert report.findings == (), path
        assert report.flavour == "2b"


def test_signing_keeps_xmp_and_info(one_token, unsigned, tmp_path):
    with pikepdf.open(unsigned) as pdf:
        packet_before = pdf.Root.Metadata.read_bytes()
        producer_before = str(pdf.docinfo["/Producer"])

    signed = _sign_both(one_token, unsigned, tmp_path)

    with pikepdf.open(signed) as pdf:
        assert pdf.Root.Metadata.read_bytes() == packet_before
        assert str(pdf.docinfo["/Producer"]) == producer_before
        assert xmp.read_document_fields(pdf.Root.Metadata.read_bytes())["CodeNumber"] == "12"


def test_qpdf_accepts_signed_file(one_token, unsigned, tmp_path):
    signed = _sign_both(one_token, unsigned, tmp_path)

    result = subprocess.run(["qpdf", "--check", str(signed)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr


def test_check_pdfa_flags_hidden_widget(one_token, unsigned, tmp_path):
    signed = _sign_both(one_token, unsigned, tmp_path)
    broken = tmp_path / "hidden.pdf"
    with pikepdf.open(signed) as pdf:
        pdf.pages[0].obj.Annots[1].F = 2
        pdf.save(broken)

    findings = check_pdfa(broken).findings

    assert any("not printable or hidden" in finding for finding in findings), findings


def test_check_pdfa_flags_renamed_prefix(unsigned, tmp_path):
    renamed = tmp_path / "renamed.pdf"
    with pikepdf.open(unsigned) as pdf:
        packet = pdf.Root.Metadata.read_bytes().replace(b"sohoadoc:", b"ns0:").replace(b"xmlns:sohoadoc=", b"xmlns:ns0=")
        pdf.Root.Metadata.write(packet)
        pdf.save(renamed)

    findings = check_pdfa(renamed).findings

    assert any("prefix 'ns0'" in finding for finding in findings), findings


def test_check_pdfa_without_identification(tmp_path):
    plain = tmp_path / "plain.pdf"
    pdf = pikepdf.new()
    pdf.add_blank_page()
    pdf.save(plain)

    report = check_pdfa(plain)

    assert not report.passed
    assert report.part == ""


def test_unit_signer_requires_key_id(one_token):
    config = one_token.model_copy(update={"unit_key_id": None})

    with pytest.raises(ConfigError) as raised:
        TokenSigner.for_unit(config)

    assert "signing.unit_key_id" in str(raised.value)


def test_unit_key_missing_raises(one_token, unsigned, tmp_path):
    config = one_token.model_copy(update={"unit_key_id": "ee"})

    with pytest.raises(KeyNotFoundError):
        TokenSigner.for_unit(config).sign_pdf(unsigned, tmp_path / "out.pdf", signer_name=UNIT_NAME)

    assert not (tmp_path / "out.pdf").exists()


def test_unit_token_missing_names_setting(two_tokens, unsigned, tmp_path):
    config, unit_token = two_tokens
    unit_token.unplug()

    with pytest.raises(TokenNotFoundError) as raised:
        TokenSigner.for_unit(config).sign_pdf(unsigned, tmp_path / "out.pdf", signer_name=UNIT_NAME)

    assert "signing.unit_token_label" in str(raised.value)
    assert "operator-token" in str(raised.value)


def test_unit_pin_required_on_own_token(two_tokens, unsigned, tmp_path):
    config, _unit_token = two_tokens
    config = config.model_copy(update={"unit_pin_env": None})

    with pytest.raises(ConfigError) as raised:
        TokenSigner.for_unit(config).sign_pdf(unsigned, tmp_path / "out.pdf", signer_name=UNIT_NAME)

    assert "signing.unit_pin_file" in str(raised.value)


# The pipeline: which documents the unit signs, and a missing unit token.


def _pipeline(tmp_path: Path, signing, type_name: str, *, attach_fields: bool = False) -> tuple[Pipeline, object]:
    config = parse_config(
        {
            "box": {
                "site": "test",
                "device": "box-01",
                "unit": UNIT_NAME,
                "operator": OPERATOR,
                "agency_code": "H31.01",
                "data_dir": str(tmp_path / "data"),
            },
            "scanner": {"device": "pnm:0"},
            "ocr": {"models_dir": str(tmp_path)},
            "signing": signing.model_dump(mode="json"),
            "pdf": {"attach_fields": attach_fields},
            "upload": {"url": "http://127.0.0.1:9", "token_file": str(tmp_path / "none")},
            "mqtt": {"host": "127.0.0.1"},
        }
    )
    journal = Journal(config.journal_path)
    pipeline = Pipeline(config, journal, scanner=None, ocr=None, signer=TokenSigner(config.signing), archive=None)

    job = journal.create_job()
    image = tmp_path / "page-0001.png"
    text = render_page(image, [type_name.upper(), "Số: 12/GCN-SGDĐT"], dpi=DPI)
    journal.add_page(job.id, 1, image, "00" * 32, 100, 100, DPI)
    ocr_path = tmp_path / "page-0001.json"
    ocr_path.write_text(json.dumps(text.to_dict(), ensure_ascii=False), encoding="utf-8")
    journal.set_page_recognized(job.id, 1, ocr_path)
    fields = {"TypeName": Field(type_name, 0.95, True), "CodeNumber": Field("12", 0.95, True)}
    job = journal.set_state(job.id, "recognized", fields=fields_to_json(fields))
    return pipeline, pipeline.build(job)


def test_pipeline_certificate_gets_both_signatures(one_token, tmp_path, identities):
    pipeline, job = _pipeline(tmp_path, one_token, "Giấy chứng nhận")

    job = pipeline.sign(job)

    result = verify_pdf(Path(job.signed_path), one_token.trust_roots)
    assert job.state == "signed"
    assert [status.signer for status in result.signatures] == [OPERATOR, UNIT_NAME]
    assert not list(Path(job.signed_path).parent.glob("*.operator.pdf"))
    with pikepdf.open(job.signed_path) as pdf:
        fields = xmp.read_document_fields(pdf.Root.Metadata.read_bytes())
    assert fields["CodeNumber"] == "12"
    assert "IssuedDate" in fields["UnsureFields"].split(",")
    assert "CodeNumber" not in fields["UnsureFields"].split(",")


def test_pipeline_attached_fields_signed_pdfa_3b(one_token, tmp_path):
    pipeline, job = _pipeline(tmp_path, one_token, "Giấy chứng nhận", attach_fields=True)

    job = pipeline.sign(job)

    signed = Path(job.signed_path)
    result = verify_pdf(signed, one_token.trust_roots)
    assert [status.ok for status in result.signatures] == [True, True]
    report = check_pdfa(signed)
    assert report.findings == ()
    assert report.flavour == "3b"
    with pikepdf.open(signed) as pdf:
        attached = json.loads(pdf.attachments["fields.json"].get_file().read_bytes())
        assert pdf.Root.AF[0].AFRelationship == "/Data"
    assert attached == json.loads(json.dumps(pipeline.document_metadata(job), ensure_ascii=False))
    assert attached["CodeNumber"] == "12"
    assert attached["FieldConfidence"]["IssuedDate"] == "unsure"


def test_pipeline_default_builds_pdfa_2b(one_token, tmp_path):
    pipeline, job = _pipeline(tmp_path, one_token, "Quyết định")

    with pikepdf.open(job.pdf_path) as pdf:
        assert pdf.open_metadata()["pdfaid:part"] == "2"
        assert "/AF" not in pdf.Root


def test_pipeline_decision_gets_operator_only(one_token, tmp_path):
    pipeline, job = _pipeline(tmp_path, one_token, "Quyết định")

    job = pipeline.sign(job)

    result = verify_pdf(Path(job.signed_path), one_token.trust_roots)
    assert [status.signer for status in result.signatures] == [OPERATOR]


def test_pipeline_missing_unit_token_keeps_job_built(two_tokens, tmp_path):
    config, unit_token = two_tokens
    pipeline, job = _pipeline(tmp_path, config, "Giấy chứng nhận")
    unit_token.unplug()

    with pytest.raises(TokenNotFoundError):
        pipeline.sign(job)

    assert pipeline.journal.get_job(job.id).state == "built"
    assert list(pipeline.job_dir(job.id).glob("*.pdf")) == [Path(job.pdf_path)]

    unit_token.replug()
    signed = pipeline.sign(job)
    assert signed.state == "signed"


def test_pipeline_rejects_non_pdfa_signed_file(one_token, tmp_path, monkeypatch):
    pipeline, job = _pipeline(tmp_path, one_token, "Quyết định")
    # A writer that rewrites XMP as pyHanko 0.38 does by default breaks the extension schema's prefix.
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    from sohoa.signing import pades

    monkeypatch.setattr(pades.MetadataKeepingWriter, "_update_meta", IncrementalPdfFileWriter._update_meta)

    with pytest.raises(PdfError) as raised:
        pipeline.sign(job)

    assert "PDF/A" in str(raised.value)
    assert not Path(pipeline.job_dir(job.id) / pipeline.document_filename(job)).exists()
