"""The progress report, aggregated from box summaries.

:func:`aggregate` is a pure function: the box-side report passes the one
summary of its own journal, the fleet monitor passes the latest summary of
every box. Boxes of one department add up their counts and share the
department's inventory and plan.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sohoa.report.summary import BoxSummary, JobEntry, MonthCount, PlanSummary, Tally


@dataclass(frozen=True)
class CountRow:
    """Documents of one department and type whose scan started in one month."""

    department: str
    type_code: str
    month: str
    signed: Tally
    uploaded: Tally
    queued: Tally
    failed: Tally

    @property
    def digitized(self) -> Tally:
        return self.signed + self.uploaded


@dataclass(frozen=True)
class ProgressRow:
    """Progress of one department and type (``type_code`` None: all types) against its plan.

    ``digitized`` and ``uploaded`` count every document scanned up to the end
    of the report's period; ``year_digitized`` those scanned in ``year``.
    Percentages are None when the inventory of the type is unknown or zero.
    """

    department: str
    type_code: str | None
    inventory: int | None
    digitized: Tally
    uploaded: Tally
    year: int
    year_digitized: Tally
    year_target: int | None  # documents planned for ``year``
    expected_percent: float | None  # of the inventory, planned by the end of ``year``

    @property
    def percent_of_inventory(self) -> float | None:
        return _percent(self.digitized.documents, self.inventory)

    @property
    def percent_of_year_target(self) -> float | None:
        return _percent(self.year_digitized.documents, self.year_target)


@dataclass(frozen=True)
class DepartmentPlan:
    department: str
    plan: PlanSummary
    boxes: tuple[str, ...]


@dataclass(frozen=True)
class ListedJob:
    department: str
    box: str
    job: JobEntry


@dataclass(frozen=True)
class Report:
    """Everything the report renderers show, in display order."""

    generated_at: str
    period_from: str | None
    period_to: str | None
    year: int
    boxes: tuple[str, ...]
    plans: tuple[DepartmentPlan, ...]
    counts: tuple[CountRow, ...]
    progress: tuple[ProgressRow, ...]
    queued: tuple[ListedJob, ...]
    failed: tuple[ListedJob, ...]
    queued_total: int
    failed_total: int
    # Departments whose boxes publish different plans; the newest summary's plan is used.
    conflicting_plans: tuple[str, ...] = ()


def _percent(part: int, whole: int | None) -> float | None:
    if not whole:
        return None
    return 100.0 * part / whole


def latest_per_box(summaries: Iterable[BoxSummary]) -> list[BoxSummary]:
    """Keep the newest summary of each box (site and device), ordered by box."""
    latest: dict[str, BoxSummary] = {}
    for summary in summaries:
        known = latest.get(summary.box)
        if known is None or _timestamp(summary.generated_at) >= _timestamp(known.generated_at):
            latest[summary.box] = summary
    return [latest[box] for box in sorted(latest)]


def _timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _month_in_period(month: str, date_from: date | None, date_to: date | None) -> bool:
    """Tell whether ``month`` (YYYY-MM) overlaps the period; fleet filters work on whole months."""
    year, number = (int(part) for part in month.split("-"))
    first = date(year, number, 1)
    last = date(year + number // 12, number % 12 + 1, 1)
    if date_from is not None and last <= date_from:
        return False
    return date_to is None or first <= date_to


def _report_year(summaries: list[BoxSummary], date_to: date | None) -> int:
    if date_to is not None:
        return date_to.year
    ends = [date.fromisoformat(summary.period_to) for summary in summaries if summary.period_to]
    if ends:
        return max(ends).year
    if summaries:
        newest = max(summaries, key=lambda summary: _timestamp(summary.generated_at))
        return _timestamp(newest.generated_at).astimezone(ZoneInfo(newest.timezone)).year
    return date.today().year


def _department_plans(summaries: list[BoxSummary]) -> tuple[dict[str, DepartmentPlan], list[str]]:
    newest: dict[str, BoxSummary] = {}
    boxes: dict[str, list[str]] = {}
    conflicting: set[str] = set()
    for summary in sorted(summaries, key=lambda summary: _timestamp(summary.generated_at)):
        known = newest.get(summary.department)
        if known is not None and known.plan != summary.plan:
            conflicting.add(summary.department)
        newest[summary.department] = summary
        boxes.setdefault(summary.department, []).append(summary.box)
    plans = {
        department: DepartmentPlan(department, summary.plan, tuple(sorted(boxes[department])))
        for department, summary in newest.items()
    }
    return plans, sorted(conflicting)


def _count_rows(summaries: list[BoxSummary], date_from: date | None, date_to: date | None) -> list[CountRow]:
    merged: dict[tuple[str, str, str], MonthCount] = {}
    for summary in summaries:
        for count in summary.months:
            if not _month_in_period(count.month, date_from, date_to):
                continue
            key = (summary.department, count.type_code, count.month)
            merged[key] = merged[key] + count if key in merged else count
    return [
        CountRow(department, type_code, month, count.signed, count.uploaded, count.queued, count.failed)
        for (department, type_code, month), count in sorted(merged.items())
    ]


def _progress_rows(summaries: list[BoxSummary], plans: dict[str, DepartmentPlan], year: int) -> list[ProgressRow]:
    digitized: dict[tuple[str, str], Tally] = {}
    uploaded: dict[tuple[str, str], Tally] = {}
    in_year: dict[tuple[str, str], Tally] = {}
    for summary in summaries:
        for count in summary.years:
            if count.year > year:
                continue
            key = (summary.department, count.type_code)
            digitized[key] = digitized.get(key, Tally()) + count.digitized
            uploaded[key] = uploaded.get(key, Tally()) + count.uploaded
            if count.year == year:
                in_year[key] = in_year.get(key, Tally()) + count.digitized

    rows: list[ProgressRow] = []
    for department in sorted(plans):
        plan = plans[department].plan
        type_codes = sorted(set(plan.inventory) | {code for dept, code in digitized if dept == department})
        department_rows = [
            _progress_row(department, code, plan, year, digitized, uploaded, in_year) for code in type_codes
        ]
        if department_rows:
            rows.extend(department_rows)
            rows.append(_total_row(department, plan, year, department_rows))
    return rows


def _progress_row(department, code, plan: PlanSummary, year, digitized, uploaded, in_year) -> ProgressRow:
    key = (department, code)
    inventory = plan.inventory.get(code)
    return ProgressRow(
        department=department,
        type_code=code,
        inventory=inventory,
        digitized=digitized.get(key, Tally()),
        uploaded=uploaded.get(key, Tally()),
        year=year,
        year_digitized=in_year.get(key, Tally()),
        year_target=_year_target(inventory, plan, year),
        expected_percent=plan.expected_percent(year) if inventory else None,
    )


def _year_target(inventory: int | None, plan: PlanSummary, year: int) -> int | None:
    if not inventory:
        return None
    return math.ceil(inventory * plan.target_percent(year) / 100.0)


def _total_row(department: str, plan: PlanSummary, year: int, rows: list[ProgressRow]) -> ProgressRow:
    inventory = sum(plan.inventory.values()) if plan.inventory else None
    total_target = sum(row.year_target or 0 for row in rows) if inventory else None

    def total(attribute: str) -> Tally:
        result = Tally()
        for row in rows:
            result = result + getattr(row, attribute)
        return result

    return ProgressRow(
        department=department,
        type_code=None,
        inventory=inventory,
        digitized=total("digitized"),
        uploaded=total("uploaded"),
        year=year,
        year_digitized=total("year_digitized"),
        year_target=total_target,
        expected_percent=plan.expected_percent(year) if inventory else None,
    )


def _listed_jobs(summaries: list[BoxSummary], attribute: str) -> list[ListedJob]:
    listed = [
        ListedJob(summary.department, summary.box, job) for summary in summaries for job in getattr(summary, attribute)
    ]
    return sorted(listed, key=lambda item: (item.department, item.job.created_at, item.box, item.job.job_id))


def aggregate(
    summaries: Iterable[BoxSummary],
    date_from: date | None = None,
    date_to: date | None = None,
    year: int | None = None,
) -> Report:
    """Aggregate box summaries into one report.

    Only the newest summary of each box counts. ``date_from`` and ``date_to``
    select the month rows that overlap the period, in whole months because a
    summary counts by month. A box that built its summary for a period has
    already applied that period to the day. ``year`` is the plan year to
    compare against, by default the year in which the period ends.
    """
    latest = latest_per_box(summaries)
    report_year = year if year is not None else _report_year(latest, date_to)
    plans, conflicting = _department_plans(latest)

    period_from = date_from.isoformat() if date_from else _common([summary.period_from for summary in latest])
    period_to = date_to.isoformat() if date_to else _common([summary.period_to for summary in latest])
    generated_at = max((summary.generated_at for summary in latest), key=_timestamp, default="")
    return Report(
        generated_at=generated_at,
        period_from=period_from,
        period_to=period_to,
        year=report_year,
        boxes=tuple(summary.box for summary in latest),
        plans=tuple(plans[department] for department in sorted(plans)),
        counts=tuple(_count_rows(latest, date_from, date_to)),
        progress=tuple(_progress_rows(latest, plans, report_year)),
        queued=tuple(_listed_jobs(latest, "queued")),
        failed=tuple(_listed_jobs(latest, "failed")),
        queued_total=sum(summary.queued_total for summary in latest),
        failed_total=sum(summary.failed_total for summary in latest),
        conflicting_plans=tuple(conflicting),
    )


def _common(values: list[str | None]) -> str | None:
    """Return the period bound that every summary shares, else None."""
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None
