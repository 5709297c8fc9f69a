"""PAdES signing and validation against a real SoftHSM2 token through PyKCS11."""

from __future__ import annotations

import gettext
import logging
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pikepdf
import pytest
from pyhanko.keys import load_certs_from_pemder
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

from sohoa import i18n
from sohoa.errors import ConfigError, KeyNotFoundError, PdfError, PinError, SigningError, TokenNotFoundError
from sohoa.signing import TokenInfo, TokenSigner, verify_pdf
from sohoa.signing.token import TokenSession
from sohoa.testbed.legal import compile_vietnamese_catalog
from sohoa.testbed.pki import TestPki, create_test_pki, renew_signer_certificate
from sohoa.testbed.softhsm import TestToken, create_test_token, import_certificate

SIGNER_NAME = "Nguyễn Văn An"
# A PIN unlikely to appear by chance in a log line, so that the leak check means something.
PIN = "735190"
PIN_ENV = "SOHOA_TEST_TOKEN_PIN"
PAGE_WIDTH, PAGE_HEIGHT = 595, 842  # A4 in points


@pytest.fixture(scope="module")
def rsa_pki(tmp_path_factory) -> TestPki:
    return create_test_pki(tmp_path_factory.mktemp("pki-rsa"), signer_name=SIGNER_NAME)


@pytest.fixture(scope="module")
def ec_pki(tmp_path_factory) -> TestPki:
    return create_test_pki(tmp_path_factory.mktemp("pki-ec"), signer_name=SIGNER_NAME, key_type="ec")


@pytest.fixture
def english(monkeypatch):
    monkeypatch.setattr(i18n, "_translation", gettext.NullTranslations())


def _use_token(monkeypatch, token: TestToken) -> TestToken:
    # libsofthsm2 reads SOFTHSM2_CONF when PyKCS11 loads it, so it must be set before any signer call.
    for name, value in token.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(PIN_ENV, token.pin)
    return token


@pytest.fixture
def token(tmp_path, rsa_pki, monkeypatch) -> TestToken:
    return _use_token(monkeypatch, create_test_token(tmp_path / "hsm", rsa_pki, pin=PIN))


@pytest.fixture
def unsigned_pdf(tmp_path) -> Path:
    """A one-page A4 PDF with an uncompressed text stream and a /Title that tests can tamper with."""
    path = tmp_path / "input.pdf"
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(PAGE_WIDTH, PAGE_HEIGHT))
    pdf.pages[0].Contents = pdf.make_stream(b"BT /F1 12 Tf 72 720 Td (Cong van so 12) Tj ET")
    pdf.pages[0].Resources = pikepdf.Dictionary(
        Font=pikepdf.Dictionary(F1=pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica))
    )
    pdf.docinfo["/Title"] = "Tai lieu thu nghiem ABCDEFGH"
    pdf.save(path, compress_streams=False)
    return path


def _signer(token: TestToken, **overrides) -> TokenSigner:
    overrides.setdefault("pin_env", PIN_ENV)
    return TokenSigner(token.signing_config(**overrides))


def _pyhanko_status(path: Path, ca_cert_path: Path):
    context = ValidationContext(trust_roots=list(load_certs_from_pemder([str(ca_cert_path)])), allow_fetching=False)
    with open(path, "rb") as handle:
        (signature,) = PdfFileReader(handle).embedded_signatures
        return validate_pdf_signature(signature, signer_validation_context=context)


def _assert_verified(result) -> None:
    assert result.valid, result.summary
    assert result.intact, result.summary
    assert result.trusted, result.summary


def _page_text(path: Path) -> str:
    result = subprocess.run(["pdftotext", "-f", "1", "-l", "1", str(path), "-"], capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


def test_sign_then_verify_rsa(token, unsigned_pdf, tmp_path):
    signed = tmp_path / "signed.pdf"

    _signer(token).sign_pdf(unsigned_pdf, signed, signer_name=SIGNER_NAME, reason="Số hóa", location="Hà Nội")
    result = verify_pdf(signed, [token.ca_cert_path])

    assert result.valid
    assert result.intact
    assert result.trusted
    assert result.signer == SIGNER_NAME
    assert result.signing_time is not None
    assert "OK" in result.summary


def test_pyhanko_validation_agrees(token, unsigned_pdf, tmp_path):
    signed = tmp_path / "signed.pdf"
    _signer(token).sign_pdf(unsigned_pdf, signed, signer_name=SIGNER_NAME)

    status = _pyhanko_status(signed, token.ca_cert_path)

    assert status.bottom_line
    assert status.pkcs7_signature_mechanism == "rsassa_pss"
    assert status.signing_cert.subject.native["common_name"] == SIGNER_NAME
    with pikepdf.open(signed) as pdf:
        signature_dict = pdf.pages[0].Annots[0].V
        assert signature_dict.SubFilter == "/ETSI.CAdES.detached"
        assert str(signature_dict.Name) == SIGNER_NAME


def test_visible_field_top_left_of_page_one(token, unsigned_pdf, tmp_path, english):
    signed = tmp_path / "signed.pdf"
    signed_at = datetime(2026, 3, 14, 9, 30, 5, tzinfo=timezone(timedelta(hours=7)))

    _signer(token).sign_pdf(unsigned_pdf, signed, signer_name=SIGNER_NAME, signed_at=signed_at)

    with pikepdf.open(signed) as pdf:
        widgets = [annot for annot in pdf.pages[0].get("/Annots", []) if annot.get("/FT") == "/Sig"]
        assert len(widgets) == 1
        x1, y1, x2, y2 = (float(value) for value in widgets[0].Rect)
        assert "/N" in widgets[0].AP
        assert widgets[0].P.objgen == pdf.pages[0].objgen
    assert 0 <= x1 < x2 <= PAGE_WIDTH / 2
    assert PAGE_HEIGHT / 2 <= y1 < y2 <= PAGE_HEIGHT
    assert PAGE_HEIGHT - y2 < 40  # close to the top edge
    text = _page_text(signed)
    assert f"Signed by: {SIGNER_NAME}" in text
    assert "Time: 2026-03-14T09:30:05+07:00" in text
    assert verify_pdf(signed, [token.ca_cert_path]).signing_time == signed_at


def test_visible_field_follows_cropbox(token, tmp_path):
    source = tmp_path / "cropped.pdf"
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(PAGE_WIDTH, PAGE_HEIGHT))
    pdf.Root.Pages.MediaBox = pikepdf.Array([0, 0, 1000, 1200])  # inherited by the page
    del pdf.pages[0].obj["/MediaBox"]
    pdf.pages[0].CropBox = pikepdf.Array([100, 200, 700, 1000])
    pdf.save(source)
    signed = tmp_path / "signed.pdf"

    _signer(token).sign_pdf(source, signed, signer_name=SIGNER_NAME)

    with pikepdf.open(signed) as result:
        x1, y1, x2, y2 = (float(value) for value in result.pages[0].Annots[0].Rect)
    assert 100 <= x1 < 100 + 40
    assert x2 <= 400
    assert 1000 - 40 < y2 <= 1000
    assert y1 >= 600


def test_stamp_text_vietnamese(token, unsigned_pdf, tmp_path, monkeypatch):
    catalog = compile_vietnamese_catalog(tmp_path)
    with open(catalog, "rb") as handle:
        monkeypatch.setattr(i18n, "_translation", gettext.GNUTranslations(handle))
    signed = tmp_path / "signed.pdf"

    _signer(token).sign_pdf(unsigned_pdf, signed, signer_name=SIGNER_NAME)

    text = _page_text(signed)
    assert f"Người ký: {SIGNER_NAME}" in text
    assert "Thời gian ký: " in text


def test_tampered_byte_is_detected(token, unsigned_pdf, tmp_path):
    signed = tmp_path / "signed.pdf"
    _signer(token).sign_pdf(unsigned_pdf, signed, signer_name=SIGNER_NAME)
    data = bytearray(signed.read_bytes())
    position = data.index(b"ABCDEFGH")  # inside the /Title string of the signed revision
    data[position] = ord("X")
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(bytes(data))

    result = verify_pdf(tampered, [token.ca_cert_path])

    assert not result.intact
    assert "FAILED" in result.summary


def test_untrusted_root_not_trusted(token, unsigned_pdf, tmp_path):
    signed = tmp_path / "signed.pdf"
    _signer(token).sign_pdf(unsigned_pdf, signed, signer_name=SIGNER_NAME)
    other_ca = create_test_pki(tmp_path / "other-pki").ca_cert_path

    result = verify_pdf(signed, [other_ca])

    assert result.valid
    assert result.intact
    assert not result.trusted


def test_verify_unreadable_file_raises(tmp_path, rsa_pki):
    garbage = tmp_path / "garbage.pdf"
    garbage.write_bytes(b"this is not a PDF at all\n" * 10)

    with pytest.raises(PdfError):
        verify_pdf(garbage, [rsa_pki.ca_cert_path])
    with pytest.raises(PdfError):
        verify_pdf(tmp_path / "missing.pdf", [rsa_pki.ca_cert_path])


def test_verify_unsigned_pdf_invalid(unsigned_pdf, rsa_pki):
    result = verify_pdf(unsigned_pdf, [rsa_pki.ca_cert_path])

    assert not result.valid
    assert "no signature" in result.summary


def test_probe_describes_token(token, rsa_pki):
    info = _signer(token).probe()

    assert isinstance(info, TokenInfo)
    assert info.label == token.label
    assert info.serial
    assert info.key_id == token.key_id
    assert SIGNER_NAME in info.subject
    assert info.not_after == rsa_pki.signer_cert.not_valid_after_utc


def test_wrong_pin_raises_pin_error(token, unsigned_pdf, tmp_path, monkeypatch):
    monkeypatch.setenv(PIN_ENV, "000000")
    dst = tmp_path / "signed.pdf"
    dst.write_bytes(b"previous content")

    with pytest.raises(PinError):
        _signer(token).probe()
    with pytest.raises(PinError):
        _signer(token).sign_pdf(unsigned_pdf, dst, signer_name=SIGNER_NAME)
    assert dst.read_bytes() == b"previous content"


def test_unknown_label_lists_labels_seen(token):
    with pytest.raises(TokenNotFoundError) as caught:
        _signer(token, token_label="no-such-token").probe()

    assert "no-such-token" in str(caught.value)
    assert repr(token.label) in str(caught.value)


def test_missing_key_id_raises(token, unsigned_pdf, tmp_path):
    signer = _signer(token, key_id="ab")

    with pytest.raises(KeyNotFoundError) as caught:
        signer.probe()
    assert "ab" in str(caught.value)
    with pytest.raises(KeyNotFoundError):
        signer.sign_pdf(unsigned_pdf, tmp_path / "signed.pdf", signer_name=SIGNER_NAME)
    assert not (tmp_path / "signed.pdf").exists()


def test_bad_module_path_raises_signing_error(token):
    with pytest.raises(SigningError) as caught:
        _signer(token, pkcs11_module=Path("/nonexistent/libpkcs11.so")).probe()

    assert type(caught.value) is SigningError
    assert "/nonexistent/libpkcs11.so" in str(caught.value)


def test_missing_pin_configuration_raises(token):
    signer = TokenSigner(token.signing_config())

    with pytest.raises(ConfigError):
        signer.probe()


def test_key_and_cert_labels_differ(tmp_path, rsa_pki, unsigned_pdf, monkeypatch):
    token = _use_token(
        monkeypatch,
        create_test_token(tmp_path / "hsm", rsa_pki, pin=PIN, key_id="4a2f", key_label="Private Key", cert_label="Chu ky so"),
    )
    signed = tmp_path / "signed.pdf"

    _signer(token).sign_pdf(unsigned_pdf, signed, signer_name=SIGNER_NAME)

    result = verify_pdf(signed, [token.ca_cert_path])
    _assert_verified(result)


def test_renewed_certificate_preferred(token, rsa_pki, unsigned_pdf, tmp_path):
    renewed = renew_signer_certificate(rsa_pki)
    import_certificate(token, renewed, label="renewed")
    signed = tmp_path / "signed.pdf"
    signer = _signer(token)

    info = signer.probe()
    signer.sign_pdf(unsigned_pdf, signed, signer_name=SIGNER_NAME)

    assert info.not_after == renewed.not_valid_after_utc
    assert _pyhanko_status(signed, token.ca_cert_path).signing_cert.serial_number == renewed.serial_number
    _assert_verified(verify_pdf(signed, [token.ca_cert_path]))


@pytest.mark.parametrize("source", ["file", "env"])
def test_pin_sources_never_logged(token, unsigned_pdf, tmp_path, caplog, monkeypatch, source):
    if source == "file":
        pin_file = tmp_path / "token-pin"
        pin_file.write_text(PIN + "\n", encoding="utf-8")
        monkeypatch.delenv(PIN_ENV)
        config = token.signing_config(pin_file=pin_file)
    else:
        config = token.signing_config(pin_env=PIN_ENV)
    signer = TokenSigner(config)
    signed = tmp_path / "signed.pdf"
    caplog.set_level(logging.DEBUG)

    signer.probe()
    signer.sign_pdf(unsigned_pdf, signed, signer_name=SIGNER_NAME)
    monkeypatch.setenv(PIN_ENV, "999999")
    with pytest.raises(PinError):
        TokenSigner(token.signing_config(pin_env=PIN_ENV)).probe()

    assert verify_pdf(signed, [token.ca_cert_path]).trusted
    assert caplog.records
    assert PIN not in caplog.text
    assert "999999" not in caplog.text


def test_token_vanished_after_probe(token, unsigned_pdf, tmp_path):
    signer = _signer(token)
    signer.probe()
    token.unplug()
    dst = tmp_path / "out" / "signed.pdf"

    with pytest.raises(TokenNotFoundError):
        signer.sign_pdf(unsigned_pdf, dst, signer_name=SIGNER_NAME)

    assert not dst.exists()


def test_token_removed_while_signing(token, unsigned_pdf, tmp_path, monkeypatch):
    original_sign = TokenSession.sign

    def unplug_then_sign(self, key, operation, data):
        token.unplug()
        return original_sign(self, key, operation, data)

    monkeypatch.setattr(TokenSession, "sign", unplug_then_sign)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    with pytest.raises(TokenNotFoundError):
        _signer(token).sign_pdf(unsigned_pdf, out_dir / "signed.pdf", signer_name=SIGNER_NAME)

    assert list(out_dir.iterdir()) == []


def test_token_reinserted_probes_again(token, unsigned_pdf, tmp_path):
    signer = _signer(token)
    token.unplug()
    with pytest.raises(TokenNotFoundError):
        signer.probe()

    token.replug()

    assert signer.probe().label == token.label


def test_ecdsa_p256_token(tmp_path, ec_pki, unsigned_pdf, monkeypatch):
    token = _use_token(monkeypatch, create_test_token(tmp_path / "hsm", ec_pki, pin=PIN))
    signed = tmp_path / "signed.pdf"

    _signer(token).sign_pdf(unsigned_pdf, signed, signer_name=SIGNER_NAME)

    result = verify_pdf(signed, [token.ca_cert_path])
    _assert_verified(result)
    assert _pyhanko_status(signed, token.ca_cert_path).pkcs7_signature_mechanism == "sha256_ecdsa"


def test_rsa_pss_signature(token, unsigned_pdf, tmp_path):
    signed = tmp_path / "signed.pdf"

    TokenSigner(token.signing_config(pin_env=PIN_ENV), rsa_pss=True).sign_pdf(unsigned_pdf, signed, signer_name=SIGNER_NAME)

    result = verify_pdf(signed, [token.ca_cert_path])
    _assert_verified(result)
    assert _pyhanko_status(signed, token.ca_cert_path).pkcs7_signature_mechanism == "rsassa_pss"


def test_default_padding_is_pss(token, unsigned_pdf, tmp_path):
    signed = tmp_path / "signed.pdf"

    _signer(token).sign_pdf(unsigned_pdf, signed, signer_name=SIGNER_NAME)

    assert _pyhanko_status(signed, token.ca_cert_path).pkcs7_signature_mechanism == "rsassa_pss"


def test_pkcs1v15_padding_setting(token, unsigned_pdf, tmp_path):
    signed = tmp_path / "signed.pdf"

    _signer(token, rsa_padding="pkcs1v15").sign_pdf(unsigned_pdf, signed, signer_name=SIGNER_NAME)

    _assert_verified(verify_pdf(signed, [token.ca_cert_path]))
    assert _pyhanko_status(signed, token.ca_cert_path).pkcs7_signature_mechanism == "sha256_rsa"


def test_rejected_mechanism_names_setting(token, unsigned_pdf, tmp_path, monkeypatch, english):
    # An RSA mechanism on an ECDSA-only path makes SoftHSM return CKR_MECHANISM_INVALID, as a token without PSS does.
    import PyKCS11

    from sohoa.signing import mechanisms

    monkeypatch.setitem(mechanisms._RSA_PSS, "sha256", PyKCS11.CKM_ECDSA_SHA256)

    with pytest.raises(SigningError) as raised:
        _signer(token).sign_pdf(unsigned_pdf, tmp_path / "signed.pdf", signer_name=SIGNER_NAME)

    assert "signing.rsa_padding" in str(raised.value)
    assert not (tmp_path / "signed.pdf").exists()


def test_second_signature_gets_new_field(token, unsigned_pdf, tmp_path):
    once = tmp_path / "once.pdf"
    twice = tmp_path / "twice.pdf"
    signer = _signer(token)

    signer.sign_pdf(unsigned_pdf, once, signer_name=SIGNER_NAME)
    signer.sign_pdf(once, twice, signer_name="Trần Thị Bình")

    with pikepdf.open(twice) as pdf:
        names = sorted(str(field.T) for field in pdf.Root.AcroForm.Fields)
    assert names == ["SohoaSignature1", "SohoaSignature2"]
    result = verify_pdf(twice, [token.ca_cert_path])
    _assert_verified(result)
    assert "2 signature(s)" in result.summary


def test_naive_signing_time_rejected(token, unsigned_pdf, tmp_path):
    with pytest.raises(ValueError):
        _signer(token).sign_pdf(unsigned_pdf, tmp_path / "signed.pdf", signer_name=SIGNER_NAME, signed_at=datetime(2026, 1, 1))


def test_unreadable_source_raises_pdf_error(token, tmp_path):
    garbage = tmp_path / "garbage.pdf"
    garbage.write_bytes(b"%PDF-1.7\nnot really\n")

    with pytest.raises(PdfError):
        _signer(token).sign_pdf(garbage, tmp_path / "signed.pdf", signer_name=SIGNER_NAME)
    assert not (tmp_path / "signed.pdf").exists()

