"""RFC 3161 timestamps: in the signature (PAdES B-T), or later as a document timestamp.

When ``signing.tsa_url`` is set, each signature carries a timestamp token from
that time-stamping authority. When the authority cannot be reached the
document is signed without one (PAdES B-B) and the job is marked as waiting
for a timestamp. :func:`add_document_timestamp` later appends an RFC 3161
document timestamp (``/DocTimeStamp``) in a further incremental update, which
covers the signatures already in the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pyhanko.pdf_utils.misc import PdfError as PyHankoPdfError
from pyhanko.sign import signers
from pyhanko.sign.general import SigningError as PyHankoSigningError
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko.sign.timestamps.requests_client import RequestsHTTPTimeStamper

from sohoa.config import SigningConfig
from sohoa.errors import PdfError, TimestampUnavailableError
from sohoa.fsutil import write_atomic_with
from sohoa.i18n import N_

log = logging.getLogger(__name__)

DIGEST_ALGORITHM = "sha256"


def make_timestamper(config: SigningConfig) -> RequestsHTTPTimeStamper | None:
    """Return the configured authority's client, or None when ``signing.tsa_url`` is unset."""
    if not config.tsa_url:
        return None
    return RequestsHTTPTimeStamper(config.tsa_url, timeout=config.tsa_timeout_seconds)


def add_document_timestamp(src: Path, dst: Path, timestamper: RequestsHTTPTimeStamper) -> None:
    """Write ``src`` with an RFC 3161 document timestamp appended to ``dst``, atomically.

    The XMP packet, Info dictionary and PDF version stay as they are, so a
    PDF/A file stays PDF/A. Raises TimestampUnavailableError when the
    authority does not respond, PdfError when ``src`` cannot be read.
    """
    from sohoa.signing.pades import MetadataKeepingWriter

    try:
        with open(src, "rb") as source:
            writer = MetadataKeepingWriter(source, strict=False)
            stamper = signers.PdfTimeStamper(timestamper)

            def write_stamped(path: Path) -> None:
                with open(path, "w+b") as output:
                    stamper.timestamp_pdf(writer, DIGEST_ALGORITHM, output=output)

            write_atomic_with(dst, write_stamped, suffix=".pdf")
    except TimestampRequestError as exc:
        raise TimestampUnavailableError(
            N_("The time-stamping authority {url} did not respond: {detail}; the timestamp is added once it responds."),
            url=timestamper.url,
            detail=exc,
        ) from exc
    except OSError as exc:
        raise PdfError(N_("Cannot read {src} or write {dst}: {detail}"), src=src, dst=dst, detail=exc) from exc
    except (PyHankoPdfError, PyHankoSigningError) as exc:
        raise PdfError(N_("Cannot add a document timestamp to {src}: {detail}"), src=src, detail=exc) from exc
    log.info("Added a document timestamp from %s to %s, wrote %s", timestamper.url, src, dst)
