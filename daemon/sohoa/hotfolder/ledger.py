"""The ``imports`` journal table: one row per imported file content, keyed by its SHA-256.

The row is inserted in the same transaction that creates the job, so a file
whose content has a row was imported, whatever happened to the daemon after
the commit. ``archived_to`` is set once the source file has left the inbox,
so a row without it means that the daemon stopped between the commit and
the move.

A file whose pages contain separator or cover sheets becomes several jobs.
The ``imports`` row names the first of them, and the ``import_jobs`` table
lists every job of the import (the first included) with the import's
SHA-256. All of them are inserted in the transaction that creates the jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlite_utils

if TYPE_CHECKING:
    from sohoa.journal import Journal

TABLE = "imports"
JOBS_TABLE = "import_jobs"
# Import kinds: page images for the normal pipeline, or a signed PDF archived as it is.
KIND_PAGES = "pages"
KIND_SIGNED_PDF = "signed_pdf"


@dataclass(frozen=True)
class ImportRecord:
    """One imported file: its content, where it came from, and the job it became."""

    sha256: str
    file_name: str
    size: int
    mtime: str
    job_id: str
    kind: str
    imported_at: str
    archived_to: str | None = None
    signature_valid: bool | None = None
    signature_trusted: bool | None = None
    signature_summary: str | None = None
    signature_intact: bool | None = None
    signature_signer: str | None = None

    @classmethod
    def from_row(cls, row: dict) -> ImportRecord:
        def flag(value: object) -> bool | None:
            return None if value is None else bool(value)

        return cls(
            sha256=row["sha256"],
            file_name=row["file_name"],
            size=row["size"],
            mtime=row["mtime"],
            job_id=row["job_id"],
            kind=row["kind"],
            imported_at=row["imported_at"],
            archived_to=row["archived_to"],
            signature_valid=flag(row["signature_valid"]),
            signature_trusted=flag(row["signature_trusted"]),
            signature_summary=row["signature_summary"],
            signature_intact=flag(row.get("signature_intact")),
            signature_signer=row.get("signature_signer"),
        )

    def upload_metadata(self) -> dict[str, object]:
        """Return the ``x_import`` extension of the upload metadata: the source file and, for a signed PDF, its check.

        The signature check is sent as fields. The English summary line stays
        in the journal, because it names the file's path in the box's spool.
        """
        metadata: dict[str, object] = {"file_name": self.file_name, "sha256": self.sha256, "kind": self.kind}
        if self.kind == KIND_SIGNED_PDF:
            metadata["signature"] = {
                "valid": self.signature_valid,
                "intact": self.signature_intact,
                "trusted": self.signature_trusted,
                "signer": self.signature_signer,
            }
        return metadata


def create_import_schema(db: sqlite_utils.Database) -> None:
    """Create the ``imports`` and ``import_jobs`` tables and add missing columns; called when the journal opens."""
    tables = db.table_names()
    if TABLE in tables:
        columns = set(db[TABLE].columns_dict)
        for name, kind in (("signature_intact", int), ("signature_signer", str)):
            if name not in columns:
                db[TABLE].add_column(name, kind)
    else:
        _create_imports_table(db)
    if JOBS_TABLE not in tables:
        db[JOBS_TABLE].create({"job_id": str, "sha256": str}, pk="job_id", not_null={"sha256"})
        db[JOBS_TABLE].create_index(["sha256"])


def _create_imports_table(db: sqlite_utils.Database) -> None:
    db[TABLE].create(
        {
            "sha256": str,
            "file_name": str,
            "size": int,
            "mtime": str,
            "job_id": str,
            "kind": str,
            "imported_at": str,
            "archived_to": str,
            "signature_valid": int,
            "signature_trusted": int,
            "signature_summary": str,
            "signature_intact": int,
            "signature_signer": str,
        },
        pk="sha256",
        not_null={"file_name", "size", "job_id", "kind", "imported_at"},
    )
    db[TABLE].create_index(["job_id"])


def find_by_sha256(journal: Journal, sha256: str) -> ImportRecord | None:
    with journal.transaction() as db:
        rows = list(db.query(f"select * from {TABLE} where sha256 = ?", [sha256]))
    return ImportRecord.from_row(rows[0]) if rows else None


def find_by_job(journal: Journal, job_id: str) -> ImportRecord | None:
    """Return the import that produced ``job_id``, whether it is the import's first job or a later one."""
    with journal.transaction() as db:
        rows = list(
            db.query(
                f"select * from {TABLE} where job_id = ? or sha256 in (select sha256 from {JOBS_TABLE} where job_id = ?)",
                [job_id, job_id],
            )
        )
    return ImportRecord.from_row(rows[0]) if rows else None


def job_ids(journal: Journal, record: ImportRecord) -> list[str]:
    """Return the ids of every job that ``record``'s import produced, in creation order."""
    with journal.transaction() as db:
        rows = list(db.query(f"select job_id from {JOBS_TABLE} where sha256 = ? order by rowid", [record.sha256]))
    ids = [row["job_id"] for row in rows]
    # An import recorded before the import_jobs table existed has only its first job.
    return ids if record.job_id in ids else [record.job_id, *ids]


def insert(db: sqlite_utils.Database, record: ImportRecord, job_ids: Sequence[str] = ()) -> None:
    """Insert ``record`` and its jobs, replacing the rows of an earlier import of the same content whose jobs failed.

    ``job_ids`` lists every job of the import; ``record.job_id`` is added when missing.
    """
    row = {
        "sha256": record.sha256,
        "file_name": record.file_name,
        "size": record.size,
        "mtime": record.mtime,
        "job_id": record.job_id,
        "kind": record.kind,
        "imported_at": record.imported_at,
        "archived_to": record.archived_to,
        "signature_valid": None if record.signature_valid is None else int(record.signature_valid),
        "signature_trusted": None if record.signature_trusted is None else int(record.signature_trusted),
        "signature_summary": record.signature_summary,
        "signature_intact": None if record.signature_intact is None else int(record.signature_intact),
        "signature_signer": record.signature_signer,
    }
    db.execute(f"delete from {TABLE} where sha256 = ?", [record.sha256])
    db.execute(f"delete from {JOBS_TABLE} where sha256 = ?", [record.sha256])
    db[TABLE].insert(row)
    ids = list(job_ids) if record.job_id in job_ids else [record.job_id, *job_ids]
    db[JOBS_TABLE].insert_all([{"job_id": job_id, "sha256": record.sha256} for job_id in ids])


def mark_archived(journal: Journal, sha256: str, archived_to: str) -> None:
    """Record where the source file went once it left the inbox."""
    with journal.transaction() as db:
        db.execute(f"update {TABLE} set archived_to = ? where sha256 = ?", [archived_to, sha256])
