"""Test fixtures for the converting unit's signature, timestamps and the Vietnamese catalog.

The unit's identity is a second certificate from the same test CA, issued to
the organisation. It goes either on the operator's token under another CKA_ID
(:func:`add_key`) or on a token of its own in the same SoftHSM token folder
(:func:`sohoa.testbed.softhsm.create_test_token` with the unit's
:class:`~sohoa.testbed.pki.TestPki` and the same folder), so one
``SOFTHSM2_CONF`` serves both tokens.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from pyhanko.keys import load_private_key_from_pemder
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

from sohoa.fsutil import write_atomic
from sohoa.testbed.pki import TestPki
from sohoa.testbed.softhsm import SOFTHSM_UTIL, SUBPROCESS_TIMEOUT_SECONDS, TestToken, import_certificate

log = logging.getLogger(__name__)

UNIT_NAME = "Sở Giáo dục và Đào tạo tỉnh Bắc Ninh"
VALIDITY_DAYS = 730
MAIN_CATALOG = Path(__file__).resolve().parents[1] / "locale" / "vi" / "LC_MESSAGES" / "sohoa.po"


def issue_unit_identity(pki: TestPki, folder: Path, unit_name: str = UNIT_NAME) -> TestPki:
    """Issue a document-signing certificate for the unit from ``pki``'s CA; return it as the signer of a TestPki."""
    return _issue_identity(pki, Path(folder), unit_name, time_stamping=False)


def issue_tsa_identity(pki: TestPki, folder: Path, name: str = "Sohoa Test TSA (not for production)") -> TestPki:
    """Issue a time-stamping certificate (critical extendedKeyUsage timeStamping) from ``pki``'s CA."""
    return _issue_identity(pki, Path(folder), name, time_stamping=True)


def add_key(token: TestToken, identity: TestPki, key_id: str, label: str) -> TestToken:
    """Import ``identity``'s key and certificate into ``token`` under CKA_ID ``key_id``; return the key's view of the token."""
    keyed = dataclasses.replace(token, key_id=key_id.lower(), key_label=label, cert_label=f"{label}-cert")
    environment = {**os.environ, **keyed.env}
    result = subprocess.run(
        [
            SOFTHSM_UTIL, "--import", str(identity.signer_key_path),
            "--token", token.label, "--id", keyed.key_id, "--label", label, "--pin", token.pin,
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        # The arguments contain the PIN, so only the action is named.
        raise RuntimeError(f"{SOFTHSM_UTIL} --import failed ({result.returncode}): {result.stderr.strip()}")
    import_certificate(keyed, identity.signer_cert)
    return keyed


def compile_vietnamese_catalog(folder: Path) -> Path:
    """Return the compiled Vietnamese catalog that the package ships; ``folder`` is unused."""
    return MAIN_CATALOG.with_suffix(".mo")


def _issue_identity(pki: TestPki, folder: Path, common_name: str, *, time_stamping: bool) -> TestPki:
    folder.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if pki.key_type == "rsa" else ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            # X.520 limits both attributes to 64 characters.
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, common_name[:64]),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(pki.ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(pki.ca_key.public_key()), critical=False)
    )
    if time_stamping:
        # RFC 3161 section 2.3: the TSA certificate has exactly this one extended key usage, marked critical.
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        builder = builder.add_extension(_key_usage(content_commitment=False), critical=True)
    else:
        builder = builder.add_extension(_key_usage(content_commitment=True), critical=True)
    certificate = builder.sign(pki.ca_key, hashes.SHA256())

    stem = "tsa" if time_stamping else "unit"
    cert_path, der_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.der", folder / f"{stem}-key.pem"
    write_atomic(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    write_atomic(der_path, certificate.public_bytes(serialization.Encoding.DER))
    write_atomic(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_path.chmod(0o600)
    return dataclasses.replace(
        pki,
        folder=folder,
        signer_cert=certificate,
        signer_key=key,
        signer_cert_path=cert_path,
        signer_cert_der_path=der_path,
        signer_key_path=key_path,
    )


def _key_usage(*, content_commitment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


class LocalTsa:
    """An RFC 3161 time-stamping authority over HTTP on 127.0.0.1, signing with a test TSA certificate.

    pyHanko's DummyTimeStamper builds and signs each token in-process. This
    class puts it behind a real HTTP server so clients go through the network
    path. With ``available`` false it responds with HTTP 503, as a TSA that
    is down.
    """

    def __init__(self, identity: TestPki) -> None:
        certificate = asn1_x509.Certificate.load(identity.signer_cert_der)
        key = load_private_key_from_pemder(str(identity.signer_key_path), passphrase=None)
        self.stamper = DummyTimeStamper(tsa_cert=certificate, tsa_key=key, certs_to_embed=[])
        self.available = True
        self.requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-tsa", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/tsa"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if not tsa.available:
                    self.send_error(503, "time-stamping authority switched off by the test")
                    return
                tsa.requests += 1
                try:
                    reply = tsa.stamper.request_tsa_response(tsp.TimeStampReq.load(body)).dump()
                except ValueError as exc:
                    self.send_error(400, f"malformed time-stamp request: {exc}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of http.server
                log.debug("local TSA: " + format, *args)

        return Handler


@contextmanager
def run_local_tsa(identity: TestPki) -> Iterator[LocalTsa]:
    """Start a :class:`LocalTsa` for ``identity`` (see :func:`issue_tsa_identity`) and stop it on exit."""
    tsa = LocalTsa(identity)
    tsa.start()
    try:
        yield tsa
    finally:
        tsa.stop()
