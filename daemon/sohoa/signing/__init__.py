"""PAdES signing with a key on a PKCS#11 token (through PyKCS11), and signature validation.

Typical use by the pipeline::

    signer = TokenSigner(config.signing)
    signer.probe()                      # at start-up: token present, PIN right, key and certificate found
    signer.sign_pdf(src, dst, signer_name=name)
    if config.signing.unit_signing_enabled:  # licences, certificates, diplomas
        TokenSigner.for_unit(config.signing).sign_pdf(dst, final, signer_name=config.box.unit)
    result = verify_pdf(final, config.signing.trust_roots)
    ok = result.valid and result.intact and result.trusted   # over all signatures

Every call opens its own session and closes it before returning, so a token
pulled out between calls is found again once it is re-inserted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from asn1crypto import x509

from sohoa.config import SigningConfig, read_secret
from sohoa.errors import ConfigError, TimestampUnavailableError
from sohoa.i18n import N_
from sohoa.signing.pades import (
    OPERATOR_STAMP,
    UNIT_STAMP,
    TokenCmsSigner,
    operator_stamp_text,
    sign_document,
    unit_stamp_text,
)
from sohoa.signing.timestamps import TsaReply, add_document_timestamp, make_timestamper, query_tsa_time
from sohoa.signing.token import TokenSession, open_token_session
from sohoa.signing.verify import SignatureStatus, VerificationResult, verify_pdf

__all__ = [
    "KeyLocation",
    "SignatureStatus",
    "SigningOutcome",
    "TokenInfo",
    "TokenSigner",
    "TsaReply",
    "VerificationResult",
    "add_document_timestamp",
    "make_timestamper",
    "query_tsa_time",
    "verify_pdf",
]

Role = Literal["operator", "unit"]


@dataclass(frozen=True)
class KeyLocation:
    """Which token and key a signer uses, where its PIN comes from, and the config keys that set them."""

    token_label: str
    key_id: str  # CKA_ID in lower-case hex
    pin_file: Path | None
    pin_env: str | None
    setting_prefix: str  # "signing." or "signing.unit_", for messages that name the setting to fix

    @classmethod
    def of_operator(cls, config: SigningConfig) -> KeyLocation:
        return cls(config.token_label, config.key_id, config.pin_file, config.pin_env, "signing.")

    @classmethod
    def of_unit(cls, config: SigningConfig) -> KeyLocation:
        """Return the unit key's location; on the operator's token the operator's PIN is the default.

        Raises ConfigError when unit signing is not configured.
        """
        if config.unit_key_id is None:
            raise ConfigError(N_("The unit's signature is not configured; set signing.unit_key_id."))
        token_label = config.unit_token_label or config.token_label
        pin_file, pin_env = config.unit_pin_file, config.unit_pin_env
        if pin_file is None and pin_env is None and token_label == config.token_label:
            pin_file, pin_env = config.pin_file, config.pin_env
        return cls(token_label, config.unit_key_id, pin_file, pin_env, "signing.unit_")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SigningOutcome:
    """What :meth:`TokenSigner.sign_pdf` did: whether the signature has a timestamp, and whether one is still owed."""

    timestamped: bool
    timestamp_pending: bool  # a TSA is configured but did not respond


@dataclass(frozen=True)
class TokenInfo:
    """The token and signer certificate found by :meth:`TokenSigner.probe`."""

    label: str
    serial: str
    key_id: str  # CKA_ID in lower-case hex
    subject: str  # the certificate subject, RFC 4514 style
    not_after: datetime  # certificate expiry, UTC


class TokenSigner:
    """Signs PDFs with one key on a PKCS#11 token, found by its CKA_ID.

    The operator's signer (``role="operator"``) uses ``config.key_id`` on
    ``config.token_label`` and draws its field at the top left of page 1. The
    unit's signer (``role="unit"``, see :meth:`for_unit`) uses
    ``config.unit_key_id`` on ``config.unit_token_label`` (default: the
    operator's token) and draws its field at the top right. ``rsa_pss``
    selects RSASSA-PSS (True) or PKCS#1 v1.5 (False) for RSA keys and
    defaults to ``config.rsa_padding``. It has no effect on ECDSA keys.
    """

    def __init__(self, config: SigningConfig, *, rsa_pss: bool | None = None, role: Role = "operator") -> None:
        self._config = config
        self._role = role
        self._location = KeyLocation.of_unit(config) if role == "unit" else KeyLocation.of_operator(config)
        self._key_id = bytes.fromhex(self._location.key_id)
        self._rsa_pss = config.rsa_padding == "pss" if rsa_pss is None else rsa_pss

    @classmethod
    def for_unit(cls, config: SigningConfig, *, rsa_pss: bool | None = None) -> TokenSigner:
        """Return the converting unit's signer; raises ConfigError when ``config.unit_key_id`` is unset."""
        return cls(config, rsa_pss=rsa_pss, role="unit")

    @property
    def role(self) -> Role:
        return self._role

    @property
    def token_label(self) -> str:
        return self._location.token_label

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
                key_id=self._location.key_id,
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
    ) -> SigningOutcome:
        """Write ``src`` with a visible PAdES signature to ``dst``, atomically.

        With ``signing.tsa_url`` set the signature carries an RFC 3161
        timestamp (PAdES B-T). If the authority does not respond, the file is
        signed without one (PAdES B-B) and the outcome says that a document
        timestamp is pending.

        ``signer_name`` is the person's name for the operator's signer and the
        unit's full name for the unit's signer. ``signed_at`` must carry a
        time zone; it defaults to now in the local zone. On any error ``dst`` is left as it was. Call it from a plain
        thread, not from a running asyncio event loop, because pyHanko 0.38
        starts its own loop with ``asyncio.run``. The same holds for
        :func:`verify_pdf`.
        """
        if signed_at is None:
            signed_at = datetime.now(timezone.utc).astimezone()
        elif signed_at.tzinfo is None:
            raise ValueError("signed_at must be timezone-aware")

        if self._role == "unit":
            layout, text = UNIT_STAMP, unit_stamp_text(signer_name, signed_at)
        else:
            layout, text = OPERATOR_STAMP, operator_stamp_text(signer_name, signed_at)
        timestamper = make_timestamper(self._config)

        def sign(signer: TokenCmsSigner, with_timestamp: bool) -> None:
            sign_document(
                signer,
                Path(src),
                Path(dst),
                signer_name=signer_name,
                signed_at=signed_at,
                reason=reason,
                location=location,
                stamp_text=text,
                layout=layout,
                timestamper=timestamper if with_timestamp else None,
            )

        timestamped = timestamper is not None
        with self._session() as token:
            signer = self._cms_signer(token)
            try:
                sign(signer, timestamped)
            except TimestampUnavailableError as exc:
                log.warning("Signing %s without a timestamp (PAdES B-B): %s", src, exc)
                timestamped = False
                sign(signer, False)
        log.info(
            "Signed %s as %s (%s) on token %s, %s, wrote %s",
            src, signer_name, self._role, self.token_label, "with a timestamp" if timestamped else "without a timestamp", dst,
        )  # fmt: skip
        return SigningOutcome(timestamped=timestamped, timestamp_pending=timestamper is not None and not timestamped)

    def _session(self):
        return open_token_session(
            self._config.pkcs11_module,
            self._location.token_label,
            self._read_pin(),
            label_setting=f"{self._location.setting_prefix}token_label",
        )

    def _read_pin(self) -> str:
        location = self._location
        pin = read_secret(location.pin_file, location.pin_env, "token PIN")
        if pin is None:
            raise ConfigError(
                N_("No PIN configured for token {label}; set {prefix}pin_file or {prefix}pin_env."),
                label=location.token_label,
                prefix=location.setting_prefix,
            )
        return pin

    def _cms_signer(self, token: TokenSession) -> TokenCmsSigner:
        key = token.find_private_key(self._key_id)
        certificate = x509.Certificate.load(token.find_certificate(self._key_id))
        others = [x509.Certificate.load(der) for der in token.other_certificates(self._key_id)]
        return TokenCmsSigner(token, key, certificate, others, prefer_pss=self._rsa_pss)
