"""RFC 3161 timestamps: in the signature (PAdES B-T), or later as a document timestamp.

When ``signing.tsa_url`` is set, each signature carries a timestamp token from
that time-stamping authority. When the authority cannot be reached the
document is signed without one (PAdES B-B) and the job is marked as waiting
for a timestamp. :func:`add_document_timestamp` later appends an RFC 3161
document timestamp (``/DocTimeStamp``) in a further incremental update, which
covers the signatures already in the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
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


@dataclass(frozen=True)
class TsaReply:
    """The reply to one RFC 3161 request: the authority's time and its offset from the box clock."""

    url: str
    gen_time: datetime  # genTime of the token, UTC
    offset_seconds: float  # gen_time minus the box clock at the middle of the request, positive when the TSA is ahead
    round_trip_seconds: float


def query_tsa_time(timestamper: RequestsHTTPTimeStamper) -> TsaReply:
    """Request a timestamp token for a throwaway digest and return the authority's time.

    The request is a real RFC 3161 request with a nonce, checked by pyHanko
    (status granted, nonce echoed). Raises TimestampUnavailableError when the
    authority does not respond or its reply is not a usable token.
    """
    digest = hashlib.sha256(f"sohoa time-stamping probe {time.time_ns()}".encode()).digest()
    sent_at = time.time()
    started = time.monotonic()
    try:
        token = asyncio.run(timestamper.async_timestamp(digest, DIGEST_ALGORITHM))
        tst_info = token["content"]["encap_content_info"]["content"].parsed
        gen_time = tst_info["gen_time"].native
    except (TimestampRequestError, OSError, ValueError, KeyError) as exc:
        # OSError covers connection errors from requests. ValueError and KeyError mean a reply that does not parse.
        raise TimestampUnavailableError(
            N_("The time-stamping authority {url} did not return a timestamp: {detail}"), url=timestamper.url, detail=exc
        ) from exc
    round_trip = time.monotonic() - started
    box_time = sent_at + round_trip / 2
    reply = TsaReply(
        url=timestamper.url,
        gen_time=gen_time.astimezone(timezone.utc),
        offset_seconds=gen_time.timestamp() - box_time,
        round_trip_seconds=round_trip,
    )
    log.info("Time-stamping authority %s: genTime %s, offset %+.1f s", reply.url, reply.gen_time, reply.offset_seconds)
    return reply


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
