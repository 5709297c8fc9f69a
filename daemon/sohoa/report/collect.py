"""Counting the journal's jobs into a :class:`BoxSummary`.

A document counts as digitized once it is signed: state ``signed`` (waiting
for upload) or ``uploaded``. Counts are grouped by the document type (the type
part of DocCode) and by the month in which the scan started, in the plan's
time zone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from sohoa import fields as fieldlib
from sohoa.config import Config
from sohoa.errors import JournalError, user_message_from_detail
from sohoa.i18n import N_
from sohoa.report import summary as summary_model
from sohoa.report.summary import BoxSummary, JobEntry, MonthCount, PlanSummary, Tally, YearCount

DIGITIZED_STATES = ("signed", "uploaded")
# Cancelled jobs are in no list: staff ended them, and they are never archived.
QUEUED_STATES = ("scanning", "interrupted", "collecting", "captured", "recognized", "built")
FAILED_STATES = ("failed",)

# Positions of the counters kept per type and month while counting.
_SIGNED, _UPLOADED, _QUEUED, _FAILED = 0, 2, 4, 6
_BUCKETS = {"signed": _SIGNED, "uploaded": _UPLOADED, "failed": _FAILED} | {state: _QUEUED for state in QUEUED_STATES}


@dataclass(frozen=True)
class JobRecord:
    """The columns of a journal job that the report reads."""

    job_id: str
    created_at: str  # ISO 8601, UTC
    state: str
    doc_code: str | None
    page_count: int
    error_code: str | None = None
    error_message: str | None = None
    type_name: str | None = None  # the recognized TypeName, read only while the job has no DocCode
    error_detail: str | None = None  # Job.error_detail, None in journals written before the column existed


def read_jobs(journal_path: Path) -> list[JobRecord]:
    """Read every job of the journal at ``journal_path`` through a read-only connection.

    The connection is separate from the daemon's, so a report never waits on
    the daemon's lock and never writes. SQLite's write-ahead log lets it read
    while the daemon writes. A missing journal file reads as no jobs, and no
    file is created.
    """
    journal_path = Path(journal_path)
    if not journal_path.exists():
        return []
    states = (*QUEUED_STATES, *DIGITIZED_STATES, *FAILED_STATES)
    try:
        with closing(sqlite3.connect(f"{journal_path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as connection:
            # The connection is read-only, so a journal from before error_detail cannot gain the column here.
            columns = {row[1] for row in connection.execute("pragma table_info(jobs)")}
            detail = "error_detail" if "error_detail" in columns else "null"
            query = f"""
                select id, created_at, state, doc_code, page_count, error_code, error_message,
                       case when (doc_code is null or doc_code = '') and json_valid(fields)
                            then json_extract(fields, '$.TypeName.value') end as type_name,
                       {detail} as error_detail
                from jobs where state in ({",".join("?" for _ in states)}) order by created_at, id
            """
            rows = connection.execute(query, states).fetchall()
    except sqlite3.Error as exc:
        raise JournalError(N_("Cannot open the journal {path}: {detail}"), path=journal_path, detail=exc) from exc
    return [JobRecord(*row) for row in rows]


def job_type_code(doc_code: str | None, type_name: object) -> str:
    """Return the document-type code: DocCode's type part, else the one of the recognized TypeName, else KHAC."""
    if doc_code:
        parts = doc_code.rsplit("_", 3)
        if len(parts) == 4 and parts[1]:
            return parts[1]
    if not isinstance(type_name, str) or not type_name:
        return fieldlib.UNKNOWN_TYPE_CODE
    return fieldlib.type_code({"TypeName": fieldlib.Field(type_name, 0.0, False)})


def scan_date(created_at: str, zone: ZoneInfo) -> date:
    """Return the local date, in ``zone``, of a scan that started at ``created_at``."""
    started = datetime.fromisoformat(created_at)
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    return started.astimezone(zone).date()


def department_name(config: Config) -> str:
    """Return the department the box reports for: ``box.department``, else ``box.unit``."""
    return config.box.department or config.box.unit


def summarize_jobs(
    jobs: Iterable[JobRecord],
    config: Config,
    date_from: date | None = None,
    date_to: date | None = None,
    now: datetime | None = None,
) -> BoxSummary:
    """Summarize ``jobs`` for the period ``date_from`` to ``date_to``, both inclusive.

    Month counts cover jobs scanned within the period. Year counts cover every
    digitized job scanned up to ``date_to``, because progress against the
    inventory is cumulative. The queued and failed lists contain every job in
    those states now, whatever the period, because each needs action.
    """
    zone = ZoneInfo(config.plan.timezone)
    # Mutable counters, documents then pages, because a box may hold tens of thousands of jobs.
    months: dict[tuple[str, str], list[int]] = {}
    years: dict[tuple[str, int], list[int]] = {}
    queued: list[JobEntry] = []
    failed: list[JobEntry] = []

    for job in jobs:
        type_code = job_type_code(job.doc_code, job.type_name)
        if job.state in QUEUED_STATES:
            queued.append(_entry(job, type_code))
        elif job.state in FAILED_STATES:
            failed.append(_entry(job, type_code))

        scanned = scan_date(job.created_at, zone)
        if date_to is not None and scanned > date_to:
            continue
        if job.state in DIGITIZED_STATES:
            _count(years.setdefault((type_code, scanned.year), [0] * 4), _BUCKETS[job.state], job.page_count)
        if date_from is not None and scanned < date_from:
            continue
        month = f"{scanned.year:04d}-{scanned.month:02d}"
        _count(months.setdefault((type_code, month), [0] * 8), _BUCKETS[job.state], job.page_count)

    generated = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    listed = summary_model.MAX_LISTED_JOBS
    return BoxSummary(
        site=config.box.site,
        device=config.box.device,
        department=department_name(config),
        generated_at=generated.isoformat(timespec="seconds"),
        timezone=config.plan.timezone,
        period_from=date_from.isoformat() if date_from else None,
        period_to=date_to.isoformat() if date_to else None,
        plan=PlanSummary.from_config(config.plan),
        months=tuple(_month_count(key, months[key]) for key in sorted(months)),
        years=tuple(_year_count(key, years[key]) for key in sorted(years)),
        queued=tuple(sorted(queued, key=_entry_order)[:listed]),
        failed=tuple(sorted(failed, key=_entry_order)[:listed]),
        queued_total=len(queued),
        failed_total=len(failed),
    )


def build_summary(
    config: Config,
    date_from: date | None = None,
    date_to: date | None = None,
    now: datetime | None = None,
) -> BoxSummary:
    """Summarize the journal of the box that ``config`` describes."""
    return summarize_jobs(read_jobs(config.journal_path), config, date_from, date_to, now)


def _count(counters: list[int], position: int, pages: int) -> None:
    counters[position] += 1
    counters[position + 1] += pages


def _month_count(key: tuple[str, str], counters: list[int]) -> MonthCount:
    type_code, month = key
    tallies = [Tally(counters[i], counters[i + 1]) for i in range(0, 8, 2)]
    return MonthCount(type_code, month, *tallies)


def _year_count(key: tuple[str, int], counters: list[int]) -> YearCount:
    type_code, year = key
    return YearCount(type_code, year, Tally(counters[0], counters[1]), Tally(counters[2], counters[3]))


def _entry(job: JobRecord, type_code: str) -> JobEntry:
    return JobEntry(
        job_id=job.job_id,
        doc_code=job.doc_code,
        type_code=type_code,
        state=job.state,
        pages=job.page_count,
        created_at=job.created_at,
        error_code=job.error_code,
        error_message=user_message_from_detail(job.error_detail) or job.error_message,
    )


def _entry_order(entry: JobEntry) -> tuple[str, str]:
    return (entry.created_at, entry.job_id)
