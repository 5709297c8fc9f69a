"""Client of the central archive: send one signed PDF with its metadata.

The contract is written in ``docs/upload-protocol.md``. In short: one
``POST /api/v1/documents/import`` per document, ``multipart/form-data`` with a
``metadata`` JSON part, a ``sha256`` part and the ``file`` part last, a bearer
token, and idempotency by DocCode. :meth:`ArchiveClient.upload` makes one
attempt. It raises :class:`ArchiveUnreachableError` for failures worth a retry,
:class:`UploadSettingsError` when the box's token or address is wrong, and
:class:`UploadConflictError` or :class:`UploadRejectedError` when the archive
rejects the document. The caller owns the retry loop and paces it with :class:`Backoff`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import secrets
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from sohoa.config import UploadConfig, read_secret
from sohoa.errors import ArchiveUnreachableError, UploadConflictError, UploadError, UploadRejectedError, UploadSettingsError
from sohoa.fsutil import sha256_file
from sohoa.i18n import N_

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
IMPORT_PATH = f"{API_PREFIX}/documents/import"
HEALTH_PATH = f"{API_PREFIX}/health"
CHUNK_BYTES = 64 * 1024

# Statuses after which the same request may succeed later: a timeout on the
# archive's side, rate limiting, and every server error.
RETRYABLE_STATUSES = frozenset({408, 429})

# Maximum length of the archive's error text quoted in our messages.
MAX_QUOTED_CHARS = 300


@dataclass(frozen=True)
class Receipt:
    """The archive's proof that it stores a document, as returned by an import."""

    doc_code: str
    sha256: str
    size: int
    stored_at: str
    archive_id: str
    raw: dict


class Backoff:
    """Exponential backoff with full jitter and a cap, for retrying uploads.

    The n-th delay (counting from 0) is drawn uniformly from
    ``[0, min(maximum, minimum * 2**n)]``, so that many boxes coming back after
    an archive outage do not retry in step.
    """

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        if minimum <= 0 or maximum < minimum:
            raise ValueError(f"Backoff needs 0 < minimum <= maximum, got minimum={minimum}, maximum={maximum}")
        self._minimum = minimum
        self._maximum = maximum
        self._rng = rng or random.Random()
        self._ceiling = minimum

    def next_delay(self) -> float:
        """Return the next delay in seconds and double the ceiling, up to the cap."""
        delay = self._rng.uniform(0.0, self._ceiling)
        self._ceiling = min(self._maximum, self._ceiling * 2)
        return delay

    def reset(self) -> None:
        """Start again from ``minimum``, after a success."""
        self._ceiling = self._minimum


class _BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer``; requests drops it on a redirect to another host."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request


class _MultipartBody:
    """A ``multipart/form-data`` body that streams its last part from a file.

    requests sends an iterable with a length as a fixed ``Content-Length``
    body, reading the file in chunks instead of loading it into memory.
    """

    def __init__(self, fields: list[tuple[str, str, bytes]], file_name: str, path: Path, size: int) -> None:
        self.boundary = f"sohoa-{secrets.token_hex(16)}"
        self._path = path
        self._size = size

        head = bytearray()
        for name, content_type, value in fields:
            head += self._part_header(f'name="{name}"', content_type)
            head += value + b"\r\n"
        head += self._part_header(f'name="file"; {_filename_parameter(file_name)}', "application/pdf")
        self._head = bytes(head)
        self._tail = f"\r\n--{self.boundary}--\r\n".encode("ascii")

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _part_header(self, disposition: str, content_type: str) -> bytes:
        return (
            f"--{self.boundary}\r\n"
            f"Content-Disposition: form-data; {disposition}\r\n"
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode("utf-8")

    def __len__(self) -> int:
        return len(self._head) + self._size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        sent = 0
        with open(self._path, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
                sent += len(chunk)
                yield chunk
        if sent != self._size:
            raise UploadError(
                N_("The file {path} changed size while it was being uploaded ({expected} bytes, then {actual}); upload it again."),
                path=self._path,
                expected=self._size,
                actual=sent,
            )
        yield self._tail


def _filename_parameter(file_name: str) -> str:
    """Return the Content-Disposition file name parameter, RFC 2231-encoded when not ASCII."""
    if file_name.isascii() and '"' not in file_name and "\\" not in file_name:
        return f'filename="{file_name}"'
    return f"filename*=UTF-8''{urllib.parse.quote(file_name, safe='')}"


def _json_default(value: object) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON serializable")


class ArchiveClient:
    """Uploads signed PDFs to the archive named by ``upload.url``.

    TLS certificates are always verified, against ``upload.ca_file`` when it is
    set and against the system's CA store otherwise. The client keeps a pool of
    connections in one requests session, so use one client per thread.
    """

    def __init__(self, config: UploadConfig) -> None:
        self._base_url = config.url.rstrip("/")
        self._timeout = config.timeout_seconds
        self._session = requests.Session()
        self._session.verify = str(config.ca_file) if config.ca_file is not None else True
        token = read_secret(config.token_file, None, "archive token")
        if token:
            self._session.auth = _BearerAuth(token)

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def probe(self) -> bool:
        """Return True if the archive sends any HTTP response below 500 to a health request.

        A 404 counts as a response, because an archive without the health
        endpoint is still up. A 401 or 403 also counts, with a warning, because
        the token problem shows again on the first upload.
        """
        url = self._base_url + HEALTH_PATH
        try:
            response = self._session.get(url, timeout=self._timeout, allow_redirects=False)
        except requests.RequestException as exc:
            log.warning("Archive probe of %s failed: %s", url, exc)
            return False

        with response:
            if response.status_code in (401, 403):
                log.warning("Archive at %s rejected the token (HTTP %d); check upload.token_file", url, response.status_code)
            if response.status_code >= 500:
                log.warning("Archive probe of %s returned HTTP %d", url, response.status_code)
                return False
        return True

    def upload(self, doc_code: str, pdf: Path, metadata: Mapping[str, object]) -> Receipt:
        """Send ``pdf`` under ``doc_code`` once and return the archive's receipt.

        Raises:
            ArchiveUnreachableError: no connection, a timeout, or HTTP 408, 429 or 5xx; retry later.
            UploadConflictError: the archive stores this DocCode with another SHA-256.
            UploadSettingsError: the archive rejected the token (HTTP 401, 403) or redirected
                the upload, or upload.url is invalid; every document waits until the settings change.
            UploadRejectedError: any other refusal of this document, or a receipt that does not match the file.
            UploadError: the local file cannot be read.
        """
        pdf = Path(pdf)
        document = self._metadata_with_code(doc_code, metadata)
        sha256, size = self._measure(pdf)
        body = _MultipartBody(
            [
                ("metadata", "application/json", json.dumps(document, ensure_ascii=False, default=_json_default).encode("utf-8")),
                ("sha256", "text/plain", sha256.encode("ascii")),
            ],
            pdf.name,
            pdf,
            size,
        )

        response = self._post(doc_code, body)
        with response:
            return self._read_receipt(response, doc_code, sha256, size)

    @staticmethod
    def _metadata_with_code(doc_code: str, metadata: Mapping[str, object]) -> dict:
        declared = metadata.get("DocCode", doc_code)
        if declared != doc_code:
            raise UploadRejectedError(
                N_("The metadata names DocCode {declared} but the upload is for {doc_code}; fix the metadata."),
                declared=declared,
                doc_code=doc_code,
            )
        return {**metadata, "DocCode": doc_code}

    @staticmethod
    def _measure(pdf: Path) -> tuple[str, int]:
        try:
            return sha256_file(pdf), pdf.stat().st_size
        except OSError as exc:
            raise UploadError(N_("Cannot read the PDF {path} to upload it: {detail}"), path=pdf, detail=exc.strerror) from exc

    def _post(self, doc_code: str, body: _MultipartBody) -> requests.Response:
        url = self._base_url + IMPORT_PATH
        try:
            return self._session.post(
                url,
                data=body,
                headers={"Content-Type": body.content_type, "Accept": "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            raise ArchiveUnreachableError(
                N_("TLS connection to the archive at {url} failed for {doc_code}: {detail}. Check upload.ca_file and the archive's certificate."),
                url=url,
                doc_code=doc_code,
                detail=exc,
            ) from exc
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise ArchiveUnreachableError(
                N_("Cannot reach the archive at {url} to upload {doc_code}: {detail}. The upload will be retried."),
                url=url,
                doc_code=doc_code,
                detail=exc,
            ) from exc
        except requests.RequestException as exc:
            # An invalid URL or too many redirects: upload.url is wrong, not the document.
            raise UploadSettingsError(
                N_("The upload of {doc_code} to {url} failed: {detail}"), url=url, doc_code=doc_code, detail=exc
            ) from exc

    def _read_receipt(self, response: requests.Response, doc_code: str, sha256: str, size: int) -> Receipt:
        status = response.status_code
        if status in (200, 201):
            receipt = self._parse_receipt(response, doc_code)
            self._check_receipt(receipt, sha256, size)
            log.info("Archive stored %s (HTTP %d, archive id %s)", doc_code, status, receipt.archive_id)
            return receipt

        detail = _archive_message(response)
        if status == 409:
            raise UploadConflictError(
                N_("The archive already stores {doc_code} with different content ({detail}). Issue a new version of the DocCode for the new file."),
                doc_code=doc_code,
                detail=detail,
            )
        if status in RETRYABLE_STATUSES or status >= 500:
            raise ArchiveUnreachableError(
                N_("The archive could not take {doc_code} now (HTTP {status}: {detail}). The upload will be retried."),
                doc_code=doc_code,
                status=status,
                detail=detail,
            )
        if status in (401, 403):
            raise UploadSettingsError(
                N_("The archive rejected the token for {doc_code} (HTTP {status}: {detail}). Check upload.token_file."),
                doc_code=doc_code,
                status=status,
                detail=detail,
            )
        if 300 <= status < 400:
            raise UploadSettingsError(
                N_("The archive redirected the upload of {doc_code} to {location}. Set upload.url to the archive's final address."),
                doc_code=doc_code,
                location=response.headers.get("Location", "an unknown address"),
            )
        raise UploadRejectedError(
            N_("The archive rejected {doc_code} (HTTP {status}: {detail})."), doc_code=doc_code, status=status, detail=detail
        )

    @staticmethod
    def _parse_receipt(response: requests.Response, doc_code: str) -> Receipt:
        try:
            raw = response.json()
            receipt = Receipt(
                doc_code=str(raw["DocCode"]),
                sha256=str(raw["sha256"]).lower(),
                size=int(raw["size"]),
                stored_at=str(raw["stored_at"]),
                archive_id=str(raw["archive_id"]),
                raw=raw,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UploadRejectedError(
                N_("The archive accepted {doc_code} but returned an invalid receipt: {detail}. Check the document on the archive."),
                doc_code=doc_code,
                detail=exc,
            ) from exc

        if receipt.doc_code != doc_code:
            raise UploadRejectedError(
                N_("The archive returned a receipt for {other} instead of {doc_code}. Check the document on the archive."),
                other=receipt.doc_code,
                doc_code=doc_code,
            )
        return receipt

    @staticmethod
    def _check_receipt(receipt: Receipt, sha256: str, size: int) -> None:
        if receipt.sha256 != sha256 or receipt.size != size:
            raise UploadRejectedError(
                N_(
                    "The archive's receipt for {doc_code} names SHA-256 {stored} and {stored_size} bytes,"
                    " but the local file has SHA-256 {local} and {local_size} bytes. Check the document on the archive."
                ),
                doc_code=receipt.doc_code,
                stored=receipt.sha256,
                stored_size=receipt.size,
                local=sha256,
                local_size=size,
            )


def _archive_message(response: requests.Response) -> str:
    """Return the archive's explanation of an error response, shortened for a log line."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
    else:
        text = str(body.get("message") or body) if isinstance(body, dict) else str(body)
    if not text:
        text = response.reason or "no explanation"
    return text[:MAX_QUOTED_CHARS]
