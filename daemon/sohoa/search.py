"""Full-text search over the journal, and the ``sohoa search`` command.

Each recognized document has one row in ``search_documents``: its recognized
text as read (for display) and a folded copy of the text and of its fields,
which the FTS5 table ``search_index`` indexes as external content. Triggers
keep ``search_index`` in step with ``search_documents``, and the pipeline
writes the row in the same transaction that moves the job to ``recognized``,
so a crash leaves either both or neither.

Folding (:func:`fold`) removes diacritics, maps "đ" to "d" and casefolds.
FTS5's own ``remove_diacritics`` option keeps "đ" (U+0111 has no Unicode
decomposition), so both the index and the queries hold the folded form and
"quyet dinh" finds "Quyết định".

``sohoa search --rebuild`` recreates both tables from the journal's jobs and
the per-page OCR files, for a journal restored from a copy that lacks them.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from sohoa import fields as fieldlib
from sohoa.i18n import gettext as _

if TYPE_CHECKING:
    import sqlite_utils

    from sohoa.journal import Job, Journal

log = logging.getLogger(__name__)

# Job states whose documents are indexed: recognition has run for all of them
# (a failed job is indexed when it failed after recognition).
INDEXED_STATES = ("recognized", "built", "signed", "uploaded", "failed")
# Fields indexed for search, as the journal names them.
SEARCH_FIELDS = (
    "TypeName",
    "CodeNumber",
    "CodeNotation",
    "IssuedDate",
    "OrganName",
    "Subject",
    "Position",
    "FullName",
    "OwnerName",
    "OwnerIdentity",
)
DEFAULT_LIMIT = 50
SUBJECT_WIDTH = 40

_SCHEMA = """
CREATE TABLE IF NOT EXISTS search_documents (
    job_id TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    text TEXT NOT NULL,
    folded_text TEXT NOT NULL,
    folded_fields TEXT NOT NULL,
    duplicate_key TEXT,
    issued_date TEXT,
    type_code TEXT,
    type_name TEXT,
    owner_identity TEXT,
    indexed_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS search_documents_duplicate_key ON search_documents(duplicate_key);
CREATE INDEX IF NOT EXISTS search_documents_issued_date ON search_documents(issued_date);
CREATE VIRTUAL TABLE IF NOT EXISTS search_index USING fts5(
    folded_fields, folded_text,
    content='search_documents', content_rowid='rowid',
    tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS search_documents_ai AFTER INSERT ON search_documents BEGIN
    INSERT INTO search_index(rowid, folded_fields, folded_text) VALUES (new.rowid, new.folded_fields, new.folded_text);
END;
CREATE TRIGGER IF NOT EXISTS search_documents_ad AFTER DELETE ON search_documents BEGIN
    INSERT INTO search_index(search_index, rowid, folded_fields, folded_text)
    VALUES ('delete', old.rowid, old.folded_fields, old.folded_text);
END;
CREATE TRIGGER IF NOT EXISTS search_documents_au AFTER UPDATE ON search_documents BEGIN
    INSERT INTO search_index(search_index, rowid, folded_fields, folded_text)
    VALUES ('delete', old.rowid, old.folded_fields, old.folded_text);
    INSERT INTO search_index(rowid, folded_fields, folded_text) VALUES (new.rowid, new.folded_fields, new.folded_text);
END;
"""
_DROP = """
DROP TRIGGER IF EXISTS search_documents_ai;
DROP TRIGGER IF EXISTS search_documents_ad;
DROP TRIGGER IF EXISTS search_documents_au;
DROP TABLE IF EXISTS search_index;
DROP TABLE IF EXISTS search_documents;
"""


# Folding


def fold(text: str) -> str:
    """Return ``text`` without diacritics, with "đ" as "d", casefolded: the form the index holds."""
    decomposed = unicodedata.normalize("NFD", text.replace("Đ", "d").replace("đ", "d"))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return unicodedata.normalize("NFC", stripped).casefold()


def field_value(fields: dict, name: str) -> str | None:
    """Return the recognized value of field ``name`` from the journal's fields JSON, or None."""
    value = (fields.get(name) or {}).get("value")
    return str(value).strip() if value else None


def _date_variants(issued: str | None) -> list[str]:
    """Return the ISO date and its day/month/year spellings, so each matches a query as typed."""
    if not issued:
        return []
    try:
        day = date.fromisoformat(issued)
    except ValueError:
        return [issued]
    return [issued, f"{day.day:02d}/{day.month:02d}/{day.year}", f"{day.day}/{day.month}/{day.year}"]


def _folded_fields(fields: dict) -> str:
    parts = [field_value(fields, name) for name in SEARCH_FIELDS]
    number, notation = field_value(fields, "CodeNumber"), field_value(fields, "CodeNotation")
    if number and notation:
        parts.append(f"{number}/{notation}")
    parts.extend(_date_variants(field_value(fields, "IssuedDate")))
    return fold("\n".join(part for part in parts if part))


# Schema and index maintenance


def create_search_schema(db: sqlite_utils.Database) -> None:
    """Create the search tables and triggers if they are missing; called when the journal opens.

    When ``search_documents`` survived but ``search_index`` did not, the index
    is rebuilt from the documents at once, because the delete triggers
    require the index to hold every document row.
    """
    had_documents = "search_documents" in db.table_names()
    had_index = "search_index" in db.table_names()
    _execute_script(db, _SCHEMA)
    if had_documents and not had_index:
        db.execute("INSERT INTO search_index(search_index) VALUES ('rebuild')")
        log.warning("Search index was missing; rebuilt it from the %d indexed documents", db["search_documents"].count)


def document_row(job_id: str, fields: dict, text: str) -> dict[str, object]:
    """Return the ``search_documents`` row of a document with these fields and recognized text."""
    from sohoa.duplicates import duplicate_key

    type_name = field_value(fields, "TypeName")
    type_code = fieldlib.type_code(fieldlib.fields_from_json(fields)) if fields else fieldlib.UNKNOWN_TYPE_CODE
    return {
        "job_id": job_id,
        "text": text,
        "folded_text": fold(text),
        "folded_fields": _folded_fields(fields),
        "duplicate_key": duplicate_key(fields),
        "issued_date": field_value(fields, "IssuedDate"),
        "type_code": fold(type_code),
        "type_name": fold(type_name) if type_name else None,
        "owner_identity": field_value(fields, "OwnerIdentity"),
        "indexed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def index_document(db: sqlite_utils.Database, job_id: str, fields: dict, text: str) -> None:
    """Index (or re-index) one document; call it inside the transaction that records its recognition."""
    # A delete and an insert, not INSERT OR REPLACE: REPLACE fires no delete
    # trigger unless recursive_triggers is on, and would leave a stale entry.
    db.execute("DELETE FROM search_documents WHERE job_id = ?", [job_id])
    db["search_documents"].insert(document_row(job_id, fields, text))


def read_recognized_text(journal: Journal, job_id: str) -> tuple[str, list[int]]:
    """Return a job's recognized text from its per-page OCR files, and the pages whose file is missing."""
    texts: list[str] = []
    missing: list[int] = []
    for page in journal.pages(job_id):
        if not page.ocr_path or not Path(page.ocr_path).exists():
            missing.append(page.seq)
            continue
        try:
            data = json.loads(Path(page.ocr_path).read_text(encoding="utf-8"))
            texts.append("\n".join(str(line["text"]) for line in data["lines"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("Job %s: OCR file %s of page %d is unreadable: %s", job_id, page.ocr_path, page.seq, exc)
            missing.append(page.seq)
    return "\n".join(texts), missing


@dataclass(frozen=True)
class RebuildReport:
    documents: int
    # Job id -> page numbers whose OCR file was missing or unreadable; those
    # documents are indexed by their fields and the pages that remain.
    incomplete: dict[str, list[int]]


def rebuild_index(journal: Journal) -> RebuildReport:
    """Drop and recreate the search tables, then index every recognized job from its OCR files.

    Each document is indexed in its own transaction, so a running daemon is
    never blocked for long. A search during the rebuild returns only the
    documents indexed so far.
    """
    with journal.transaction() as db:
        _execute_script(db, _DROP)
        _execute_script(db, _SCHEMA)

    incomplete: dict[str, list[int]] = {}
    jobs = [job for job in journal.jobs_in(*INDEXED_STATES) if job.fields]
    for job in jobs:
        text, missing = read_recognized_text(journal, job.id)
        if missing:
            incomplete[job.id] = missing
        with journal.transaction() as db:
            index_document(db, job.id, job.fields, text)
    log.info("Search index rebuilt: %d documents, %d with missing OCR files", len(jobs), len(incomplete))
    return RebuildReport(len(jobs), incomplete)


def _execute_script(db: sqlite_utils.Database, script: str) -> None:
    # Statement by statement, because sqlite3's executescript() commits an open transaction first.
    for statement in _split_statements(script):
        db.execute(statement)


def _split_statements(script: str) -> list[str]:
    """Split a script of this module into statements; a trigger body ends at ``END;``."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        in_trigger = text.upper().startswith("CREATE TRIGGER")
        if (in_trigger and line.strip().upper() == "END;") or (not in_trigger and line.rstrip().endswith(";")):
            statements.append(text)
            current = []
    return [statement for statement in statements if statement]


def unindexed_jobs(journal: Journal) -> list[str]:
    """Return the ids of recognized jobs without a search row, which only a rebuild adds."""
    marks = ",".join("?" for _ in INDEXED_STATES)
    with journal.transaction() as db:
        rows = db.query(
            f"SELECT id FROM jobs WHERE state IN ({marks}) AND fields IS NOT NULL AND fields != '{{}}' "
            "AND id NOT IN (SELECT job_id FROM search_documents) ORDER BY created_at, id",
            list(INDEXED_STATES),
        )
        return [row["id"] for row in rows]


# Queries


def match_expression(query: str) -> str | None:
    """Turn a user's query into an FTS5 expression: every word must match, ``word*`` matches a prefix.

    Each word becomes a quoted FTS5 string, so the user's text is never read
    as FTS5 syntax; "12/QĐ-SGDĐT" becomes the phrase "12 qd sgddt".
    Returns None when the query has no word.
    """
    terms = []
    for word in fold(query).split():
        prefix = word.endswith("*")
        word = word.rstrip("*")
        if not re.search(r"\w", word):
            continue
        quoted = '"' + word.replace('"', '""') + '"'
        terms.append(quoted + ("*" if prefix else ""))
    return " ".join(terms) or None


@dataclass(frozen=True)
class SearchResult:
    job_id: str
    doc_code: str | None
    type_name: str | None
    number_notation: str | None
    issued_date: str | None
    subject: str | None
    owner_name: str | None
    state: str
    job_state: str
    archive_id: str | None
    receipt: dict | None
    duplicate_of: str | None
    duplicate_reason: str | None

    @classmethod
    def from_job(cls, job: Job) -> SearchResult:
        number, notation = field_value(job.fields, "CodeNumber"), field_value(job.fields, "CodeNotation")
        number_notation = "/".join(part for part in (number, notation) if part) or None
        return cls(
            job_id=job.id,
            doc_code=job.doc_code,
            type_name=field_value(job.fields, "TypeName"),
            number_notation=number_notation,
            issued_date=field_value(job.fields, "IssuedDate"),
            subject=field_value(job.fields, "Subject"),
            owner_name=field_value(job.fields, "OwnerName"),
            state=display_state(job.state),
            job_state=job.state,
            archive_id=str(job.receipt["archive_id"]) if job.receipt and "archive_id" in job.receipt else None,
            receipt=job.receipt,
            duplicate_of=job.duplicate_of,
            duplicate_reason=job.duplicate_reason,
        )


def display_state(state: str) -> str:
    """Return the state shown to staff: queued (still on the box, unsigned), signed, uploaded or failed."""
    if state in ("signed", "uploaded", "failed"):
        return state
    return "queued"


def search(
    journal: Journal,
    query: str = "",
    *,
    document_type: str | None = None,
    issued_from: date | None = None,
    issued_to: date | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[SearchResult]:
    """Find documents by recognized text and fields, best match first.

    An empty query lists the documents that pass the filters, newest first.
    ``document_type`` matches the type's name or its DocCode abbreviation
    ("Quyết định", "quyet dinh", "QĐ"); the date bounds apply to the issue
    date and are inclusive, so documents without an issue date are left out
    when either is given. A query equal to a job id or a DocCode also finds
    that document.
    """
    from sohoa.journal import Job

    filters, params = _filters(document_type, issued_from, issued_to)
    expression = match_expression(query)
    with journal.transaction() as db:
        if expression is None:
            sql = (
                "SELECT jobs.* FROM search_documents d JOIN jobs ON jobs.id = d.job_id"
                f" WHERE 1 = 1{filters} ORDER BY jobs.created_at DESC, jobs.rowid DESC LIMIT ?"
            )
            rows = list(db.query(sql, [*params, limit]))
        else:
            sql = (
                "SELECT jobs.* FROM ("
                "  SELECT rowid AS document_rowid, bm25(search_index, 4.0, 1.0) AS score FROM search_index"
                "  WHERE search_index MATCH ?"
                "  UNION ALL"
                "  SELECT d2.rowid, -1e9 FROM search_documents d2 JOIN jobs j2 ON j2.id = d2.job_id"
                "  WHERE j2.id = ? OR j2.doc_code IN (?, ?)"
                ") AS hits JOIN search_documents d ON d.rowid = hits.document_rowid JOIN jobs ON jobs.id = d.job_id"
                f" WHERE 1 = 1{filters} GROUP BY jobs.id ORDER BY min(hits.score), jobs.created_at DESC, jobs.rowid DESC LIMIT ?"
            )
            # SQLite's upper() changes ASCII letters only, so Python upper-cases the "đ" of a DocCode.
            exact = query.strip()
            rows = list(db.query(sql, [expression, exact, exact, exact.upper(), *params, limit]))
    return [SearchResult.from_job(Job.from_row(row)) for row in rows]


def _filters(document_type: str | None, issued_from: date | None, issued_to: date | None) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    if document_type:
        clauses.append(" AND (d.type_code = ? OR d.type_name = ?)")
        params.extend([fold(document_type.strip())] * 2)
    if issued_from is not None:
        clauses.append(" AND d.issued_date >= ?")
        params.append(issued_from.isoformat())
    if issued_to is not None:
        clauses.append(" AND d.issued_date <= ?")
        params.append(issued_to.isoformat())
    return "".join(clauses), params


# The command


def parse_date(text: str) -> date:
    """Parse a date given as YYYY-MM-DD or DD/MM/YYYY, for ``--from`` and ``--to``."""
    for pattern in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime(text.strip(), pattern).date()
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(_("Invalid date {value}; write it as YYYY-MM-DD or DD/MM/YYYY.").format(value=text))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(_("Invalid number {value}; give a whole number of at least 1.").format(value=text))
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help=_("find digitized documents by their text, number, date, issuing body or owner"),
        description=_(
            "Find documents by their recognized text and fields. Words match with or without diacritics "
            "and regardless of case; every word must match; word* matches a prefix."
        ),
    )
    parser.add_argument("query", nargs="?", default="", help=_("words to find (empty: list the newest documents)"))
    parser.add_argument("--type", dest="document_type", help=_("document type, by name or abbreviation, such as QĐ"))
    parser.add_argument("--from", dest="issued_from", type=parse_date, help=_("earliest issue date, YYYY-MM-DD or DD/MM/YYYY"))
    parser.add_argument("--to", dest="issued_to", type=parse_date, help=_("latest issue date, YYYY-MM-DD or DD/MM/YYYY"))
    parser.add_argument("--limit", type=_positive_int, default=DEFAULT_LIMIT, help=_("maximum number of results (default: 50)"))
    parser.add_argument("--format", choices=["table", "json"], default="table", help=_("output format (default: table)"))
    parser.add_argument(
        "--rebuild", action="store_true", help=_("rebuild the search index from the journal and the OCR files, then search")
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sohoa.cli import _load
    from sohoa.journal import Journal

    config = _load(args)
    journal = Journal(config.journal_path)
    try:
        if args.rebuild:
            _print_rebuild(rebuild_index(journal))
            if not (args.query or args.document_type or args.issued_from or args.issued_to):
                return 0
        results = search(
            journal,
            args.query,
            document_type=args.document_type,
            issued_from=args.issued_from,
            issued_to=args.issued_to,
            limit=args.limit,
        )
        unindexed = unindexed_jobs(journal)
    finally:
        journal.close()

    if args.format == "json":
        print(json.dumps({"results": [asdict(result) for result in results], "unindexed": unindexed}, ensure_ascii=False, indent=2))
    else:
        _print_table(results)
    if unindexed:
        print(
            _("Warning: {count} recognized documents are missing from the search index; run: sohoa search --rebuild").format(
                count=len(unindexed)
            ),
            file=sys.stderr,
        )
    return 0


def _print_rebuild(report: RebuildReport) -> None:
    print(_("Search index rebuilt: {count} documents.").format(count=report.documents))
    for job_id, pages in report.incomplete.items():
        print(
            _("  {job_id}: OCR text missing for pages {pages}; indexed by its fields and the other pages.").format(
                job_id=job_id, pages=", ".join(str(page) for page in pages)
            )
        )


def _state_label(state: str) -> str:
    labels = {"queued": _("queued"), "signed": _("signed"), "uploaded": _("uploaded"), "failed": _("failed")}
    return labels.get(state, state)


def _print_table(results: Iterable[SearchResult]) -> None:
    results = list(results)
    if not results:
        print(_("No document found."))
        return
    headers = [_("Job"), _("Type"), _("Number"), _("Issued"), _("Subject"), _("State"), _("Archive receipt")]
    rows = []
    for result in results:
        subject = result.subject or ""
        if len(subject) > SUBJECT_WIDTH:
            subject = subject[: SUBJECT_WIDTH - 1] + "…"
        receipt = result.archive_id or ""
        if result.duplicate_of:
            receipt = (receipt + " " if receipt else "") + _("(probable duplicate of {job_id})").format(job_id=result.duplicate_of)
        rows.append(
            [
                result.job_id,
                result.type_name or "",
                result.number_notation or "",
                result.issued_date or "",
                subject,
                _state_label(result.state),
                receipt,
            ]
        )
    widths = [max(len(str(row[index])) for row in [headers, *rows]) for index in range(len(headers))]
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
