"""The report as an Excel workbook: one sheet per table and a native progress chart."""

from __future__ import annotations

from pathlib import Path

from openpyxl import Workbook
from openpyxl.chart import BarChart, Reference
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from sohoa.fsutil import write_atomic_with
from sohoa.i18n import gettext as _
from sohoa.report.aggregate import Report
from sohoa.report.sections import (
    PROGRESS_DIGITIZED_PERCENT_INDEX,
    PROGRESS_PLANNED_PERCENT_INDEX,
    Section,
    header_lines,
    report_sections,
    report_title,
)

# Excel rejects sheet names longer than 31 characters or containing []:*?/\
SHEET_NAME_MAX = 31
_SHEET_FORBIDDEN = str.maketrans({char: " " for char in "[]:*?/\\"})


def _sheet_name(title: str, used: set[str]) -> str:
    name = title.translate(_SHEET_FORBIDDEN)[:SHEET_NAME_MAX].strip()
    candidate, number = name, 2
    while candidate in used:
        suffix = f" ({number})"
        candidate = name[: SHEET_NAME_MAX - len(suffix)] + suffix
        number += 1
    used.add(candidate)
    return candidate


def _fill_sheet(sheet: Worksheet, section: Section, first_row: int) -> int:
    """Write the section's title, headers and rows from ``first_row``; return the header row."""
    sheet.cell(row=first_row, column=1, value=section.title).font = Font(bold=True, size=12)
    header_row = first_row + 1
    for column, header in enumerate(section.headers, start=1):
        sheet.cell(row=header_row, column=column, value=header).font = Font(bold=True)
    for offset, row in enumerate(section.rows, start=1):
        for column, value in enumerate(row, start=1):
            cell = sheet.cell(row=header_row + offset, column=column, value=value)
            if isinstance(value, float):
                cell.number_format = "0.0"
    if not section.rows:
        sheet.cell(row=header_row + 1, column=1, value=section.empty_text)
    for column, header in enumerate(section.headers, start=1):
        longest = max([len(header)] + [len(str(row[column - 1] or "")) for row in section.rows])
        sheet.column_dimensions[get_column_letter(column)].width = min(60, max(10, longest + 2))
    sheet.freeze_panes = sheet.cell(row=header_row + 1, column=1)
    return header_row


def _add_progress_chart(sheet: Worksheet, section: Section, header_row: int, report: Report) -> None:
    """Chart the percentage of the inventory digitized against the percentage planned, per type."""
    if not section.rows:
        return
    # A helper column joins department and type, so that each bar names both.
    label_column = len(section.headers) + 2
    sheet.cell(row=header_row, column=label_column, value=_("Department / type")).font = Font(bold=True)
    for offset, row in enumerate(section.rows, start=1):
        sheet.cell(row=header_row + offset, column=label_column, value=f"{row[0]} / {row[1]}")
    last_row = header_row + len(section.rows)

    chart = BarChart()
    chart.type = "bar"
    chart.title = _("Digitized and planned share of the inventory, end of {year}").format(year=report.year)
    chart.y_axis.title = "%"
    chart.y_axis.scaling.min = 0
    chart.y_axis.scaling.max = 100
    data = Reference(
        sheet,
        min_col=PROGRESS_DIGITIZED_PERCENT_INDEX + 1,
        max_col=PROGRESS_PLANNED_PERCENT_INDEX + 1,
        min_row=header_row,
        max_row=last_row,
    )
    categories = Reference(sheet, min_col=label_column, min_row=header_row + 1, max_row=last_row)
    chart.add_data(data, titles_from_data=True)
    chart.set_categories(categories)
    chart.height = max(7.5, 1.0 * len(section.rows) + 3)
    chart.width = 24
    sheet.add_chart(chart, f"A{last_row + 3}")


def build_workbook(report: Report) -> Workbook:
    workbook = Workbook()
    summary = workbook.active
    used: set[str] = set()
    summary.title = _sheet_name(_("Progress"), used)
    summary.cell(row=1, column=1, value=report_title()).font = Font(bold=True, size=14)
    lines = header_lines(report)
    for offset, line in enumerate(lines, start=2):
        summary.cell(row=offset, column=1, value=line)

    sections = report_sections(report)
    progress = sections[0]
    header_row = _fill_sheet(summary, progress, first_row=len(lines) + 3)
    _add_progress_chart(summary, progress, header_row, report)

    titles = {"months": _("By month"), "queued": _("Queued"), "failed": _("Failed")}
    for section in sections[1:]:
        sheet = workbook.create_sheet(_sheet_name(titles[section.key], used))
        _fill_sheet(sheet, section, first_row=1)
    return workbook


def write_xlsx(report: Report, path: Path) -> None:
    """Write the report as an .xlsx workbook at ``path``, atomically."""
    workbook = build_workbook(report)
    write_atomic_with(Path(path), lambda temporary: workbook.save(temporary), suffix=".xlsx")
