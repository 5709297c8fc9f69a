"""A small reference archive that implements ``docs/upload-protocol.md``.

For pilots and tests: it serves the four document endpoints and a health
check over plain HTTP, stores each document's file and JSON record in one
folder, and keeps them across restarts. It keeps a single copy of each
document, so it is not a replacement for the province's archive, which must
keep at least two independent copies.

Layout of the store folder::

    documents/<DocCode, percent-encoded>/document.pdf
    documents/<DocCode, percent-encoded>/record.json   (written last: the commit point)
    incoming/                                           (uploads in progress, emptied at start)
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import http.server
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path

from sohoa.config import read_secret
from sohoa.errors import ConfigError
from sohoa.fsutil import atomic_writer, fsync_dir, write_atomic
from sohoa.i18n import N_, _

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
MAX_METADATA_BYTES = 1024 * 1024
MAX_PART_HEADER_BYTES = 8 * 1024
CHUNK_BYTES = 64 * 1024
IDLE_TIMEOUT_SECONDS = 60.0
# How often the serving loop checks for stop(), which bounds how long stop() takes.
SHUTDOWN_POLL_SECONDS = 0.1

# DocCode is AGENCY_TYPE_SEQUENCE_VERSION, e.g. G06.01_CV_000021_V1 or
# G06.01_QĐ_000021_V2, at most 30 characters.
DOC_CODE_PATTERN = re.compile(r"^[0-9A-Za-z.\-]+_[^\W_]+_[0-9]{6}_V[1-9][0-9]*$")
DOC_CODE_MAX_CHARS = 30
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")

# Document fields of the national minimum metadata set: name -> (kind, maximum
# length in characters or digits, required). Position and FullName describe
# the person who signed the paper document. The national set defines no length
# for them, so the limit of 200 is this receiver's own.
DOCUMENT_FIELDS: dict[str, tuple[str, int, bool]] = {
    "DocCode": ("string", DOC_CODE_MAX_CHARS, True),
    "TypeName": ("string", 100, True),
    "CodeNumber": ("string", 11, True),
    "CodeNotation": ("string", 30, True),
    "IssuedDate": ("date", 10, True),
    "OrganName": ("string", 200, True),
    "Subject": ("string", 500, True),
    "Language": ("string", 100, False),
    "PageAmount": ("integer", 4, False),
    "Description": ("string", 500, False),
    "Keyword": ("string", 100, False),
    "ConfidenceLevel": ("string", 30, False),
    "Format": ("string", 50, False),
    "Position": ("string", 200, False),
    "FullName": ("string", 200, False),
}
# Fields the box fills from its configuration and clock, so they are never empty.
BOX_FIELDS: dict[str, tuple[str, int]] = {
    "site": ("string", 100),
    "device": ("string", 100),
    "operator": ("string", 200),
    "scanned_at": ("datetime", 40),
}
FIELD_CONFIDENCE = "FieldConfidence"
CONFIDENCE_VALUES = frozenset({"confirmed", "extracted", "unsure"})
EXTENSION_PREFIX = "x_"

RECEIPT_KEYS = ("DocCode", "sha256", "size", "stored_at", "archive_id")


class _RequestError(Exception):
    """An HTTP error response, raised inside a request handler and sent as JSON."""

    def __init__(self, status: int, error: str, message: str, headers: Mapping[str, str] | None = None, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})
        self.body = {"error": error, "message": message, **extra}


def _is_empty(value: object) -> bool:
    return value is None or value == ""


# ---------------------------------------------------------------------------
# Metadata validation


def validate_metadata(metadata: object) -> list[str]:
    """Return the problems of a metadata object under the upload contract; empty if valid."""
    if not isinstance(metadata, dict):
        return ["metadata must be a JSON object"]

    confidence = metadata.get(FIELD_CONFIDENCE, {})
    problems = _confidence_problems(confidence)
    if not isinstance(confidence, dict):
        confidence = {}

    for name, (kind, limit, required) in DOCUMENT_FIELDS.items():
        if name not in metadata:
            if required:
                problems.append(f"{name}: missing")
            continue
        value = metadata[name]
        if _is_empty(value):
            if name == "DocCode":
                problems.append("DocCode: must not be empty")
            elif required and confidence.get(name) != "unsure":
                problems.append(f'{name}: empty, which is allowed only with FieldConfidence "{name}": "unsure"')
            continue
        problems.extend(_value_problems(name, kind, limit, value))

    for name, (kind, limit) in BOX_FIELDS.items():
        value = metadata.get(name)
        if _is_empty(value):
            problems.append(f"{name}: missing or empty")
            continue
        problems.extend(_value_problems(name, kind, limit, value))

    known = set(DOCUMENT_FIELDS) | set(BOX_FIELDS) | {FIELD_CONFIDENCE}
    for name in sorted(metadata):
        if name not in known and not name.startswith(EXTENSION_PREFIX):
            problems.append(f"{name}: unknown field (extensions must start with {EXTENSION_PREFIX!r})")

    doc_code = metadata.get("DocCode")
    if isinstance(doc_code, str) and doc_code and not DOC_CODE_PATTERN.match(doc_code):
        problems.append(f"DocCode: {doc_code!r} does not have the form AGENCY_TYPE_SEQUENCE_VERSION, e.g. G06.01_CV_000021_V1")
    return problems


def _confidence_problems(confidence: object) -> list[str]:
    if not isinstance(confidence, dict):
        return [f"{FIELD_CONFIDENCE}: must be a JSON object"]
    problems = []
    for name, value in confidence.items():
        if name not in DOCUMENT_FIELDS or name == "DocCode":
            problems.append(f"{FIELD_CONFIDENCE}.{name}: not a document field that OCR fills")
        elif value not in CONFIDENCE_VALUES:
            problems.append(f"{FIELD_CONFIDENCE}.{name}: {value!r} is not one of {sorted(CONFIDENCE_VALUES)}")
    return problems


def _value_problems(name: str, kind: str, limit: int, value: object) -> list[str]:
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**limit:
            return [f"{name}: must be an integer from 0 to {10**limit - 1}"]
        return []
    if not isinstance(value, str):
        return [f"{name}: must be a string"]
    if len(value) > limit:
        return [f"{name}: {len(value)} characters, more than the {limit} allowed"]
    if kind == "date":
        return _date_problems(name, value)
    if kind == "datetime":
        return _datetime_problems(name, value)
    return []


def _date_problems(name: str, value: str) -> list[str]:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return [f"{name}: {value!r} is not a date in the form YYYY-MM-DD"]
    if len(value) != 10:
        return [f"{name}: {value!r} is not a date in the form YYYY-MM-DD"]
    return []


def _datetime_problems(name: str, value: str) -> list[str]:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return [f"{name}: {value!r} is not an ISO 8601 date and time"]
    if moment.tzinfo is None:
        return [f"{name}: {value!r} has no time zone offset"]
    return []


# ---------------------------------------------------------------------------
# Storage


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def receipt_of(record: Mapping[str, object]) -> dict:
    """Return the receipt fields of a stored record."""
    return {key: record[key] for key in RECEIPT_KEYS}


class _Conflict(Exception):
    def __init__(self, record: dict) -> None:
        super().__init__(record["DocCode"])
        self.record = record


class DocumentStore:
    """Documents and their JSON records in a folder; a record is written after its file."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.documents_dir = self.root / "documents"
        self.incoming_dir = self.root / "incoming"
        self._lock = threading.Lock()
        self._records: dict[str, dict] = {}
        self._load()

    def _load(self) -> None:
        self.documents_dir.mkdir(parents=True, exist_ok=True)
        self.incoming_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.incoming_dir.iterdir():
            log.info("Removing unfinished upload %s", leftover)
            leftover.unlink()

        for record_path in sorted(self.documents_dir.glob("*/record.json")):
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
                self._records[record["DocCode"]] = record
            except (OSError, ValueError, KeyError) as exc:
                log.error("Skipping unreadable record %s: %s", record_path, exc)
        log.info("Archive store %s contains %d documents", self.root, len(self._records))

    def _folder(self, doc_code: str) -> Path:
        return self.documents_dir / urllib.parse.quote(doc_code, safe="")

    def find(self, doc_code: str) -> dict | None:
        with self._lock:
            record = self._records.get(doc_code)
            return dict(record) if record is not None else None

    def records(self) -> list[dict]:
        with self._lock:
            return sorted((dict(record) for record in self._records.values()), key=lambda record: record["stored_at"])

    def file_path(self, doc_code: str) -> Path:
        return self._folder(doc_code) / "document.pdf"

    def incoming_path(self) -> Path:
        return self.incoming_dir / f"{uuid.uuid4().hex}.pdf"

    def commit(self, metadata: dict, filename: str, incoming: Path, sha256: str, size: int) -> tuple[dict, bool]:
        """Store an uploaded file and its record; return the record and whether it is new.

        An existing record with the same SHA-256 is returned unchanged and the
        upload is discarded. Raises _Conflict for an existing record with another SHA-256.
        """
        doc_code = metadata["DocCode"]
        with self._lock:
            existing = self._records.get(doc_code)
            if existing is not None:
                incoming.unlink(missing_ok=True)
                if existing["sha256"] != sha256:
                    raise _Conflict(dict(existing))
                return dict(existing), False

            now = _now()
            record = {
                "DocCode": doc_code,
                "sha256": sha256,
                "size": size,
                "stored_at": now,
                "updated_at": now,
                "archive_id": str(uuid.uuid4()),
                "filename": filename,
                "metadata": metadata,
            }
            self._place(doc_code, incoming, record)
            self._records[doc_code] = record
            return dict(record), True

    def _place(self, doc_code: str, incoming: Path, record: dict) -> None:
        folder = self._folder(doc_code)
        folder.mkdir(exist_ok=True)
        fsync_dir(self.documents_dir)
        os.replace(incoming, folder / "document.pdf")
        fsync_dir(folder)
        fsync_dir(self.incoming_dir)
        self._write_record(record)

    def _write_record(self, record: dict) -> None:
        data = json.dumps(record, ensure_ascii=False, indent=2, sort_keys=True).encode("utf-8")
        write_atomic(self._folder(record["DocCode"]) / "record.json", data)

    def update(self, doc_code: str, metadata: dict) -> dict | None:
        """Replace a record's metadata; return the new record, or None if DocCode is unknown."""
        with self._lock:
            existing = self._records.get(doc_code)
            if existing is None:
                return None
            record = {**existing, "metadata": metadata, "updated_at": _now()}
            self._write_record(record)
            self._records[doc_code] = record
            return dict(record)


# ---------------------------------------------------------------------------
# multipart/form-data


class _MultipartReader:
    """Streaming reader of a ``multipart/form-data`` body of known length (RFC 7578)."""

    def __init__(self, stream, length: int, boundary: bytes) -> None:
        self._stream = stream
        self._remaining = length
        # The leading CRLF lets the first boundary match the same delimiter as the others.
        self._buffer = b"\r\n"
        self._delimiter = b"\r\n--" + boundary
        # True right after a delimiter, false while inside the preamble or a part.
        self._after_delimiter = False

    def _fill(self) -> bool:
        if self._remaining <= 0:
            return False
        chunk = self._stream.read(min(CHUNK_BYTES, self._remaining))
        if not chunk:
            raise _RequestError(400, "body_truncated", "The request body ended before Content-Length bytes were read.")
        self._remaining -= len(chunk)
        self._buffer += chunk
        return True

    def next_part(self) -> Message | None:
        """Skip the rest of the current part and return the next part's headers, or None at the end."""
        if not self._after_delimiter:
            self._read_until_delimiter(lambda data: None)
        self._after_delimiter = False
        while len(self._buffer) < 2:
            if not self._fill():
                raise _RequestError(400, "multipart_malformed", "The multipart body ends inside a boundary line.")
        if self._buffer.startswith(b"--"):
            return None
        if not self._buffer.startswith(b"\r\n"):
            raise _RequestError(400, "multipart_malformed", "A multipart boundary is not followed by CRLF.")
        self._buffer = self._buffer[2:]
        return self._read_headers()

    def _read_headers(self) -> Message:
        while True:
            if self._buffer.startswith(b"\r\n"):
                self._buffer = self._buffer[2:]
                return HeaderParser().parsestr("")
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                raw, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
                return HeaderParser().parsestr(raw.decode("utf-8", errors="replace") + "\r\n\r\n")
            if len(self._buffer) > MAX_PART_HEADER_BYTES or not self._fill():
                raise _RequestError(400, "multipart_malformed", "A multipart part has no end of headers.")

    def read_part(self, limit: int, what: str) -> bytes:
        collected = bytearray()

        def collect(data: bytes) -> None:
            collected.extend(data)
            if len(collected) > limit:
                raise _RequestError(413, "part_too_large", f"The {what} part is larger than {limit} bytes.")

        self._read_until_delimiter(collect)
        return bytes(collected)

    def copy_part(self, write: Callable[[bytes], None]) -> None:
        self._read_until_delimiter(write)

    def _read_until_delimiter(self, sink: Callable[[bytes], None]) -> None:
        keep = len(self._delimiter) - 1
        while True:
            index = self._buffer.find(self._delimiter)
            if index >= 0:
                sink(self._buffer[:index])
                self._buffer = self._buffer[index + len(self._delimiter) :]
                self._after_delimiter = True
                return
            if len(self._buffer) > keep:
                sink(self._buffer[:-keep])
                self._buffer = self._buffer[-keep:]
            if not self._fill():
                raise _RequestError(400, "multipart_malformed", "The multipart body has no closing boundary.")

    def discard_rest(self) -> None:
        self._buffer = b""
        while self._remaining > 0:
            self._fill()
            self._buffer = b""


# ---------------------------------------------------------------------------
# HTTP


class _Server(http.server.ThreadingHTTPServer):
    """The HTTP server, with the receiver's state and its open connections."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], receiver: ArchiveReceiver, family: socket.AddressFamily) -> None:
        self.address_family = family
        self.receiver = receiver
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def close_connections(self) -> None:
        with self.connections_lock:
            for connection in list(self.connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sohoa-receiver"
    timeout = IDLE_TIMEOUT_SECONDS
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def log_error(self, format: str, *args: object) -> None:
        """Log the requests that http.server rejects itself, such as an unsupported method."""
        log.warning("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        self._doc_code = "-"
        self._body_read = False
        receiver = self.server.receiver
        try:
            route = urllib.parse.urlsplit(self.path).path
            if not route.startswith(API_PREFIX + "/"):
                raise _RequestError(404, "not_found", f"No endpoint at {route}.")
            receiver._handle(self, route[len(API_PREFIX) :])
        except _RequestError as exc:
            self.send_json(exc.status, exc.body, exc.headers)
        except (ConnectionError, TimeoutError) as exc:
            log.warning("%s %s DocCode=%s: connection lost: %s", self.command, self.path, self._doc_code, exc)
            self.close_connection = True
        except Exception:
            log.exception("%s %s DocCode=%s: internal error", self.command, self.path, self._doc_code)
            self.send_json(500, {"error": "internal_error", "message": "The archive failed to handle the request; try again later."})

    def content_length(self) -> int:
        value = self.headers.get("Content-Length")
        if value is None:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
            raise _RequestError(411, "length_required", "Send the body with a Content-Length header.")
        try:
            length = int(value)
        except ValueError:
            self.close_connection = True
            raise _RequestError(400, "bad_content_length", f"Content-Length {value!r} is not a number.") from None
        if length < 0:
            self.close_connection = True
            raise _RequestError(400, "bad_content_length", f"Content-Length {value!r} is negative.")
        return length

    def discard_body(self) -> None:
        """Read and drop an unread request body, so that the client can read the response."""
        if self._body_read:
            return
        self._body_read = True
        try:
            remaining = self.content_length()
        except _RequestError:
            return
        while remaining > 0:
            chunk = self.rfile.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                self.close_connection = True
                return
            remaining -= len(chunk)

    def read_json_body(self, limit: int) -> object:
        length = self.content_length()
        if length > limit:
            raise _RequestError(413, "too_large", f"The JSON body is {length} bytes, more than the {limit} allowed.")
        self._body_read = True
        data = self.rfile.read(length)
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _RequestError(400, "metadata_invalid", f"The body is not valid JSON: {exc}") from exc

    def send_json(self, status: int, body: object, headers: Mapping[str, str] | None = None) -> None:
        self.discard_body()
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.log_request_line(status)

    def send_file(self, path: Path, record: Mapping[str, object]) -> None:
        self.discard_body()
        size = path.stat().st_size
        filename = str(record.get("filename") or f"{record['DocCode']}.pdf")
        self.send_response(200)
        self.send_header("Content-Type", "application/pdf")
        self.send_header("Content-Length", str(size))
        self.send_header("Content-Disposition", f"attachment; filename*=UTF-8''{urllib.parse.quote(filename, safe='')}")
        self.send_header("Repr-Digest", f"sha-256=:{_base64_of_hex(str(record['sha256']))}:")
        self.end_headers()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
                self.wfile.write(chunk)
        self.log_request_line(200)

    def log_request_line(self, status: int) -> None:
        log.info("%s %s DocCode=%s -> %d", self.command, urllib.parse.urlsplit(self.path).path, self._doc_code, status)


def _base64_of_hex(digest: str) -> str:
    return base64.b64encode(bytes.fromhex(digest)).decode("ascii")


# ---------------------------------------------------------------------------
# The receiver


class ArchiveReceiver:
    """The reference archive: an HTTP server in front of a :class:`DocumentStore`.

    With ``token`` set, every endpoint except the health check requires
    ``Authorization: Bearer <token>``. ``max_bytes`` limits the whole body of an import.
    """

    def __init__(
        self,
        store_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.store = DocumentStore(Path(store_dir))
        self.host = host
        self.port = port
        self.max_bytes = max_bytes
        self._token = token.encode("utf-8") if token else None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._failures_lock = threading.Lock()
        self._failures: list[int] = []

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _bind(self) -> _Server:
        if self._server is None:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            self._server = _Server((self.host, self.port), self, family)
            self.port = self._server.server_address[1]
            log.info("Archive receiver listening on %s, store %s", self.url, self.store.root)
        return self._server

    def start(self) -> None:
        """Serve in a background thread; ``port`` and ``url`` are valid on return."""
        server = self._bind()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS}, name=f"receiver-{self.port}", daemon=True
        )
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` is called from another thread."""
        self._bind().serve_forever()

    def stop(self) -> None:
        """Stop serving, close open connections and release the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=IDLE_TIMEOUT_SECONDS)
            self._thread = None
        self._server = None
        log.info("Archive receiver on port %d stopped", self.port)

    def records(self) -> list[dict]:
        """Return copies of all stored records, oldest first."""
        return self.store.records()

    def fail_next(self, count: int, status: int = 503) -> None:
        """Test hook: make the next ``count`` imports fail with ``status`` without storing anything."""
        with self._failures_lock:
            self._failures.extend([status] * count)

    def _injected_failure(self) -> int | None:
        with self._failures_lock:
            return self._failures.pop(0) if self._failures else None

    # Routing ---------------------------------------------------------------

    def _handle(self, handler: _Handler, route: str) -> None:
        if route == "/health" and handler.command == "GET":
            handler.send_json(200, {"status": "ok", "max_bytes": self.max_bytes})
            return
        handler._doc_code = _doc_code_for_log(route)
        self._authorize(handler)

        if route == "/documents/import":
            self._require_method(handler, "POST")
            self._import(handler)
            return
        if route.startswith("/documents/download/"):
            self._require_method(handler, "GET")
            self._download(handler, self._doc_code_from(handler, route[len("/documents/download/") :]))
            return
        if route.startswith("/documents/"):
            doc_code = self._doc_code_from(handler, route[len("/documents/") :])
            if handler.command == "GET":
                self._read(handler, doc_code)
                return
            self._require_method(handler, "PUT")
            self._update(handler, doc_code)
            return
        raise _RequestError(404, "not_found", f"No endpoint at {API_PREFIX}{route}.")

    def _authorize(self, handler: _Handler) -> None:
        if self._token is None:
            return
        header = handler.headers.get("Authorization", "")
        scheme, _separator, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode("utf-8"), self._token):
            raise _RequestError(
                401, "unauthorized", "Missing or invalid bearer token.", headers={"WWW-Authenticate": 'Bearer realm="archive"'}
            )

    @staticmethod
    def _require_method(handler: _Handler, method: str) -> None:
        if handler.command != method:
            raise _RequestError(405, "method_not_allowed", f"Use {method} on this endpoint.")

    @staticmethod
    def _doc_code_from(handler: _Handler, segment: str) -> str:
        doc_code = urllib.parse.unquote(segment)
        handler._doc_code = doc_code
        if len(doc_code) > DOC_CODE_MAX_CHARS or not DOC_CODE_PATTERN.match(doc_code):
            raise _RequestError(404, "not_found", f"No document {doc_code!r}: it is not a valid DocCode.")
        return doc_code

    def _found(self, doc_code: str) -> dict:
        record = self.store.find(doc_code)
        if record is None:
            raise _RequestError(404, "not_found", f"No document {doc_code}.", DocCode=doc_code)
        return record

    # Endpoints -------------------------------------------------------------

    def _read(self, handler: _Handler, doc_code: str) -> None:
        handler.send_json(200, self._found(doc_code))

    def _download(self, handler: _Handler, doc_code: str) -> None:
        record = self._found(doc_code)
        handler.send_file(self.store.file_path(doc_code), record)

    def _update(self, handler: _Handler, doc_code: str) -> None:
        metadata = handler.read_json_body(MAX_METADATA_BYTES)
        if isinstance(metadata, dict):
            metadata.setdefault("DocCode", doc_code)
            if metadata["DocCode"] != doc_code:
                raise _RequestError(400, "metadata_invalid", f"The body contains DocCode {metadata['DocCode']!r}, not {doc_code!r}.")
        _check_metadata(metadata)
        record = self.store.update(doc_code, metadata)
        if record is None:
            raise _RequestError(404, "not_found", f"No document {doc_code}.", DocCode=doc_code)
        handler.send_json(200, record)

    def _import(self, handler: _Handler) -> None:
        failure = self._injected_failure()
        if failure is not None:
            raise _RequestError(failure, "injected_failure", f"Failure injected by the test hook (HTTP {failure}).")

        length = handler.content_length()
        if length > self.max_bytes:
            raise _RequestError(413, "too_large", f"The body is {length} bytes, more than the {self.max_bytes} allowed.")
        boundary = _boundary_of(handler.headers.get("Content-Type", ""))

        handler._body_read = True
        reader = _MultipartReader(handler.rfile, length, boundary)
        try:
            upload = _read_import(reader, self.store, handler)
        finally:
            reader.discard_rest()

        try:
            record, created = self.store.commit(upload.metadata, upload.filename, upload.path, upload.sha256, upload.size)
        except _Conflict as conflict:
            raise _RequestError(
                409,
                "conflict",
                f"{conflict.record['DocCode']} is already stored with SHA-256 {conflict.record['sha256']};"
                " a changed file needs a new DocCode version.",
                **receipt_of(conflict.record),
            ) from None
        handler.send_json(201 if created else 200, receipt_of(record))


def _doc_code_for_log(route: str) -> str:
    """Return the DocCode named in a document path, unchecked, or "-" for the import path."""
    segment = route.rpartition("/")[2]
    if not route.startswith("/documents/") or route == "/documents/import" or not segment:
        return "-"
    return urllib.parse.unquote(segment)[:DOC_CODE_MAX_CHARS]


def _check_metadata(metadata: object) -> None:
    problems = validate_metadata(metadata)
    if problems:
        raise _RequestError(400, "metadata_invalid", "Invalid metadata: " + "; ".join(problems), problems=problems)


def _boundary_of(content_type: str) -> bytes:
    message = Message()
    message["Content-Type"] = content_type
    boundary = message.get_param("boundary")
    if message.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not 1 <= len(boundary) <= 70:
        raise _RequestError(400, "content_type_invalid", "Send the import as multipart/form-data with a boundary.")
    return boundary.encode("ascii", errors="replace")


@dataclass(frozen=True)
class _Upload:
    metadata: dict
    filename: str
    path: Path
    sha256: str
    size: int


def _read_import(reader: _MultipartReader, store: DocumentStore, handler: _Handler) -> _Upload:
    """Read the metadata and sha256 parts, then stream the file part into the incoming folder."""
    metadata: dict | None = None
    declared: str | None = None
    while True:
        headers = reader.next_part()
        if headers is None:
            raise _RequestError(400, "file_missing", "The import has no file part.")
        name = headers.get_param("name", header="content-disposition")
        if name == "metadata":
            metadata = _parse_metadata(reader.read_part(MAX_METADATA_BYTES, "metadata"))
            handler._doc_code = str(metadata.get("DocCode") or "-")
        elif name == "sha256":
            declared = reader.read_part(200, "sha256").decode("ascii", errors="replace").strip().lower()
        elif name == "file":
            break
        else:
            raise _RequestError(400, "part_unknown", f"Unknown multipart part {name!r}; send metadata, sha256 and file.")

    if metadata is None:
        raise _RequestError(400, "metadata_missing", "The metadata part must come before the file part.")
    if declared is None or not SHA256_PATTERN.match(declared):
        raise _RequestError(400, "sha256_invalid", "A sha256 part of 64 hexadecimal digits must come before the file part.")
    filename = headers.get_filename() or f"{metadata['DocCode']}.pdf"
    path, sha256, size, head = _receive_file(reader, store)
    try:
        _check_received(reader, declared, sha256, head)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return _Upload(metadata, Path(filename).name, path, sha256, size)


def _check_received(reader: _MultipartReader, declared: str, sha256: str, head: bytes) -> None:
    if reader.next_part() is not None:
        raise _RequestError(400, "multipart_malformed", "The file part must be the last part.")
    if sha256 != declared:
        raise _RequestError(
            422, "sha256_mismatch", f"The file's SHA-256 is {sha256}, not the declared {declared}.", sha256=sha256, declared=declared
        )
    if not head.startswith(b"%PDF-"):
        raise _RequestError(400, "file_not_pdf", "The file part is not a PDF (it does not start with %PDF-).")


def _parse_metadata(data: bytes) -> dict:
    try:
        metadata = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _RequestError(400, "metadata_invalid", f"The metadata part is not valid UTF-8 JSON: {exc}") from exc
    _check_metadata(metadata)
    return metadata


def _receive_file(reader: _MultipartReader, store: DocumentStore) -> tuple[Path, str, int, bytes]:
    """Stream the file part durably into the incoming folder; return path, SHA-256, size and first bytes."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    path = store.incoming_path()
    with atomic_writer(path) as handle:

        def write(data: bytes) -> None:
            nonlocal size, head
            if len(head) < 8:
                head += data[: 8 - len(head)]
            digest.update(data)
            size += len(data)
            handle.write(data)

        reader.copy_part(write)
    return path, digest.hexdigest(), size, head


# ---------------------------------------------------------------------------
# Command line


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``receiver`` subcommand."""
    parser = subparsers.add_parser(
        "receiver",
        help=_("run a small reference archive for pilots and tests"),
        description=_("Run a small reference archive that implements the upload protocol, storing documents in a folder."),
    )
    parser.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT", help=_("address and port to listen on (default 127.0.0.1:8080)"))
    parser.add_argument("--store", required=True, type=Path, metavar="DIR", help=_("folder that stores the documents and their records"))
    parser.add_argument("--token-file", type=Path, metavar="FILE", help=_("file containing the bearer token that clients must send"))
    parser.add_argument(
        "--max-mb", type=int, default=DEFAULT_MAX_BYTES // (1024 * 1024), metavar="MB", help=_("maximum size of an import body, in MiB (default 200)")
    )
    parser.add_argument("--allow-remote", action="store_true", help=_("allow listening on an address other than loopback"))
    parser.set_defaults(func=run)


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:PORT`` for IPv6) into host and port."""
    host, separator, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not separator or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(N_("Invalid listen address {listen}; use HOST:PORT, for example 127.0.0.1:8080."), listen=listen)
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; return the exit status."""
    host, port = parse_listen(args.listen)
    if not is_loopback(host) and not args.allow_remote:
        raise ConfigError(
            N_("The receiver is a pilot tool and listens only on loopback; add --allow-remote to listen on {host}."), host=host
        )
    if args.max_mb < 1:
        raise ConfigError(N_("Invalid --max-mb {value}; give a size of at least 1 MiB."), value=args.max_mb)
    token = read_secret(args.token_file, None, "archive token")
    receiver = ArchiveReceiver(args.store, host=host, port=port, token=token, max_bytes=args.max_mb * 1024 * 1024)

    stop_requested = threading.Event()
    previous = {number: signal.signal(number, lambda *_args: stop_requested.set()) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        receiver.start()
        print(_("Archive receiver listening on {url}, storing documents in {store}").format(url=receiver.url, store=args.store), flush=True)
        stop_requested.wait()
    finally:
        receiver.stop()
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0
