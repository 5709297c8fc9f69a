"""Validation of every signature and document timestamp in a PDF against given CA certificates, offline."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pyhanko.keys import load_certs_from_pemder
from pyhanko.pdf_utils.misc import PdfError as PyHankoPdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature, validate_pdf_timestamp
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko_certvalidator import ValidationContext

from sohoa.errors import ConfigError, PdfError
from sohoa.i18n import N_

log = logging.getLogger(__name__)


class _TrustFailureToDebug(logging.Filter):
    """Lower pyHanko's warning with a traceback about a certificate path it cannot build to DEBUG, without the traceback.

    pyHanko 0.2x logs every untrusted signer this way from
    ``pyhanko.sign.validation.generic_cms``. The result of :func:`verify_pdf`
    already records that the signer is not trusted, and callers report it once in
    their own words.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc_type = record.exc_info[0] if record.exc_info else None
        if exc_type is not None and exc_type.__module__.startswith("pyhanko_certvalidator"):
            record.msg = f"{record.msg} ({exc_type.__name__}: {record.exc_info[1]})"
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("pyhanko.sign.validation.generic_cms").addFilter(_TrustFailureToDebug())

SIGNATURE = "signature"
DOCUMENT_TIMESTAMP = "document_timestamp"


@dataclass(frozen=True)
class SignatureStatus:
    """Outcome of validating one signature field.

    ``kind`` is ``"signature"`` (a PAdES signature) or
    ``"document_timestamp"`` (an RFC 3161 document timestamp added later).
    ``timestamp`` is the time of the signature's RFC 3161 timestamp token, or
    of the document timestamp itself, when there is one.
    ``covers_whole_file`` is false when later revisions follow the signed one.
    ``modification`` names what those revisions changed (pyHanko's
    ModificationLevel: NONE, LTA_UPDATES, FORM_FILLING, ANNOTATIONS, OTHER),
    and ``intact`` is false unless the signed bytes match and every later change
    is one the signature permits.
    """

    field_name: str
    kind: str
    valid: bool
    intact: bool
    trusted: bool
    signer: str
    signing_time: datetime | None
    timestamp: datetime | None
    timestamp_valid: bool | None  # None when there is no timestamp token
    covers_whole_file: bool
    modification: str
    summary: str

    @property
    def ok(self) -> bool:
        return self.valid and self.intact and self.trusted and self.timestamp_valid is not False


@dataclass(frozen=True)
class VerificationResult:
    """Outcome of validating every signature of one PDF.

    ``valid``: every CMS signature verifies cryptographically. ``intact``: every
    signed digest matches the bytes it covers, and any later revision only
    makes changes the signature permits. ``trusted``: every signer certificate
    chains to one of the trust roots with suitable key usage. ``signer`` and
    ``signing_time`` describe the last signature (document timestamps aside);
    ``signatures`` holds each field's own status in file order; ``summary`` is
    one English line for logs.
    """

    valid: bool
    intact: bool
    trusted: bool
    signer: str
    signing_time: datetime | None
    summary: str
    signatures: tuple[SignatureStatus, ...] = field(default=())


def verify_pdf(path: Path, trust_roots: Sequence[Path]) -> VerificationResult:
    """Validate every signature and document timestamp in ``path`` against ``trust_roots`` without network access.

    An invalid or untrusted signature is reported in the result; PdfError is
    raised only when the file cannot be read as a PDF, and ConfigError when a
    trust root file cannot be read.
    """
    context = ValidationContext(trust_roots=_load_trust_roots(trust_roots), allow_fetching=False)
    try:
        with open(path, "rb") as handle:
            reader = PdfFileReader(handle, strict=False)
            signatures = reader.embedded_signatures
            if not signatures:
                return VerificationResult(False, False, False, "", None, f"{path}: no signature found")
            statuses = tuple(_validate_one(signature, context) for signature in signatures)
    except OSError as exc:
        raise PdfError(N_("Cannot read {path}: {detail}"), path=path, detail=exc) from exc
    except PyHankoPdfError as exc:
        raise PdfError(N_("Cannot verify {path}, it is not a readable PDF: {detail}"), path=path, detail=exc) from exc
    return _combine(path, statuses)


def _load_trust_roots(paths: Sequence[Path]) -> list:
    try:
        return list(load_certs_from_pemder([str(path) for path in paths]))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            N_("Cannot read the trust root certificates {paths}: {detail}; check signing.trust_roots."),
            paths=", ".join(str(path) for path in paths),
            detail=exc,
        ) from exc


def _validate_one(signature, context: ValidationContext) -> SignatureStatus:
    name = str(signature.field_name)  # a pyHanko string object that refers back to the open file
    is_timestamp = signature.sig_object_type == "/DocTimeStamp"
    kind = DOCUMENT_TIMESTAMP if is_timestamp else SIGNATURE
    try:
        if is_timestamp:
            status = validate_pdf_timestamp(signature, validation_context=context)
        else:
            status = validate_pdf_signature(signature, signer_validation_context=context)
    except (SignatureValidationError, PyHankoPdfError, ValueError) as exc:
        # A signature that pyHanko cannot even evaluate (damaged CMS, byte range outside the file) is invalid.
        return SignatureStatus(
            name, kind, False, False, False, "", None, None, None, False, "unknown", f"{name}: cannot be validated: {exc}"
        )

    modification = getattr(status.modification_level, "name", "NONE")
    if is_timestamp:
        # A document timestamp sets no DocMDP permissions, so pyHanko leaves docmdp_ok at None.
        modifications_ok = status.docmdp_ok is not False
    else:
        modifications_ok = status.docmdp_ok or status.modification_level is None
    intact = bool(status.intact and modifications_ok)
    signer = _common_name(status.signing_cert)
    if is_timestamp:
        signing_time, timestamp, timestamp_valid = None, status.timestamp, None
    else:
        signing_time = status.signer_reported_dt
        token = status.timestamp_validity
        timestamp = token.timestamp if token is not None else None
        timestamp_valid = bool(token.valid and token.intact and token.trusted) if token is not None else None
    summary = (
        f"{name} ({kind}): signer {signer!r}, valid={status.valid}, intact={intact}, trusted={status.trusted}, "
        f"coverage={status.coverage.name}, modifications={modification}"
    )
    if timestamp is not None:
        summary += f", timestamp {timestamp.isoformat()}"
    if status.trust_problem_indic is not None:
        summary += f", trust problem {status.trust_problem_indic}"
    return SignatureStatus(
        field_name=name,
        kind=kind,
        valid=bool(status.valid),
        intact=intact,
        trusted=bool(status.trusted),
        signer=signer,
        signing_time=signing_time,
        timestamp=timestamp,
        timestamp_valid=timestamp_valid,
        covers_whole_file=status.coverage.name == "ENTIRE_FILE",
        modification=modification,
        summary=summary,
    )


def _common_name(certificate) -> str:
    subject = certificate.subject.native
    return subject.get("common_name") or subject.get("organization_name") or certificate.subject.human_friendly


def _combine(path: Path, statuses: tuple[SignatureStatus, ...]) -> VerificationResult:
    signed = [status for status in statuses if status.kind == SIGNATURE] or list(statuses)
    last = signed[-1]
    valid = all(status.valid and status.timestamp_valid is not False for status in statuses)
    intact = all(status.intact for status in statuses)
    trusted = all(status.trusted for status in statuses)
    verdict = "OK" if valid and intact and trusted else "FAILED"
    summary = f"{path}: {len(statuses)} signature(s) {verdict}; " + "; ".join(status.summary for status in statuses)
    log.debug("Verified %s: %s", path, summary)
    return VerificationResult(valid, intact, trusted, last.signer, last.signing_time, summary, statuses)
