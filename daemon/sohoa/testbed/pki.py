"""A throw-away PKI for tests and demos: a self-signed CA and one signer certificate.

The certificates are for testing only: the CA's name says so, and the keys are
written unencrypted into the folder you pass.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from sohoa.fsutil import write_atomic

KeyType = Literal["rsa", "ec"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

RSA_KEY_BITS = 2048
CA_VALIDITY_DAYS = 3650
SIGNER_VALIDITY_DAYS = 730


@dataclass(frozen=True)
class TestPki:
    """Files and objects of a test CA and its signer certificate."""

    __test__ = False  # not a pytest test class despite the name

    folder: Path
    key_type: KeyType
    ca_cert: x509.Certificate
    ca_key: PrivateKey
    ca_cert_path: Path  # PEM
    signer_cert: x509.Certificate
    signer_key: PrivateKey
    signer_cert_path: Path  # PEM
    signer_cert_der_path: Path
    signer_key_path: Path  # unencrypted PKCS#8 PEM, the format `softhsm2-util --import` reads

    @property
    def signer_cert_der(self) -> bytes:
        return self.signer_cert.public_bytes(serialization.Encoding.DER)

    @property
    def signer_key_pem(self) -> bytes:
        return _pkcs8_pem(self.signer_key)


def create_test_pki(
    folder: Path,
    *,
    signer_name: str = "Nguyễn Văn An",
    organisation: str = "Sở Giáo dục và Đào tạo (thử nghiệm)",
    key_type: KeyType = "rsa",
) -> TestPki:
    """Create a test CA and a signer certificate for ``signer_name`` and write them into ``folder``.

    The signer certificate has the key usages digitalSignature and
    nonRepudiation, which PAdES validators expect of a document-signing key.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

    ca_key = _generate_key(key_type)
    ca_name = _name("Sohoa Test CA (not for production)", organisation)
    ca_cert = _issue_ca_certificate(ca_key, ca_name, now)

    signer_key = _generate_key(key_type)
    signer_cert = _issue_signer_certificate(signer_key, _name(signer_name, organisation), ca_cert, ca_key, now)

    ca_cert_path = folder / "ca.pem"
    signer_cert_path = folder / "signer.pem"
    signer_cert_der_path = folder / "signer.der"
    signer_key_path = folder / "signer-key.pem"
    write_atomic(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM))
    write_atomic(signer_cert_path, signer_cert.public_bytes(serialization.Encoding.PEM))
    write_atomic(signer_cert_der_path, signer_cert.public_bytes(serialization.Encoding.DER))
    write_atomic(signer_key_path, _pkcs8_pem(signer_key))
    signer_key_path.chmod(0o600)

    return TestPki(
        folder=folder,
        key_type=key_type,
        ca_cert=ca_cert,
        ca_key=ca_key,
        ca_cert_path=ca_cert_path,
        signer_cert=signer_cert,
        signer_key=signer_key,
        signer_cert_path=signer_cert_path,
        signer_cert_der_path=signer_cert_der_path,
        signer_key_path=signer_key_path,
    )


def renew_signer_certificate(pki: TestPki, validity_days: int = 2 * SIGNER_VALIDITY_DAYS) -> x509.Certificate:
    """Issue a new certificate for the signer's existing key and subject, valid for ``validity_days``."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return _issue_signer_certificate(
        pki.signer_key, pki.signer_cert.subject, pki.ca_cert, pki.ca_key, now, validity_days=validity_days
    )


def _generate_key(key_type: KeyType) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"Unsupported key type {key_type!r}; use 'rsa' or 'ec'.")


def _name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _issue_ca_certificate(key: PrivateKey, name: x509.Name, now: dt.datetime) -> x509.Certificate:
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return builder.sign(key, hashes.SHA256())


def _issue_signer_certificate(
    key: PrivateKey,
    name: x509.Name,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    now: dt.datetime,
    *,
    validity_days: int = SIGNER_VALIDITY_DAYS,
) -> x509.Certificate:
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, content_commitment=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    return builder.sign(ca_key, hashes.SHA256())


def _key_usage(*, digital_signature=False, content_commitment=False, key_cert_sign=False) -> x509.KeyUsage:
    # content_commitment is the X.509 key usage formerly called nonRepudiation.
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _pkcs8_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
