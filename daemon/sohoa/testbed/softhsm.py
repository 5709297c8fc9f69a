"""A private SoftHSM2 token holding the test signer's key and certificate.

libsofthsm2 reads the ``SOFTHSM2_CONF`` environment variable once, when the
module is initialised (``C_Initialize``, which PyKCS11 calls on load). Code that
loads the module must therefore run with ``TestToken.env`` already in
``os.environ``; in pytest, call ``monkeypatch.setenv("SOFTHSM2_CONF", ...)``
before anything opens the token. :class:`sohoa.signing.TokenSigner` loads and
finalises the module on every call, so a test that sets the variable first
always gets its own token folder.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import PyKCS11
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sohoa.config import SigningConfig
from sohoa.fsutil import write_atomic
from sohoa.testbed.pki import TestPki

MODULE_CANDIDATES = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/local/lib/softhsm/libsofthsm2.so"),
)
SOFTHSM_UTIL = "softhsm2-util"
SUBPROCESS_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class TestToken:
    """An initialised SoftHSM2 token and what a signer needs to use it."""

    __test__ = False  # not a pytest test class despite the name

    folder: Path
    module_path: Path
    conf_path: Path
    token_dir: Path
    label: str
    key_id: str
    key_label: str
    cert_label: str
    pin: str
    so_pin: str
    ca_cert_path: Path

    @property
    def env(self) -> dict[str, str]:
        """Environment that points libsofthsm2 at this token's configuration."""
        return {"SOFTHSM2_CONF": str(self.conf_path)}

    @property
    def module(self) -> Path:
        """Path of libsofthsm2.so; the same as ``module_path``, the name the demo uses."""
        return self.module_path

    @property
    def unplugged_dir(self) -> Path:
        return self.folder / "unplugged"

    def token_subfolder(self) -> Path:
        """Return the folder SoftHSM created for this token inside ``token_dir``."""
        subfolders = [path for path in self.token_dir.iterdir() if path.is_dir()]
        if len(subfolders) != 1:
            raise RuntimeError(f"Expected one token folder in {self.token_dir}, found {len(subfolders)}")
        return subfolders[0]

    def unplug(self) -> None:
        """Make the token vanish, as if pulled out, by moving its folder out of ``token_dir``.

        SoftHSM treats every folder inside ``token_dir`` as a token, whatever
        its name, so renaming the folder in place is not enough.
        """
        self.unplugged_dir.mkdir(exist_ok=True)
        subfolder = self.token_subfolder()
        subfolder.rename(self.unplugged_dir / subfolder.name)

    def replug(self) -> None:
        """Bring back a token removed by :meth:`unplug`."""
        (subfolder,) = self.unplugged_dir.iterdir()
        subfolder.rename(self.token_dir / subfolder.name)

    def signing_config(self, **overrides: object) -> SigningConfig:
        """Build a SigningConfig for this token; ``overrides`` replace any field (e.g. ``pin_env``)."""
        fields: dict[str, object] = {
            "pkcs11_module": self.module_path,
            "token_label": self.label,
            "key_id": self.key_id,
            "trust_roots": [self.ca_cert_path],
        }
        fields.update(overrides)
        return SigningConfig(**fields)


def find_softhsm_module() -> Path:
    """Return the path of libsofthsm2.so, or raise FileNotFoundError naming the paths tried."""
    for candidate in MODULE_CANDIDATES:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(path) for path in MODULE_CANDIDATES)
    raise FileNotFoundError(f"libsofthsm2.so not found (tried {tried}); install the softhsm2 package.")


def create_test_token(
    folder: Path,
    pki: TestPki,
    *,
    label: str = "sohoa-test",
    pin: str = "123456",
    so_pin: str = "12345678",
    key_id: str = "01",
    key_label: str = "sohoa-signer",
    cert_label: str | None = None,
) -> TestToken:
    """Initialise a token in ``folder`` and import the signer key and certificate of ``pki``.

    Key and certificate share the CKA_ID ``key_id`` (hex). ``cert_label``
    defaults to ``key_label``; pass a different label to imitate CA tokens that
    label the key and the certificate differently.
    """
    folder = Path(folder)
    token_dir = folder / "tokens"
    token_dir.mkdir(parents=True, exist_ok=True)
    conf_path = folder / "softhsm2.conf"
    write_atomic(conf_path, _softhsm_conf(token_dir).encode())

    token = TestToken(
        folder=folder,
        module_path=find_softhsm_module(),
        conf_path=conf_path,
        token_dir=token_dir,
        label=label,
        key_id=key_id.lower(),
        key_label=key_label,
        cert_label=cert_label if cert_label is not None else key_label,
        pin=pin,
        so_pin=so_pin,
        ca_cert_path=pki.ca_cert_path,
    )
    _run_softhsm_util(token, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin)
    _run_softhsm_util(
        token,
        "--import", str(pki.signer_key_path),
        "--token", label,
        "--id", token.key_id,
        "--label", key_label,
        "--pin", pin,
    )  # fmt: skip
    import_certificate(token, pki.signer_cert)
    return token


def _softhsm_conf(token_dir: Path) -> str:
    return f"directories.tokendir = {token_dir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"


def _run_softhsm_util(token: TestToken, *args: str) -> None:
    environment = {**os.environ, **token.env}
    result = subprocess.run(
        [SOFTHSM_UTIL, *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        # The arguments contain the PINs, so only the action is named.
        raise RuntimeError(f"{SOFTHSM_UTIL} {args[0]} failed ({result.returncode}): {result.stderr.strip()}")


def import_certificate(token: TestToken, certificate: x509.Certificate, label: str | None = None) -> None:
    """Store ``certificate`` on the token with the key's CKA_ID, through PyKCS11.

    ``label`` defaults to ``token.cert_label``. Tests also use this to add a
    second, renewed certificate for the same key.
    """
    template = [
        (PyKCS11.CKA_CLASS, PyKCS11.CKO_CERTIFICATE),
        (PyKCS11.CKA_CERTIFICATE_TYPE, PyKCS11.CKC_X_509),
        (PyKCS11.CKA_TOKEN, PyKCS11.CK_TRUE),
        (PyKCS11.CKA_PRIVATE, PyKCS11.CK_FALSE),
        (PyKCS11.CKA_LABEL, label if label is not None else token.cert_label),
        (PyKCS11.CKA_ID, bytes.fromhex(token.key_id)),
        (PyKCS11.CKA_SUBJECT, certificate.subject.public_bytes()),
        (PyKCS11.CKA_ISSUER, certificate.issuer.public_bytes()),
        (PyKCS11.CKA_SERIAL_NUMBER, _der_integer(certificate.serial_number)),
        (PyKCS11.CKA_VALUE, certificate.public_bytes(serialization.Encoding.DER)),
    ]
    with _softhsm_environment(token), _logged_in_session(token) as session:
        session.createObject(template)


def _der_integer(value: int) -> bytes:
    # CKA_SERIAL_NUMBER is the DER encoding of the INTEGER, tag and length included.
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return bytes([0x02, len(body)]) + body


@contextmanager
def _softhsm_environment(token: TestToken) -> Iterator[None]:
    """Set SOFTHSM2_CONF while the module is loaded in this process, then restore it."""
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(token.conf_path)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SOFTHSM2_CONF"]
        else:
            os.environ["SOFTHSM2_CONF"] = previous


@contextmanager
def _logged_in_session(token: TestToken) -> Iterator[PyKCS11.Session]:
    library = PyKCS11.PyKCS11Lib()
    library.load(str(token.module_path))
    try:
        slot = _slot_with_label(library, token.label)
        session = library.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
        try:
            session.login(token.pin)
            try:
                yield session
            finally:
                session.logout()
        finally:
            session.closeSession()
    finally:
        library.unload()


def _slot_with_label(library: PyKCS11.PyKCS11Lib, label: str) -> int:
    for slot in library.getSlotList(tokenPresent=True):
        if library.getTokenInfo(slot).label.strip() == label:
            return slot
    raise RuntimeError(f"Token {label!r} not found after initialisation")
