"""The ``imports`` journal table: one row per imported file content, keyed by its SHA-256.

The row is inserted in the same transaction that creates the job, so a file
whose content has a row was imported, whatever happened to the daemon after
the commit. ``archived_to`` is set once the source file has left the inbox;
a row without it means that the daemon stopped between the commit and the move.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlite_utils

if TYPE_CHECKING:
    from sohoa.journal import Journal

TABLE = "imports"
# What an import produced: page images for the normal pipeline, or a signed PDF archived as it is.
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
        )

    def upload_metadata(self) -> dict[str, object]:
        """Return the ``x_import`` extension of the upload metadata: the source file and, for a signed PDF, its check."""
        metadata: dict[str, object] = {"file_name": self.file_name, "sha256": self.sha256, "kind": self.kind}
        if self.kind == KIND_SIGNED_PDF:
            metadata["signature"] = {
                "valid": self.signature_valid,
                "trusted": self.signature_trusted,
                "summary": self.signature_summary,
            }
        return metadata


def create_import_schema(db: sqlite_utils.Database) -> None:
    """Create the ``imports`` table if it is missing; called when the journal opens."""
    if TABLE in db.table_names():
        return
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
    with journal.transaction() as db:
        rows = list(db.query(f"select * from {TABLE} where job_id = ?", [job_id]))
    return ImportRecord.from_row(rows[0]) if rows else None


def insert(db: sqlite_utils.Database, record: ImportRecord) -> None:
    """Insert ``record``, replacing the row of an earlier import of the same content whose job failed."""
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
    }
    db.execute(f"delete from {TABLE} where sha256 = ?", [record.sha256])
    db[TABLE].insert(row)


def mark_archived(journal: Journal, sha256: str, archived_to: str) -> None:
    """Record where the source file went once it left the inbox."""
    with journal.transaction() as db:
        db.execute(f"update {TABLE} set archived_to = ? where sha256 = ?", [archived_to, sha256])
