"""The visible conversion mark on page 1: who converted the paper, when, and a QR code.

The mark goes in the bottom margin because the top left and top right of
page 1 are reserved for the signature boxes of the operator and of the unit. It is sized to
the blank band below the lowest ink on the page; when the page has no blank
band tall enough, the mark is drawn at the bottom edge over a white box, and
a warning is logged because it may hide content.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy
import qrcode
from fpdf import FPDF
from PIL import Image

from sohoa.i18n import _

log = logging.getLogger(__name__)

MARK_FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoSerif-Regular.ttf")
MARK_FONT_FAMILY = "NotoSerif"

# Sizes in PDF points (1/72 inch).
PREFERRED_HEIGHT_PT = 44.0
MIN_HEIGHT_PT = 24.0
EDGE_MARGIN_PT = 10.0  # between the mark and the bottom edge of the page
CONTENT_GAP_PT = 6.0  # between the lowest ink and the top of the mark
SIDE_MARGIN_PT = 28.0
QR_TEXT_GAP_PT = 6.0
QR_QUIET_MODULES = 4
LINE_SPACING = 1.25  # baseline-to-baseline distance as a multiple of the font size
MIN_FONT_SIZE_PT = 4.0

# A pixel darker than this (0-255 grey) is ink. A row contains ink when it has
# more ink pixels than INK_ROW_FRACTION of the page width, so that dust
# specks do not count as content.
INK_THRESHOLD = 128
INK_ROW_FRACTION = 0.001


@dataclass(frozen=True)
class ConversionMark:
    """The facts the mark of conversion states, and the data of its QR code."""

    converted_at: datetime  # timezone-aware
    operator: str  # full name of the person who scanned
    unit: str  # full name of the converting unit
    doc_code: str  # e.g. G06.01_QĐ_000021_V1
    pages_sha256: str  # SHA-256 over the page images, for the QR code

    def __post_init__(self) -> None:
        if self.converted_at.tzinfo is None or self.converted_at.utcoffset() is None:
            raise ValueError(f"ConversionMark.converted_at must be timezone-aware, got {self.converted_at!r}")


@dataclass(frozen=True)
class MarkPlacement:
    """Position and height of the mark on page 1, in points from the top-left corner."""

    x: float
    y: float
    height: float
    over_content: bool


def format_conversion_time(moment: datetime) -> str:
    """Return ``dd/mm/yyyy hh:mm:ss (UTC+hh:mm)``, the date order used in Vietnam."""
    offset = moment.strftime("%z")
    return f"{moment:%d/%m/%Y %H:%M:%S} (UTC{offset[:3]}:{offset[3:]})"


def mark_lines(mark: ConversionMark) -> list[str]:
    """Return the mark's text lines in the selected language, NFC-normalised."""
    lines = [
        _("Electronic copy converted from a paper original"),
        _("Conversion time: {time}").format(time=format_conversion_time(mark.converted_at)),
        _("Converted by: {operator}").format(operator=mark.operator),
        _("Converting unit: {unit}").format(unit=mark.unit),
    ]
    return [unicodedata.normalize("NFC", line) for line in lines]


def qr_payload(mark: ConversionMark) -> str:
    """Return the text the QR code carries: the document code and the SHA-256 of its pages."""
    return f"DocCode={mark.doc_code};PagesSHA256={mark.pages_sha256}"


def qr_matrix(payload: str) -> list[list[bool]]:
    """Return the QR code's modules, True for dark, without a quiet zone."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=0)
    code.add_data(payload.encode("utf-8"))
    code.make(fit=True)
    return code.get_matrix()


def lowest_ink_row(image: Image.Image, below_row: int) -> int | None:
    """Return the lowest pixel row above ``below_row`` that contains ink, or None for a blank page."""
    grey = numpy.asarray(image.convert("L"))[:below_row]
    ink_per_row = (grey < INK_THRESHOLD).sum(axis=1)
    min_ink = max(2, int(grey.shape[1] * INK_ROW_FRACTION))
    rows = numpy.flatnonzero(ink_per_row > min_ink)
    return int(rows[-1]) if rows.size else None


def place_mark(image: Image.Image, dpi: int) -> MarkPlacement:
    """Fit the mark into the blank band at the bottom of page 1."""
    points_per_pixel = 72.0 / dpi
    page_height_pt = image.height * points_per_pixel
    band_bottom_pt = page_height_pt - EDGE_MARGIN_PT
    x = SIDE_MARGIN_PT

    last_ink = lowest_ink_row(image, below_row=int(band_bottom_pt / points_per_pixel))
    band_top_pt = CONTENT_GAP_PT if last_ink is None else (last_ink + 1) * points_per_pixel + CONTENT_GAP_PT
    available = band_bottom_pt - band_top_pt
    if available >= MIN_HEIGHT_PT:
        height = min(PREFERRED_HEIGHT_PT, available)
        return MarkPlacement(x=x, y=band_bottom_pt - height, height=height, over_content=False)

    log.warning(
        "Page 1 has no blank band of %.0f pt at the bottom (%.1f pt free); the conversion mark covers the bottom edge",
        MIN_HEIGHT_PT,
        max(available, 0.0),
    )
    height = min(MIN_HEIGHT_PT, page_height_pt - 2 * EDGE_MARGIN_PT)
    return MarkPlacement(x=x, y=band_bottom_pt - height, height=height, over_content=True)


def draw_qr(pdf: FPDF, matrix: list[list[bool]], x: float, y: float, size: float) -> None:
    """Draw the QR code as filled vector rectangles, one per run of dark modules in a row."""
    module = size / len(matrix)
    pdf.set_fill_color(0)
    for row_index, row in enumerate(matrix):
        column = 0
        while column < len(row):
            if not row[column]:
                column += 1
                continue
            start = column
            while column < len(row) and row[column]:
                column += 1
            pdf.rect(x + start * module, y + row_index * module, (column - start) * module, module, style="F")


def fit_font_size(pdf: FPDF, lines: list[str], height: float, width: float) -> float:
    """Return the largest font size at which the lines fill ``height`` and fit ``width``."""
    size = height / (len(lines) * LINE_SPACING)
    pdf.set_font(MARK_FONT_FAMILY, size=size)
    widest = max(pdf.get_string_width(line) for line in lines)
    if widest > width > 0:
        size *= width / widest
    if size < MIN_FONT_SIZE_PT:
        log.warning("Conversion mark text is %.1f pt, below %.1f pt; it may be hard to read", size, MIN_FONT_SIZE_PT)
    pdf.set_font(MARK_FONT_FAMILY, size=size)
    return size


def draw_mark(pdf: FPDF, mark: ConversionMark, placement: MarkPlacement) -> None:
    """Draw the mark on the current fpdf2 page: a white box if needed, the QR code, the lines of text."""
    pdf.add_font(MARK_FONT_FAMILY, fname=str(MARK_FONT_PATH))
    lines = mark_lines(mark)
    qr_size = placement.height
    text_x = placement.x + qr_size + QR_TEXT_GAP_PT
    text_width = pdf.w - SIDE_MARGIN_PT - text_x
    size = fit_font_size(pdf, lines, placement.height, text_width)

    matrix = qr_matrix(qr_payload(mark))
    if placement.over_content:
        # The white box keeps the quiet zone of four modules that QR readers need.
        padding = QR_QUIET_MODULES * qr_size / len(matrix)
        widest = max(pdf.get_string_width(line) for line in lines)
        pdf.set_fill_color(255)
        pdf.rect(
            placement.x - padding,
            placement.y - padding,
            text_x - placement.x + widest + 2 * padding,
            placement.height + 2 * padding,
            style="F",
        )

    draw_qr(pdf, matrix, placement.x, placement.y, qr_size)

    pdf.set_text_color(0)
    leading = size * LINE_SPACING
    block_top = placement.y + (placement.height - leading * len(lines)) / 2
    for index, line in enumerate(lines):
        baseline = block_top + leading * index + size
        pdf.text(text_x, baseline, line)
