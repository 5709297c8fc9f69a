"""The report laid out as titled tables of cells, shared by every output format.

Cells keep their type (int, float, str, None) so that the spreadsheet gets
numbers. Text formats turn them into text with :func:`format_cell`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sohoa.i18n import N_, current_language, gettext as _
from sohoa.report.aggregate import ListedJob, ProgressRow, Report

Cell = int | float | str | None

# Digit group and decimal marks: Vietnamese writes 12.000 and 3,5, English 12,000 and 3.5.
NUMBER_MARKS = {"vi": str.maketrans({",": ".", ".": ","}), "en": str.maketrans({})}

STATE_LABELS = {
    "scanning": N_("scanning"),
    "interrupted": N_("interrupted (waiting for the next press)"),
    "collecting": N_("flatbed document open (waiting for more pages)"),
    "captured": N_("waiting for text recognition"),
    "recognized": N_("waiting for the PDF to be built"),
    "built": N_("waiting for signature"),
    "signed": N_("waiting for upload"),
    "uploaded": N_("uploaded to the archive"),
    "failed": N_("failed, needs a person"),
    "cancelled": N_("cancelled by staff (pages kept)"),
}


@dataclass(frozen=True)
class Section:
    """One table of the report. ``key`` names it for code: progress, months, queued or failed."""

    key: str
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    empty_text: str = ""


def format_cell(value: Cell, localized: bool = False) -> str:
    """Format a cell as text: percentages with one decimal, None as empty.

    ``localized`` groups digits and picks the decimal mark of the user's
    language, for people to read. Without it numbers stay plain, for machines.
    """
    if value is None:
        return ""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if is_number and localized:
        text = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
        return text.translate(NUMBER_MARKS.get(current_language(), NUMBER_MARKS["en"]))
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def type_label(type_code: str | None) -> str:
    return type_code if type_code is not None else _("All types")


def report_title() -> str:
    return _("Digitization progress report")


def header_lines(report: Report) -> list[str]:
    """Return the lines above the tables: period, time, boxes, counting rule and plans."""
    if report.period_from or report.period_to:
        period = _("Period: {start} to {end}").format(
            start=report.period_from or _("the first scan"), end=report.period_to or _("today")
        )
    else:
        period = _("Period: all dates")
    lines = [
        period,
        _("Generated at: {time}").format(time=report.generated_at or "-"),
        _("Boxes: {boxes}").format(boxes=", ".join(report.boxes) or "-"),
        _("A document counts as digitized once it is signed; uploaded documents are counted among them."),
    ]
    for entry in report.plans:
        plan = entry.plan
        if plan.start_year is None:
            # xgettext: no-python-format
            lines.append(_("Plan of {department}: no inventory configured.").format(department=entry.department))
            continue
        lines.append(
            # xgettext: no-python-format
            _("Plan of {department}: from {start_year}, {percent}% of the inventory a year, deadline {deadline}.").format(
                department=entry.department,
                start_year=plan.start_year,
                percent=format_cell(float(plan.yearly_target_percent), localized=True),
                deadline=plan.deadline or _("not set"),
            )
        )
    for department in report.conflicting_plans:
        lines.append(
            _("Warning: the boxes of {department} have different plans; the newest one is used.").format(
                department=department
            )
        )
    return lines


def progress_section(report: Report) -> Section:
    year = report.year
    headers = (
        _("Department"),
        _("Document type"),
        _("Paper inventory"),
        _("Digitized documents"),
        _("Digitized pages"),
        _("Uploaded documents"),
        # xgettext: no-python-format
        _("% of inventory"),
        # xgettext: no-python-format
        _("% planned by end of {year}").format(year=year),
        _("Target for {year}").format(year=year),
        _("Digitized in {year}").format(year=year),
        # xgettext: no-python-format
        _("% of target for {year}").format(year=year),
    )
    return Section(
        key="progress",
        title=_("Progress against the plan for {year}").format(year=year),
        headers=headers,
        rows=tuple(_progress_cells(row) for row in report.progress),
        empty_text=_("No plan and no digitized documents."),
    )


# Positions, from 0, of "% of inventory" and "% planned by end of year" in a progress row.
PROGRESS_DIGITIZED_PERCENT_INDEX = 6
PROGRESS_PLANNED_PERCENT_INDEX = 7


def _progress_cells(row: ProgressRow) -> tuple[Cell, ...]:
    return (
        row.department,
        type_label(row.type_code),
        row.inventory,
        row.digitized.documents,
        row.digitized.pages,
        row.uploaded.documents,
        _rounded(row.percent_of_inventory),
        _rounded(row.expected_percent),
        row.year_target,
        row.year_digitized.documents,
        _rounded(row.percent_of_year_target),
    )


def months_section(report: Report) -> Section:
    headers = (
        _("Department"),
        _("Document type"),
        _("Month"),
        _("Signed, waiting for upload"),
        _("Uploaded"),
        _("Digitized documents"),
        _("Digitized pages"),
        _("Queued"),
        _("Failed"),
    )
    rows = tuple(
        (
            row.department,
            row.type_code,
            row.month,
            row.signed.documents,
            row.uploaded.documents,
            row.digitized.documents,
            row.digitized.pages,
            row.queued.documents,
            row.failed.documents,
        )
        for row in report.counts
    )
    return Section(
        key="months",
        title=_("Documents by month of scan"),
        headers=headers,
        rows=rows,
        empty_text=_("No documents scanned in this period."),
    )


def _job_section(key: str, title: str, jobs: tuple[ListedJob, ...], total: int, empty_text: str) -> Section:
    headers = (
        _("Department"),
        _("Box"),
        _("Job"),
        _("DocCode"),
        _("Document type"),
        _("State"),
        _("Pages"),
        _("Scan started"),
        _("Error"),
    )
    rows = tuple(
        (
            item.department,
            item.box,
            item.job.job_id,
            item.job.doc_code,
            item.job.type_code,
            _(STATE_LABELS.get(item.job.state, item.job.state)),
            item.job.pages,
            item.job.created_at,
            " ".join(part for part in (item.job.error_code, item.job.error_message) if part) or None,
        )
        for item in jobs
    )
    if total > len(jobs):
        title = title + " " + _("(the first {listed} are listed)").format(listed=len(jobs))
    return Section(key=key, title=title.format(total=total), headers=headers, rows=rows, empty_text=empty_text)


def report_sections(report: Report) -> list[Section]:
    """Return the report's tables in display order."""
    return [
        progress_section(report),
        months_section(report),
        _job_section(
            "queued",
            _("Documents still in work on the boxes: {total}"),
            report.queued,
            report.queued_total,
            _("No documents waiting."),
        ),
        _job_section(
            "failed",
            _("Failed documents that need a person: {total}"),
            report.failed,
            report.failed_total,
            _("No failed documents."),
        ),
    ]
