"""Access to the signing token through PyKCS11: one session per call, errors translated once.

Each :func:`open_token_session` loads the PKCS#11 module (``C_Initialize``),
opens a session on the token with the configured label, logs in, and on exit
logs out, closes the session and finalises the module. Loading per call lets a
re-inserted token, or a changed ``SOFTHSM2_CONF`` in tests, take effect without
restarting the daemon. A process-wide lock serialises calls, because a PKCS#11
login is shared by every session of the process and one call's logout would
end another's login.

The key and its certificate are found by CKA_ID, never by label: some CA
tokens label the key and the certificate differently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import PyKCS11
from asn1crypto import x509

from sohoa.errors import KeyNotFoundError, PinError, SigningError, TokenNotFoundError
from sohoa.i18n import N_
from sohoa.signing.mechanisms import RawSignatureOperation

log = logging.getLogger(__name__)

_TOKEN_LOCK = threading.Lock()

_PIN_REJECTED = {
    PyKCS11.CKR_PIN_INCORRECT,
    PyKCS11.CKR_PIN_INVALID,
    PyKCS11.CKR_PIN_LEN_RANGE,
    PyKCS11.CKR_PIN_EXPIRED,
}
_PIN_LOCKED = {PyKCS11.CKR_PIN_LOCKED}
_MECHANISM_REJECTED = {PyKCS11.CKR_MECHANISM_INVALID, PyKCS11.CKR_MECHANISM_PARAM_INVALID}
# Return values that mean the token (or the session on it) is gone.
_TOKEN_GONE = {
    PyKCS11.CKR_TOKEN_NOT_PRESENT,
    PyKCS11.CKR_DEVICE_REMOVED,
    PyKCS11.CKR_TOKEN_NOT_RECOGNIZED,
    PyKCS11.CKR_SLOT_ID_INVALID,
    PyKCS11.CKR_SESSION_HANDLE_INVALID,
    PyKCS11.CKR_SESSION_CLOSED,
    PyKCS11.CKR_OBJECT_HANDLE_INVALID,
    PyKCS11.CKR_KEY_HANDLE_INVALID,
}


@contextmanager
def pkcs11_errors(token_label: str, step: str) -> Iterator[None]:
    """Translate a PyKCS11Error raised during ``step`` into the matching SigningError."""
    try:
        yield
    except PyKCS11.PyKCS11Error as exc:
        raise _translate(exc, token_label, step) from exc


def _translate(exc: PyKCS11.PyKCS11Error, token_label: str, step: str) -> SigningError:
    detail = str(exc)
    if exc.value in _PIN_LOCKED:
        return PinError(
            N_("The PIN of token {label} is locked ({detail}); unlock it with the security officer PIN, then retry."),
            label=token_label,
            detail=detail,
        )
    if exc.value in _PIN_REJECTED:
        return PinError(
            N_("Token {label} rejected the PIN ({detail}); correct the PIN credential before the token locks."),
            label=token_label,
            detail=detail,
        )
    if exc.value in _TOKEN_GONE:
        return TokenNotFoundError(
            N_("Token {label} was removed or changed during {step} ({detail}); insert it again and retry."),
            label=token_label,
            step=step,
            detail=detail,
        )
    if exc.value in _MECHANISM_REJECTED:
        return SigningError(
            N_("Token {label} rejected the signature mechanism during {step} ({detail}); if it lacks RSA-PSS, set signing.rsa_padding = \"pkcs1v15\"."),
            label=token_label,
            step=step,
            detail=detail,
        )
    return SigningError(
        N_("PKCS#11 {step} on token {label} failed: {detail}"),
        step=step,
        label=token_label,
        detail=detail,
    )


class TokenSession:
    """A logged-in session on one token, valid inside :func:`open_token_session`."""

    def __init__(self, library: PyKCS11.PyKCS11Lib, session: PyKCS11.Session, label: str, serial: str) -> None:
        self._library = library
        self._session = session
        self.label = label
        self.serial = serial

    def find_private_key(self, key_id: bytes) -> int:
        """Return the handle of the only private key with CKA_ID ``key_id``."""
        keys = self._find([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY), (PyKCS11.CKA_ID, key_id)], "private key search")
        if not keys:
            raise KeyNotFoundError(
                N_("No private key with CKA_ID {key_id} on token {label}; check signing.key_id against `pkcs11-tool --list-objects --login`."),
                key_id=key_id.hex(),
                label=self.label,
            )
        if len(keys) > 1:
            raise KeyNotFoundError(
                N_("Token {label} holds {count} private keys with CKA_ID {key_id}; give the signing key a unique CKA_ID."),
                label=self.label,
                count=len(keys),
                key_id=key_id.hex(),
            )
        return keys[0]

    def find_certificate(self, key_id: bytes) -> bytes:
        """Return the DER X.509 certificate with CKA_ID ``key_id``."""
        handles = self._find(self._certificate_template() + [(PyKCS11.CKA_ID, key_id)], "certificate search")
        if not handles:
            raise KeyNotFoundError(
                N_("Token {label} has a key with CKA_ID {key_id} but no certificate with that CKA_ID; import the signer certificate with the same CKA_ID."),
                label=self.label,
                key_id=key_id.hex(),
            )
        certificates = {self._value(handle) for handle in handles}
        if len(certificates) > 1:
            # A renewed certificate is sometimes stored beside the old one for the same key.
            log.warning(
                "Token %s has %d different certificates with CKA_ID %s; using the one that expires last",
                self.label, len(certificates), key_id.hex(),
            )  # fmt: skip
        return max(certificates, key=lambda der: x509.Certificate.load(der).not_valid_after)

    def other_certificates(self, key_id: bytes) -> list[bytes]:
        """Return the DER certificates on the token whose CKA_ID is not ``key_id`` (CA and intermediate certificates)."""
        certificates = []
        for handle in self._find(self._certificate_template(), "certificate search"):
            with pkcs11_errors(self.label, "certificate read"):
                (object_id,) = self._session.getAttributeValue(handle, [PyKCS11.CKA_ID], allAsBinary=True)
            if bytes(object_id or b"") != key_id:
                certificates.append(self._value(handle))
        return certificates

    def sign(self, key: int, operation: RawSignatureOperation, data: bytes) -> bytes:
        """Sign ``data`` on the token with ``key`` as ``operation`` describes."""
        with pkcs11_errors(self.label, "signing"):
            raw = self._session.sign(key, operation.prepare_input(data), operation.mechanism)
        return operation.encode_output(bytes(raw))

    @staticmethod
    def _certificate_template() -> list[tuple[int, int]]:
        return [(PyKCS11.CKA_CLASS, PyKCS11.CKO_CERTIFICATE), (PyKCS11.CKA_CERTIFICATE_TYPE, PyKCS11.CKC_X_509)]

    def _find(self, template: list, step: str) -> list[int]:
        with pkcs11_errors(self.label, step):
            return list(self._session.findObjects(template))

    def _value(self, handle: int) -> bytes:
        with pkcs11_errors(self.label, "certificate read"):
            (value,) = self._session.getAttributeValue(handle, [PyKCS11.CKA_VALUE], allAsBinary=True)
        return bytes(value)


@contextmanager
def open_token_session(
    module_path: Path, token_label: str, pin: str, *, label_setting: str = "signing.token_label"
) -> Iterator[TokenSession]:
    """Load the module, log in to the token labelled ``token_label`` and yield the session.

    Raises TokenNotFoundError (listing the labels seen) when no present token
    has that label, PinError when the PIN is rejected, and SigningError when
    the module cannot be loaded. ``label_setting`` names the config key that
    sets the label, for the error message.
    """
    with _TOKEN_LOCK:
        library = _load_module(module_path)
        try:
            slot, serial = _find_slot(library, module_path, token_label, label_setting)
            with _logged_in(library, slot, token_label, pin) as session:
                yield TokenSession(library, session, token_label, serial)
        finally:
            _unload_module(library, module_path)


def _load_module(module_path: Path) -> PyKCS11.PyKCS11Lib:
    library = PyKCS11.PyKCS11Lib()
    try:
        library.load(str(module_path))
    except PyKCS11.PyKCS11Error as exc:
        raise SigningError(
            N_("Cannot load the PKCS#11 module {module}: {detail}. Check signing.pkcs11_module and the token driver."),
            module=module_path,
            detail=exc,
        ) from exc
    return library


def _unload_module(library: PyKCS11.PyKCS11Lib, module_path: Path) -> None:
    try:
        library.unload()
    except PyKCS11.PyKCS11Error as exc:
        # The work is already done or already failed; a failed C_Finalize only leaks module state.
        log.warning("Unloading PKCS#11 module %s failed: %s", module_path, exc)


def _find_slot(library: PyKCS11.PyKCS11Lib, module_path: Path, token_label: str, label_setting: str) -> tuple[int, str]:
    labels_seen = []
    with pkcs11_errors(token_label, "slot listing"):
        for slot in library.getSlotList(tokenPresent=True):
            info = library.getTokenInfo(slot)
            label = info.label.strip()
            if not info.flags & PyKCS11.CKF_TOKEN_INITIALIZED:
                continue
            if label == token_label:
                return slot, info.serialNumber.strip()
            labels_seen.append(label)
    raise TokenNotFoundError(
        N_("No token labelled {label} is present in PKCS#11 module {module} (labels seen: {seen}); insert the signing token or correct {setting}."),
        label=token_label,
        setting=label_setting,
        module=module_path,
        seen=", ".join(repr(label) for label in labels_seen) or "none",
    )


@contextmanager
def _logged_in(library: PyKCS11.PyKCS11Lib, slot: int, token_label: str, pin: str) -> Iterator[PyKCS11.Session]:
    with pkcs11_errors(token_label, "session opening"):
        session = library.openSession(slot, PyKCS11.CKF_SERIAL_SESSION)
    try:
        _login(session, token_label, pin)
        try:
            yield session
        finally:
            _quietly(session.logout, token_label, "logout")
    finally:
        _quietly(session.closeSession, token_label, "session closing")


def _login(session: PyKCS11.Session, token_label: str, pin: str) -> None:
    try:
        session.login(pin)
    except PyKCS11.PyKCS11Error as exc:
        if exc.value == PyKCS11.CKR_USER_ALREADY_LOGGED_IN:
            return
        raise _translate(exc, token_label, "login") from exc


def _quietly(close_step, token_label: str, step: str) -> None:
    """Run a clean-up step; a token already removed cannot be logged out of, which is not an error."""
    try:
        close_step()
    except PyKCS11.PyKCS11Error as exc:
        log.debug("PKCS#11 %s on token %s failed: %s", step, token_label, exc)
