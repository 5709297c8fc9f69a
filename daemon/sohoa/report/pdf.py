"""The report as a PDF: header, a progress chart drawn with fpdf2, then the tables."""

from __future__ import annotations

from pathlib import Path

from fpdf import FPDF
from fpdf.fonts import FontFace

from sohoa.errors import ReportError
from sohoa.fsutil import write_atomic
from sohoa.i18n import N_, gettext as _
from sohoa.report.aggregate import ProgressRow, Report
from sohoa.report.sections import Section, format_cell, header_lines, report_sections, report_title, type_label

FONT_FAMILY = "ReportSans"
# Fonts with Vietnamese letters, tried in order: fonts-noto-core, then fonts-dejavu-core.
FONT_CANDIDATES = (
    (Path("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf"), Path("/usr/share/fonts/truetype/noto/NotoSans-Bold.ttf")),
    (Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"), Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")),
)
BAR_HEIGHT_MM = 5.0
BAR_GAP_MM = 2.5
LABEL_WIDTH_MM = 80.0
DIGITIZED_RGB = (46, 125, 50)
PLANNED_RGB = (198, 40, 40)


def _font_files() -> tuple[Path, Path]:
    for regular, bold in FONT_CANDIDATES:
        if regular.is_file() and bold.is_file():
            return regular, bold
    raise ReportError(
        N_("No font with Vietnamese letters found for the PDF report (looked for {paths}). Install fonts-noto-core."),
        paths=", ".join(str(regular) for regular, _bold in FONT_CANDIDATES),
    )


def _new_document() -> FPDF:
    regular, bold = _font_files()
    pdf = FPDF(orientation="L", unit="mm", format="A4")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.set_margins(12, 12, 12)
    pdf.add_font(FONT_FAMILY, fname=str(regular))
    pdf.add_font(FONT_FAMILY, style="B", fname=str(bold))
    pdf.set_title(report_title())
    pdf.set_creator("sohoa")
    pdf.add_page()
    return pdf


def _write_header(pdf: FPDF, report: Report) -> None:
    pdf.set_font(FONT_FAMILY, style="B", size=16)
    pdf.cell(text=report_title(), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT_FAMILY, size=9)
    for line in header_lines(report):
        pdf.multi_cell(w=0, h=5, text=line, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)


def _chart_rows(report: Report) -> list[ProgressRow]:
    return [row for row in report.progress if row.percent_of_inventory is not None]


def _draw_legend(pdf: FPDF, x: float, y: float, report: Report) -> None:
    pdf.set_font(FONT_FAMILY, size=8)
    pdf.set_fill_color(*DIGITIZED_RGB)
    pdf.rect(x, y + 1, 4, 3, style="F")
    pdf.set_xy(x + 5, y)
    # xgettext: no-python-format
    pdf.cell(text=_("% of inventory digitized"))
    x = pdf.get_x() + 8
    pdf.set_draw_color(*PLANNED_RGB)
    pdf.set_line_width(0.8)
    pdf.line(x + 2, y, x + 2, y + 5)
    pdf.set_xy(x + 5, y)
    # xgettext: no-python-format
    pdf.cell(text=_("% planned by end of {year}").format(year=report.year))
    pdf.set_line_width(0.2)


def _draw_chart(pdf: FPDF, report: Report) -> None:
    """Draw one horizontal bar per type: the share digitized, with a mark at the share planned."""
    rows = _chart_rows(report)
    if not rows:
        return
    pdf.set_font(FONT_FAMILY, style="B", size=11)
    pdf.cell(
        text=_("Digitized and planned share of the inventory, end of {year}").format(year=report.year),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    _draw_legend(pdf, pdf.l_margin, pdf.get_y() + 1, report)
    pdf.ln(8)

    left = pdf.l_margin + LABEL_WIDTH_MM
    scale_width = pdf.w - pdf.r_margin - left - 15
    for row in rows:
        if pdf.get_y() + BAR_HEIGHT_MM + BAR_GAP_MM > pdf.h - pdf.b_margin:
            pdf.add_page()
        top = pdf.get_y()
        pdf.set_font(FONT_FAMILY, style="B" if row.type_code is None else "", size=8)
        pdf.set_xy(pdf.l_margin, top)
        pdf.cell(w=LABEL_WIDTH_MM - 2, h=BAR_HEIGHT_MM, text=f"{row.department} / {type_label(row.type_code)}", align="R")

        pdf.set_draw_color(160, 160, 160)
        pdf.rect(left, top, scale_width, BAR_HEIGHT_MM, style="D")
        share = min(100.0, row.percent_of_inventory or 0.0)
        if share > 0:
            pdf.set_fill_color(*DIGITIZED_RGB)
            pdf.rect(left, top, scale_width * share / 100.0, BAR_HEIGHT_MM, style="F")
        if row.expected_percent is not None:
            planned_x = left + scale_width * min(100.0, row.expected_percent) / 100.0
            pdf.set_draw_color(*PLANNED_RGB)
            pdf.set_line_width(0.8)
            pdf.line(planned_x, top - 0.8, planned_x, top + BAR_HEIGHT_MM + 0.8)
            pdf.set_line_width(0.2)
        pdf.set_xy(left + scale_width + 1, top)
        pdf.cell(w=14, h=BAR_HEIGHT_MM, text=f"{format_cell(row.percent_of_inventory, localized=True)}%")
        pdf.set_y(top + BAR_HEIGHT_MM + BAR_GAP_MM)
    pdf.set_draw_color(0, 0, 0)
    pdf.ln(4)


def _write_section(pdf: FPDF, section: Section) -> None:
    pdf.set_font(FONT_FAMILY, style="B", size=11)
    pdf.multi_cell(w=0, h=7, text=section.title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT_FAMILY, size=7)
    # The table fills cells with the current fill colour, which the chart changed.
    pdf.set_fill_color(255, 255, 255)
    if not section.rows:
        pdf.multi_cell(w=0, h=5, text=section.empty_text, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
        return
    with pdf.table(
        headings_style=FontFace(emphasis="BOLD", fill_color=(230, 230, 230)),
        line_height=4,
        text_align="LEFT",
        padding=1,
    ) as table:
        heading = table.row()
        for header in section.headers:
            heading.cell(header)
        for values in section.rows:
            row = table.row()
            for value in values:
                row.cell(format_cell(value, localized=True))
    pdf.ln(4)


def render_pdf(report: Report) -> bytes:
    """Render the report as PDF bytes."""
    pdf = _new_document()
    _write_header(pdf, report)
    _draw_chart(pdf, report)
    for section in report_sections(report):
        _write_section(pdf, section)
    return bytes(pdf.output())


def write_pdf(report: Report, path: Path) -> None:
    """Write the report as a PDF at ``path``, atomically."""
    write_atomic(Path(path), render_pdf(report))
