"""Validation of every signature in a PDF against given CA certificates, offline."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pyhanko.keys import load_certs_from_pemder
from pyhanko.pdf_utils.misc import PdfError as PyHankoPdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.status import PdfSignatureStatus
from pyhanko_certvalidator import ValidationContext

from sohoa.errors import ConfigError, PdfError
from sohoa.i18n import N_

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerificationResult:
    """Outcome of validating every signature of one PDF.

    ``valid``: every CMS signature verifies cryptographically. ``intact``: every
    signed digest matches the bytes it covers, and any later revision only
    makes changes the signature permits. ``trusted``: every signer certificate
    chains to one of the trust roots with suitable key usage. ``signer`` and
    ``signing_time`` describe the last signature; ``summary`` is one English
    line for logs.
    """

    valid: bool
    intact: bool
    trusted: bool
    signer: str
    signing_time: datetime | None
    summary: str


def verify_pdf(path: Path, trust_roots: Sequence[Path]) -> VerificationResult:
    """Validate every signature in ``path`` against ``trust_roots`` without network access.

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
            results = [_validate_one(signature, context) for signature in signatures]
    except OSError as exc:
        raise PdfError(N_("Cannot read {path}: {detail}"), path=path, detail=exc) from exc
    except PyHankoPdfError as exc:
        raise PdfError(N_("Cannot verify {path}, it is not a readable PDF: {detail}"), path=path, detail=exc) from exc
    return _combine(path, results)


def _load_trust_roots(paths: Sequence[Path]) -> list:
    try:
        return list(load_certs_from_pemder([str(path) for path in paths]))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            N_("Cannot read the trust root certificates {paths}: {detail}; check signing.trust_roots."),
            paths=", ".join(str(path) for path in paths),
            detail=exc,
        ) from exc


def _validate_one(signature, context: ValidationContext) -> VerificationResult:
    field = signature.field_name
    try:
        status: PdfSignatureStatus = validate_pdf_signature(signature, signer_validation_context=context)
    except (SignatureValidationError, PyHankoPdfError, ValueError) as exc:
        # A signature that pyHanko cannot even evaluate (damaged CMS, byte range outside the file) is invalid.
        return VerificationResult(False, False, False, "", None, f"{field}: cannot be validated: {exc}")

    modifications_ok = status.docmdp_ok or status.modification_level is None
    intact = bool(status.intact and modifications_ok)
    signer = _common_name(status)
    summary = (
        f"{field}: signer {signer!r}, valid={status.valid}, intact={intact}, trusted={status.trusted}, "
        f"coverage={status.coverage.name}, modifications={getattr(status.modification_level, 'name', 'none')}"
    )
    if status.trust_problem_indic is not None:
        summary += f", trust problem {status.trust_problem_indic}"
    return VerificationResult(bool(status.valid), intact, bool(status.trusted), signer, status.signer_reported_dt, summary)


def _common_name(status: PdfSignatureStatus) -> str:
    subject = status.signing_cert.subject.native
    return subject.get("common_name") or subject.get("organization_name") or status.signing_cert.subject.human_friendly


def _combine(path: Path, results: list[VerificationResult]) -> VerificationResult:
    last = results[-1]
    valid = all(result.valid for result in results)
    intact = all(result.intact for result in results)
    trusted = all(result.trusted for result in results)
    verdict = "OK" if valid and intact and trusted else "FAILED"
    summary = f"{path}: {len(results)} signature(s) {verdict}; " + "; ".join(result.summary for result in results)
    log.debug("Verified %s: %s", path, summary)
    return VerificationResult(valid, intact, trusted, last.signer, last.signing_time, summary)
