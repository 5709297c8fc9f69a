"""The report as aligned text and as CSV."""

from __future__ import annotations

import csv
import io
import unicodedata

from sohoa.report.aggregate import Report
from sohoa.report.sections import Section, format_cell, header_lines, report_sections, report_title

# Excel reads a CSV file as UTF-8 only when it starts with this byte order mark;
# without it Vietnamese letters turn into mojibake.
UTF8_BOM = "\ufeff"


def _width(text: str) -> int:
    """Return the columns that ``text`` takes in a terminal; combining marks take none."""
    return sum(0 if unicodedata.combining(char) else 1 for char in unicodedata.normalize("NFC", text))


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - _width(text))
    return fill + text if right else text + fill


def render_section_table(section: Section) -> list[str]:
    lines = [section.title, "-" * _width(section.title)]
    if not section.rows:
        return lines + [section.empty_text]

    cells = [[format_cell(value, localized=True) for value in row] for row in section.rows]
    numeric = [
        all(isinstance(row[index], (int, float)) or row[index] is None for row in section.rows)
        for index in range(len(section.headers))
    ]
    widths = [
        max([_width(header)] + [_width(row[index]) for row in cells]) for index, header in enumerate(section.headers)
    ]
    lines.append("  ".join(_pad(header, widths[i], numeric[i]) for i, header in enumerate(section.headers)).rstrip())
    lines.append("  ".join("-" * width for width in widths))
    for row in cells:
        lines.append("  ".join(_pad(cell, widths[i], numeric[i]) for i, cell in enumerate(row)).rstrip())
    return lines


def render_table(report: Report) -> str:
    """Render the report as aligned plain text, one table after another."""
    title = report_title()
    lines = [title, "=" * _width(title), *header_lines(report)]
    for section in report_sections(report):
        lines.append("")
        lines.extend(render_section_table(section))
    return "\n".join(lines) + "\n"


def render_csv(report: Report) -> str:
    """Render the report as CSV, starting with a UTF-8 byte order mark.

    The tables follow one another: a row with the table's title, a header
    row, the data rows, then an empty row. Numbers are plain, with a dot as
    the decimal mark and no digit grouping, in every language.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for section in report_sections(report):
        writer.writerow([section.title])
        writer.writerow(section.headers)
        writer.writerows([format_cell(value) for value in row] for row in section.rows)
        writer.writerow([])
    return UTF8_BOM + buffer.getvalue()
