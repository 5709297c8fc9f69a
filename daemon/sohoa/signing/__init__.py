"""PAdES signing with a key on a PKCS#11 token (through PyKCS11), and signature validation.

Typical use by the pipeline::

    signer = TokenSigner(config.signing)
    signer.probe()                      # at start-up: token present, PIN right, key and certificate found
    signer.sign_pdf(src, dst, signer_name=name)
    result = verify_pdf(dst, config.signing.trust_roots)
    ok = result.valid and result.intact and result.trusted

Every call opens its own session and closes it before returning, so a token
pulled out between calls is found again once it is re-inserted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from asn1crypto import x509

from sohoa.config import SigningConfig, read_secret
from sohoa.errors import ConfigError
from sohoa.i18n import N_
from sohoa.signing.pades import TokenCmsSigner, sign_document
from sohoa.signing.token import TokenSession, open_token_session
from sohoa.signing.verify import VerificationResult, verify_pdf

__all__ = ["TokenInfo", "TokenSigner", "VerificationResult", "verify_pdf"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenInfo:
    """The token and signer certificate found by :meth:`TokenSigner.probe`."""

    label: str
    serial: str
    key_id: str  # CKA_ID in lower-case hex
    subject: str  # the certificate subject, RFC 4514 style
    not_after: datetime  # certificate expiry, UTC


class TokenSigner:
    """Signs PDFs with the key whose CKA_ID is ``config.key_id`` on the token labelled ``config.token_label``.

    ``rsa_pss`` selects RSASSA-PSS instead of PKCS#1 v1.5 for RSA keys; it has
    no effect on ECDSA keys.
    """

    def __init__(self, config: SigningConfig, *, rsa_pss: bool = False) -> None:
        self._config = config
        self._key_id = bytes.fromhex(config.key_id)
        self._rsa_pss = rsa_pss

    def probe(self) -> TokenInfo:
        """Log in, find the key and its certificate, log out, and describe what was found.

        Raises TokenNotFoundError, KeyNotFoundError, PinError, or SigningError
        when the PKCS#11 module cannot be loaded.
        """
        with self._session() as token:
            token.find_private_key(self._key_id)
            certificate = x509.Certificate.load(token.find_certificate(self._key_id))
            info = TokenInfo(
                label=token.label,
                serial=token.serial,
                key_id=self._config.key_id,
                subject=certificate.subject.human_friendly,
                not_after=certificate.not_valid_after.astimezone(timezone.utc),
            )
        log.info(
            "Token %s (serial %s) ready: key %s, certificate %s valid until %s",
            info.label, info.serial, info.key_id, info.subject, info.not_after,
        )  # fmt: skip
        return info

    def sign_pdf(
        self,
        src: Path,
        dst: Path,
        *,
        signer_name: str,
        signed_at: datetime | None = None,
        reason: str | None = None,
        location: str | None = None,
    ) -> None:
        """Write ``src`` with a visible PAdES signature to ``dst``, atomically.

        ``signed_at`` must carry a time zone; it defaults to now in the local
        zone. On any error ``dst`` is left as it was. Call it from a plain
        thread, not from a running asyncio event loop, because pyHanko 0.38
        starts its own loop with ``asyncio.run``. The same holds for
        :func:`verify_pdf`.
        """
        if signed_at is None:
            signed_at = datetime.now(timezone.utc).astimezone()
        elif signed_at.tzinfo is None:
            raise ValueError("signed_at must be timezone-aware")

        with self._session() as token:
            signer = self._cms_signer(token)
            sign_document(
                signer, Path(src), Path(dst), signer_name=signer_name, signed_at=signed_at, reason=reason, location=location
            )
        log.info("Signed %s as %s on token %s, wrote %s", src, signer_name, self._config.token_label, dst)

    def _session(self):
        return open_token_session(self._config.pkcs11_module, self._config.token_label, self._read_pin())

    def _read_pin(self) -> str:
        pin = read_secret(self._config.pin_file, self._config.pin_env, "token PIN")
        if pin is None:
            raise ConfigError(
                N_("No PIN configured for token {label}; set signing.pin_file or signing.pin_env."),
                label=self._config.token_label,
            )
        return pin

    def _cms_signer(self, token: TokenSession) -> TokenCmsSigner:
        key = token.find_private_key(self._key_id)
        certificate = x509.Certificate.load(token.find_certificate(self._key_id))
        others = [x509.Certificate.load(der) for der in token.other_certificates(self._key_id)]
        return TokenCmsSigner(token, key, certificate, others, prefer_pss=self._rsa_pss)
