"""One box's compact, JSON-serialisable summary of its journal.

A box builds a :class:`BoxSummary` with :func:`sohoa.report.collect.build_summary`.
The box-side report and the fleet report are both made from summaries by
:func:`sohoa.report.aggregate.aggregate`. The JSON payload is described in
``docs/reports.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sohoa.config import PlanConfig
from sohoa.errors import ReportError
from sohoa.i18n import N_

SUMMARY_SCHEMA = 1
DIGITIZED_STATES = ("signed", "uploaded")
# Cancelled jobs are in no list: staff ended them, and they are never archived.
QUEUED_STATES = ("scanning", "interrupted", "collecting", "captured", "recognized", "built")
FAILED_STATES = ("failed",)
# Queued and failed jobs listed by name in one summary; the totals count them all.
MAX_LISTED_JOBS = 200
# Topic suffix, after {prefix}/{site}/{device}/, of the retained summary.
SUMMARY_TOPIC = "report"


@dataclass(frozen=True)
class Tally:
    """A number of documents and their pages."""

    documents: int = 0
    pages: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.documents + other.documents, self.pages + other.pages)

    def to_json(self) -> list[int]:
        return [self.documents, self.pages]

    @classmethod
    def from_json(cls, value: object) -> Tally:
        if not (isinstance(value, list) and len(value) == 2 and all(_is_count(item) for item in value)):
            raise ValueError(f"expected [documents, pages] as two non-negative integers, got {value!r}")
        return cls(value[0], value[1])


@dataclass(frozen=True)
class MonthCount:
    """Documents of one type whose scan started in one month, by how far they got."""

    type_code: str
    month: str  # YYYY-MM
    signed: Tally = Tally()  # signed, waiting for upload
    uploaded: Tally = Tally()
    queued: Tally = Tally()
    failed: Tally = Tally()

    @property
    def digitized(self) -> Tally:
        return self.signed + self.uploaded

    def __add__(self, other: MonthCount) -> MonthCount:
        return MonthCount(
            self.type_code,
            self.month,
            self.signed + other.signed,
            self.uploaded + other.uploaded,
            self.queued + other.queued,
            self.failed + other.failed,
        )


@dataclass(frozen=True)
class YearCount:
    """Digitized documents of one type whose scan started in one year."""

    type_code: str
    year: int
    signed: Tally = Tally()
    uploaded: Tally = Tally()

    @property
    def digitized(self) -> Tally:
        return self.signed + self.uploaded


@dataclass(frozen=True)
class JobEntry:
    """A job still in work on the box, or failed, as the report lists it."""

    job_id: str
    doc_code: str | None
    type_code: str
    state: str
    pages: int
    created_at: str
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class PlanSummary:
    """The plan part of the configuration, as a box publishes it."""

    inventory: dict[str, int] = field(default_factory=dict)
    start_year: int | None = None
    yearly_target_percent: float = 20.0
    yearly_targets: dict[int, float] = field(default_factory=dict)
    deadline: str | None = None  # YYYY-MM-DD

    @classmethod
    def from_config(cls, plan: PlanConfig) -> PlanSummary:
        return cls(
            inventory=dict(plan.inventory),
            start_year=plan.start_year,
            yearly_target_percent=plan.yearly_target_percent,
            yearly_targets=dict(plan.yearly_targets),
            deadline=plan.deadline.isoformat() if plan.deadline else None,
        )

    def target_percent(self, year: int) -> float:
        """Return the share of the inventory, in percent, planned for ``year`` alone."""
        if self.start_year is None or year < self.start_year:
            return 0.0
        return self.yearly_targets.get(year, self.yearly_target_percent)

    def expected_percent(self, year: int) -> float:
        """Return the share of the inventory, in percent, planned to be digitized by the end of ``year``."""
        if self.start_year is None:
            return 0.0
        planned = sum(self.target_percent(each) for each in range(self.start_year, year + 1))
        return min(100.0, planned)


@dataclass(frozen=True)
class BoxSummary:
    """Summary of one box's journal, the input of :func:`aggregate`."""

    site: str
    device: str
    department: str
    generated_at: str  # ISO 8601, UTC
    timezone: str
    period_from: str | None  # YYYY-MM-DD, inclusive; None for no bound
    period_to: str | None
    plan: PlanSummary
    months: tuple[MonthCount, ...] = ()
    years: tuple[YearCount, ...] = ()
    queued: tuple[JobEntry, ...] = ()
    failed: tuple[JobEntry, ...] = ()
    queued_total: int = 0
    failed_total: int = 0

    @property
    def box(self) -> str:
        return f"{self.site}/{self.device}"

    def to_dict(self) -> dict:
        return {
            "schema": SUMMARY_SCHEMA,
            "site": self.site,
            "device": self.device,
            "department": self.department,
            "generated_at": self.generated_at,
            "timezone": self.timezone,
            "period": {"from": self.period_from, "to": self.period_to},
            "plan": {
                "inventory": self.plan.inventory,
                "start_year": self.plan.start_year,
                "yearly_target_percent": self.plan.yearly_target_percent,
                "yearly_targets": {str(year): percent for year, percent in self.plan.yearly_targets.items()},
                "deadline": self.plan.deadline,
            },
            "months": [
                {
                    "type": count.type_code,
                    "month": count.month,
                    "signed": count.signed.to_json(),
                    "uploaded": count.uploaded.to_json(),
                    "queued": count.queued.to_json(),
                    "failed": count.failed.to_json(),
                }
                for count in self.months
            ],
            "years": [
                {"type": count.type_code, "year": count.year, "signed": count.signed.to_json(), "uploaded": count.uploaded.to_json()}
                for count in self.years
            ],
            "queued": {"total": self.queued_total, "jobs": [_job_to_json(job) for job in self.queued]},
            "failed": {"total": self.failed_total, "jobs": [_job_to_json(job) for job in self.failed]},
        }

    def to_json(self) -> bytes:
        """Encode the summary as compact UTF-8 JSON, the MQTT payload."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_dict(cls, data: object) -> BoxSummary:
        """Validate a decoded payload; raise :class:`ReportError` naming the first problem."""
        try:
            return _summary_from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ReportError(
                N_("Invalid box summary: {detail}. The box that sent it needs a matching sohoa version."), detail=exc
            ) from exc

    @classmethod
    def from_json(cls, payload: bytes | str) -> BoxSummary:
        try:
            data = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ReportError(N_("Invalid box summary: not JSON ({detail})."), detail=exc) from exc
        return cls.from_dict(data)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _job_to_json(job: JobEntry) -> dict:
    return {
        "job_id": job.job_id,
        "doc_code": job.doc_code,
        "type": job.type_code,
        "state": job.state,
        "pages": job.pages,
        "created_at": job.created_at,
        "error_code": job.error_code,
        "error_message": job.error_message,
    }


def _job_from_json(data: dict) -> JobEntry:
    entry = JobEntry(
        job_id=str(data["job_id"]),
        doc_code=data.get("doc_code"),
        type_code=str(data["type"]),
        state=str(data["state"]),
        pages=data["pages"],
        created_at=str(data["created_at"]),
        error_code=data.get("error_code"),
        error_message=data.get("error_message"),
    )
    if not _is_count(entry.pages):
        raise ValueError(f"job {entry.job_id}: pages must be a non-negative integer, got {entry.pages!r}")
    return entry


def _check_month(value: object) -> str:
    text = str(value)
    datetime.strptime(text, "%Y-%m")
    return text


def _check_date(value: object) -> str | None:
    if value is None:
        return None
    return date.fromisoformat(str(value)).isoformat()


def _summary_from_dict(data: object) -> BoxSummary:
    if not isinstance(data, dict):
        raise TypeError(f"expected a JSON object, got {type(data).__name__}")
    if data.get("schema") != SUMMARY_SCHEMA:
        raise ValueError(f"schema {data.get('schema')!r} is not {SUMMARY_SCHEMA}")
    plan = data["plan"]
    inventory = {str(code): count for code, count in plan["inventory"].items()}
    if not all(_is_count(count) for count in inventory.values()):
        raise ValueError(f"inventory counts must be non-negative integers: {inventory!r}")
    datetime.fromisoformat(data["generated_at"])
    ZoneInfo(data["timezone"])
    return BoxSummary(
        site=str(data["site"]),
        device=str(data["device"]),
        department=str(data["department"]),
        generated_at=str(data["generated_at"]),
        timezone=str(data["timezone"]),
        period_from=_check_date(data["period"]["from"]),
        period_to=_check_date(data["period"]["to"]),
        plan=PlanSummary(
            inventory=inventory,
            start_year=None if plan["start_year"] is None else int(plan["start_year"]),
            yearly_target_percent=float(plan["yearly_target_percent"]),
            yearly_targets={int(year): float(percent) for year, percent in plan["yearly_targets"].items()},
            deadline=_check_date(plan["deadline"]),
        ),
        months=tuple(
            MonthCount(
                type_code=str(item["type"]),
                month=_check_month(item["month"]),
                signed=Tally.from_json(item["signed"]),
                uploaded=Tally.from_json(item["uploaded"]),
                queued=Tally.from_json(item["queued"]),
                failed=Tally.from_json(item["failed"]),
            )
            for item in data["months"]
        ),
        years=tuple(
            YearCount(
                type_code=str(item["type"]),
                year=int(item["year"]),
                signed=Tally.from_json(item["signed"]),
                uploaded=Tally.from_json(item["uploaded"]),
            )
            for item in data["years"]
        ),
        queued=tuple(_job_from_json(job) for job in data["queued"]["jobs"]),
        failed=tuple(_job_from_json(job) for job in data["failed"]["jobs"]),
        queued_total=int(data["queued"]["total"]),
        failed_total=int(data["failed"]["total"]),
    )
