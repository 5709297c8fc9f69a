"""The journal: every job and page, and the state each has reached, in SQLite.

The journal and the spool folder together are the box's memory across power
cuts. A file is written durably (see :mod:`sohoa.fsutil`) before the row that
points to it is committed, so a committed state always has its files.

Job states, in order::

    scanning -> captured -> recognized -> built -> signed -> uploaded

plus ``interrupted`` (the scan stopped on a jam, an open cover or an I/O error;
the pages are kept and the next button press continues the same document),
``collecting`` (a flatbed document still open: each press adds one page, a
long press moves it to ``captured``), ``cancelled`` (staff cancelled it with a
long press; its pages stay in the spool folder and it is never signed or
uploaded) and ``failed`` (a step failed in a way that needs a person;
``error_code`` says why).
A job waiting on something outside the box (a missing token, an unreachable
archive) keeps its state and carries the reason in ``error_code``.

With ``manifests_dir`` set, every change of a job also rewrites
``<manifests_dir>/<job id>/manifest.json`` atomically: a copy of the job's row
and pages from which :mod:`sohoa.recovery` rebuilds a corrupt journal.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlite_utils

from sohoa.errors import JournalError, SohoaError
from sohoa.fsutil import write_atomic
from sohoa.i18n import N_
from sohoa.hotfolder.ledger import create_import_schema
from sohoa.search import create_search_schema

log = logging.getLogger(__name__)

JOB_STATES = ("scanning", "interrupted", "collecting", "captured", "recognized", "built", "signed", "uploaded", "failed", "cancelled")
# States that still need work on the box before upload.
PENDING_STATES = ("captured", "recognized", "built")
MANIFEST_NAME = "manifest.json"


def error_columns(error: BaseException | None, code: str | None = None) -> dict[str, str | None]:
    """Return the error_code, error_message and error_detail columns that record ``error``, or clear them for None.

    ``code`` is used for an error without its own code. The message stays in
    English for support. error_detail keeps a SohoaError's template, so that
    the message can be shown in the user's language.
    """
    if error is None:
        return {"error_code": None, "error_message": None, "error_detail": None}
    return {
        "error_code": getattr(error, "code", code),
        "error_message": str(error),
        "error_detail": error.detail() if isinstance(error, SohoaError) else None,
    }


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_job_id() -> str:
    """Return a new job id: the UTC creation time, then 6 random hex digits."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class Job:
    id: str
    created_at: str
    updated_at: str
    state: str
    doc_code: str | None
    page_count: int
    error_code: str | None
    error_message: str | None
    pdf_path: str | None
    signed_path: str | None
    sha256: str | None
    fields: dict
    receipt: dict | None
    upload_attempts: int
    # The earlier job this one probably duplicates, and why (see sohoa.duplicates).
    duplicate_of: str | None = None
    duplicate_reason: str | None = None
    # When the retention purge removed the job's spool folder (see sohoa.retention).
    purged_at: str | None = None
    # The capture profile the job was scanned with, and what started it (button, scanner_button, feeder, mqtt, signal, hot_folder).
    profile: str | None = None
    origin: str | None = None
    # The settings of the separator or cover sheet that opened the job, its sheet
    # files and the page-count check (see sohoa.splitting); None without a sheet.
    declared: dict | None = None
    # The batch folder the scanner wrote this job's pages into before they were
    # moved into the job's own folder; None when the job owns that folder.
    source_batch: str | None = None
    # The URL of the time-stamping authority that did not respond when the job
    # was signed. The signed PDF is then PAdES B-B and still needs a document timestamp.
    timestamp_pending: str | None = None
    # How many times the archive rejected this document (see upload.max_rejections).
    upload_rejections: int = 0
    # The error's message template and parameters as JSON (SohoaError.detail), so
    # that `sohoa status` shows error_message in the user's language.
    error_detail: str | None = None

    @classmethod
    def from_row(cls, row: dict) -> Job:
        return cls(
            id=row["id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            state=row["state"],
            doc_code=row["doc_code"],
            page_count=row["page_count"],
            error_code=row["error_code"],
            error_message=row["error_message"],
            pdf_path=row["pdf_path"],
            signed_path=row["signed_path"],
            sha256=row["sha256"],
            fields=json.loads(row["fields"] or "{}"),
            receipt=json.loads(row["receipt"]) if row["receipt"] else None,
            upload_attempts=row["upload_attempts"],
            duplicate_of=row.get("duplicate_of"),
            duplicate_reason=row.get("duplicate_reason"),
            purged_at=row.get("purged_at"),
            profile=row.get("profile"),
            origin=row.get("origin"),
            declared=json.loads(row["declared"]) if row.get("declared") else None,
            source_batch=row.get("source_batch"),
            timestamp_pending=row.get("timestamp_pending"),
            upload_rejections=row.get("upload_rejections") or 0,
            error_detail=row.get("error_detail"),
        )


@dataclass(frozen=True)
class Page:
    job_id: str
    seq: int
    path: str
    sha256: str
    width: int
    height: int
    dpi: int
    state: str
    ocr_path: str | None
    # The cleaned image OCR reads and the PDF embeds (see sohoa.cleanup); None until
    # the page is cleaned, and equal to ``path`` when clean-up changed nothing.
    clean_path: str | None = None
    # A blank page left out of OCR, the PDF and PageAmount; its scan stays on disk.
    dropped: bool = False
    drop_reason: str | None = None

    @property
    def image_path(self) -> str:
        """Return the image that OCR reads and the PDF embeds: the cleaned one once it exists."""
        return self.clean_path or self.path


class Journal:
    """SQLite journal in WAL mode with ``synchronous=FULL``, shared by the daemon's threads."""

    def __init__(self, path: Path, *, manifests_dir: Path | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.manifests_dir = Path(manifests_dir) if manifests_dir is not None else None
        self._lock = threading.RLock()
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self.db = sqlite_utils.Database(conn)
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._create_schema()
        except sqlite3.DatabaseError as exc:
            raise JournalError(N_("Cannot open the journal {path}: {detail}"), path=self.path, detail=exc) from exc

    def _create_schema(self) -> None:
        with self._lock:
            if "jobs" not in self.db.table_names():
                self.db["jobs"].create(
                    {
                        "id": str,
                        "created_at": str,
                        "updated_at": str,
                        "state": str,
                        "doc_code": str,
                        "page_count": int,
                        "error_code": str,
                        "error_message": str,
                        "pdf_path": str,
                        "signed_path": str,
                        "sha256": str,
                        "fields": str,
                        "receipt": str,
                        "upload_attempts": int,
                        "next_upload_at": str,
                    },
                    pk="id",
                    not_null={"created_at", "updated_at", "state", "page_count", "upload_attempts"},
                    defaults={"page_count": 0, "upload_attempts": 0, "fields": "{}"},
                )
                self.db["jobs"].create_index(["state"])
                self.db["jobs"].create_index(["doc_code"], unique=True)
            if "pages" not in self.db.table_names():
                self.db["pages"].create(
                    {
                        "job_id": str,
                        "seq": int,
                        "path": str,
                        "sha256": str,
                        "width": int,
                        "height": int,
                        "dpi": int,
                        "state": str,
                        "ocr_path": str,
                        "created_at": str,
                    },
                    pk=("job_id", "seq"),
                    foreign_keys=[("job_id", "jobs", "id")],
                )
            if "counters" not in self.db.table_names():
                self.db["counters"].create({"name": str, "value": int}, pk="name")
            # Journals written by earlier versions lack these columns.
            for column in (
                "duplicate_of",
                "duplicate_reason",
                "purged_at",
                "profile",
                "origin",
                "declared",
                "source_batch",
                "timestamp_pending",
                "error_detail",
            ):
                if column not in self.db["jobs"].columns_dict:
                    self.db["jobs"].add_column(column, str)
            if "upload_rejections" not in self.db["jobs"].columns_dict:
                self.db["jobs"].add_column("upload_rejections", int, not_null_default=0)
            # Journals written before page clean-up lack these columns.
            for column, kind in (("clean_path", str), ("dropped", int), ("drop_reason", str)):
                if column not in self.db["pages"].columns_dict:
                    self.db["pages"].add_column(column, kind, not_null_default=0 if kind is int else None)
            create_search_schema(self.db)
            create_import_schema(self.db)

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        with self._lock:
            try:
                with self.db.atomic():
                    yield self.db
            except sqlite3.DatabaseError as exc:
                raise JournalError(N_("Journal write failed: {detail}"), detail=exc) from exc

    def close(self) -> None:
        with self._lock:
            self.db.close()

    # Jobs

    def create_job(
        self,
        *,
        profile: str | None = None,
        origin: str | None = None,
        declared: dict | None = None,
        source_batch: Path | None = None,
    ) -> Job:
        job_id = new_job_id()
        now = utc_now()
        row = {"id": job_id, "created_at": now, "updated_at": now, "state": "scanning", "profile": profile, "origin": origin}
        if declared is not None:
            row["declared"] = json.dumps(declared, ensure_ascii=False)
        if source_batch is not None:
            row["source_batch"] = str(source_batch)
        with self.transaction() as db:
            db["jobs"].insert(row)
        log.info("Job %s created", job_id)
        self.write_manifest(job_id)
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> Job:
        with self._lock:
            rows = list(self.db.query("select * from jobs where id = ?", [job_id]))
        if not rows:
            raise JournalError(N_("Job {job_id} is not in the journal."), job_id=job_id)
        return Job.from_row(rows[0])

    def update_job(self, job_id: str, **changes: object) -> Job:
        for key in ("fields", "receipt", "declared"):
            if key in changes and not isinstance(changes[key], str) and changes[key] is not None:
                changes[key] = json.dumps(changes[key], ensure_ascii=False)
        if "state" in changes and changes["state"] not in JOB_STATES:
            raise ValueError(f"unknown job state {changes['state']!r}")
        changes["updated_at"] = utc_now()
        with self.transaction() as db:
            db["jobs"].update(job_id, changes)
        self.write_manifest(job_id)
        return self.get_job(job_id)

    def set_state(self, job_id: str, state: str, **changes: object) -> Job:
        job = self.update_job(job_id, state=state, **changes)
        log.info("Job %s is %s", job_id, state)
        return job

    def jobs_in(self, *states: str) -> list[Job]:
        """Return the jobs in ``states`` in creation order; rowid orders jobs created within one second."""
        marks = ",".join("?" for _ in states)
        with self._lock:
            rows = list(self.db.query(f"select * from jobs where state in ({marks}) order by created_at, rowid", list(states)))
        return [Job.from_row(row) for row in rows]

    def latest_interrupted(self) -> Job | None:
        jobs = self.jobs_in("interrupted")
        return jobs[-1] if jobs else None

    def open_flatbed_job(self) -> Job | None:
        """Return the flatbed document still collecting pages, or None."""
        jobs = self.jobs_in("collecting")
        return jobs[-1] if jobs else None

    def state_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self.db.query("select state, count(*) as n from jobs group by state")
            counts = {state: 0 for state in JOB_STATES}
            counts.update({row["state"]: row["n"] for row in rows})
        return counts

    def totals(self) -> dict[str, int]:
        with self._lock:
            documents = next(self.db.query("select count(*) as n from jobs where state = 'uploaded'"))["n"]
            pages = next(
                self.db.query("select count(*) as n from pages join jobs on jobs.id = pages.job_id where jobs.state = 'uploaded'")
            )["n"]
        return {"documents_uploaded": documents, "pages_uploaded": pages}

    def progress_marker(self) -> tuple:
        """Return a value that changes whenever a page is captured or recognized or a job changes."""
        with self._lock:
            row = next(
                self.db.query(
                    "select (select count(*) from pages) as pages,"
                    " (select count(*) from pages where state = 'recognized') as recognized,"
                    " (select max(updated_at) from jobs) as updated,"
                    " (select count(*) from jobs) as jobs"
                )
            )
        return (row["pages"], row["recognized"], row["updated"], row["jobs"])

    def next_sequence(self, name: str) -> int:
        """Return the next value of the named counter (1, 2, ...), durably."""
        with self.transaction() as db:
            rows = list(db.query("select value from counters where name = ?", [name]))
            value = rows[0]["value"] + 1 if rows else 1
            db["counters"].upsert({"name": name, "value": value}, pk="name")
        return value

    # Pages

    def add_page(self, job_id: str, seq: int, path: Path, sha256: str, width: int, height: int, dpi: int) -> None:
        with self.transaction() as db:
            db["pages"].insert(
                {
                    "job_id": job_id,
                    "seq": seq,
                    "path": str(path),
                    "sha256": sha256,
                    "width": width,
                    "height": height,
                    "dpi": dpi,
                    "state": "captured",
                    "created_at": utc_now(),
                }
            )
            db.execute("update jobs set page_count = page_count + 1, updated_at = ? where id = ?", [utc_now(), job_id])
        self.write_manifest(job_id)

    def pages(self, job_id: str) -> list[Page]:
        with self._lock:
            rows = list(self.db.query("select * from pages where job_id = ? order by seq", [job_id]))
        return [
            Page(
                job_id=row["job_id"],
                seq=row["seq"],
                path=row["path"],
                sha256=row["sha256"],
                width=row["width"],
                height=row["height"],
                dpi=row["dpi"],
                state=row["state"],
                ocr_path=row["ocr_path"],
                clean_path=row.get("clean_path"),
                dropped=bool(row.get("dropped")),
                drop_reason=row.get("drop_reason"),
            )
            for row in rows
        ]

    def set_page_recognized(self, job_id: str, seq: int, ocr_path: Path) -> None:
        with self.transaction() as db:
            db["pages"].update((job_id, seq), {"state": "recognized", "ocr_path": str(ocr_path)})

    def set_page_cleaned(self, job_id: str, seq: int, clean_path: Path) -> None:
        """Record the cleaned image of a page; its file must already be durable."""
        with self.transaction() as db:
            db["pages"].update((job_id, seq), {"clean_path": str(clean_path)})
        self.write_manifest(job_id)

    def set_page_dropped(self, job_id: str, seq: int, reason: str) -> None:
        """Record that a page is left out of the document, and why; its scanned file is kept."""
        with self.transaction() as db:
            db["pages"].update((job_id, seq), {"dropped": 1, "drop_reason": reason})
        self.write_manifest(job_id)

    # Manifests

    def manifest(self, job_id: str) -> dict:
        """Return the job's manifest: its row and its pages, with file names relative to the job folder."""
        job = self.get_job(job_id)
        folder = self.manifests_dir / job_id if self.manifests_dir is not None else None

        def relative(path: str | None) -> str | None:
            if path is None or folder is None:
                return path
            try:
                return str(Path(path).relative_to(folder))
            except ValueError:
                return path

        pages = self.pages(job_id)
        return {
            "format": 1,
            "job_id": job.id,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "state": job.state,
            "doc_code": job.doc_code,
            "error_code": job.error_code,
            "fields": job.fields,
            "pdf": relative(job.pdf_path),
            "signed_pdf": relative(job.signed_path),
            "sha256": job.sha256,
            "receipt": job.receipt,
            "duplicate_of": job.duplicate_of,
            "duplicate_reason": job.duplicate_reason,
            "purged_at": job.purged_at,
            "profile": job.profile,
            "origin": job.origin,
            "declared": job.declared,
            "source_batch": self._spool_relative(job.source_batch),
            "timestamp_pending": job.timestamp_pending,
            "upload_rejections": job.upload_rejections,
            "pages_dropped": [page.seq for page in pages if page.dropped],
            "pages": [
                {
                    "seq": page.seq,
                    "file": relative(page.path),
                    "sha256": page.sha256,
                    "width": page.width,
                    "height": page.height,
                    "dpi": page.dpi,
                    "clean_file": relative(page.clean_path),
                    "dropped": page.dropped,
                    "drop_reason": page.drop_reason,
                }
                for page in pages
            ],
        }

    def _spool_relative(self, path: str | None) -> str | None:
        if path is None or self.manifests_dir is None:
            return path
        try:
            return str(Path(path).relative_to(self.manifests_dir))
        except ValueError:
            return path

    def write_manifest(self, job_id: str) -> None:
        """Rewrite ``<manifests_dir>/<job id>/manifest.json`` durably; do nothing without ``manifests_dir``.

        A job whose folder was purged gets no new folder, because the journal
        row alone records it.
        """
        if self.manifests_dir is None:
            return
        manifest = self.manifest(job_id)
        folder = self.manifests_dir / job_id
        if manifest["purged_at"] and not folder.exists():
            return
        data = json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8")
        try:
            write_atomic(folder / MANIFEST_NAME, data)
        except OSError as exc:
            raise JournalError(
                N_("Cannot write the manifest of job {job_id} in {path}: {detail}"), job_id=job_id, path=folder, detail=exc
            ) from exc
