"""The invisible text layer: recognised lines as an OCRmyPDF element tree.

OCRmyPDF's fpdf2 renderer places each word with its own horizontal scaling so
that the invisible glyphs cover the word's pixels, which makes selection and
search in a viewer line up with the image. The recogniser reports whole
lines, so word boxes are estimated here by splitting each line box in
proportion to the advance widths of the words in the renderer's default font.
"""

from __future__ import annotations

import logging
import unicodedata
from functools import lru_cache
from pathlib import Path

import ocrmypdf
from ocrmypdf.font import MultiFontManager
from ocrmypdf.models.ocr_element import BoundingBox, OcrClass, OcrElement

from sohoa.ocr import PageText, TextLine

log = logging.getLogger(__name__)

# The renderer measures and positions words with this font, bundled with OCRmyPDF.
TEXT_LAYER_FONT = "NotoSans-Regular"
OCRMYPDF_FONT_DIR = Path(ocrmypdf.__file__).parent / "data"


@lru_cache(maxsize=1)
def font_manager() -> MultiFontManager:
    """Return the shared font manager; loading fonts takes a noticeable moment on a small board."""
    return MultiFontManager(OCRMYPDF_FONT_DIR)


def advance_width(text: str) -> float:
    """Return the advance width of ``text`` in em units of the text-layer font."""
    font = font_manager().fonts[TEXT_LAYER_FONT]
    hb_font = font.get_hb_font()
    units_per_em = font.hb_face.upem
    fallback = units_per_em / 2
    total = 0.0
    for char in text:
        glyph = hb_font.get_nominal_glyph(ord(char))
        total += hb_font.get_glyph_h_advance(glyph) if glyph else fallback
    return total / units_per_em


def split_line_into_words(text: str, box: tuple[float, float, float, float]) -> list[OcrElement]:
    """Return one word element per whitespace-separated word, boxes proportional to width."""
    words = text.split()
    if not words:
        return []
    x0, y0, x1, y1 = box
    space = advance_width(" ")
    widths = [advance_width(word) for word in words]
    natural = sum(widths) + space * (len(words) - 1)
    scale = (x1 - x0) / natural if natural > 0 else 0.0

    elements = []
    left = x0
    for word, width in zip(words, widths, strict=True):
        right = min(x1, left + width * scale)
        elements.append(OcrElement(ocr_class=OcrClass.WORD, bbox=BoundingBox(left, y0, right, y1), text=word))
        left = right + space * scale
    return elements


def scaled_box(line: TextLine, scale_x: float, scale_y: float, width: int, height: int) -> tuple[float, float, float, float] | None:
    """Return the line box in image pixels, clipped to the page, or None if it is empty."""
    x0, y0, x1, y1 = line.box
    left = max(0.0, min(x0, x1) * scale_x)
    right = min(float(width), max(x0, x1) * scale_x)
    top = max(0.0, min(y0, y1) * scale_y)
    bottom = min(float(height), max(y0, y1) * scale_y)
    if right - left < 1 or bottom - top < 1:
        return None
    return left, top, right, bottom


def page_element(text: PageText, image_width: int, image_height: int, dpi: int) -> OcrElement:
    """Build the ``ocr_page > ocr_line > ocrx_word`` tree of one page, in image pixels.

    Boxes are rescaled when the recogniser worked on an image of another size
    than the one embedded. Text is normalised to NFC so that extracted text
    compares equal to text typed on a Vietnamese keyboard.
    """
    if (text.width, text.height) != (image_width, image_height):
        log.warning(
            "OCR page size %dx%d differs from image size %dx%d; rescaling line boxes",
            text.width,
            text.height,
            image_width,
            image_height,
        )
    scale_x = image_width / text.width if text.width > 0 else 1.0
    scale_y = image_height / text.height if text.height > 0 else 1.0

    lines = []
    for line in text.lines:
        box = scaled_box(line, scale_x, scale_y, image_width, image_height)
        words = split_line_into_words(unicodedata.normalize("NFC", line.text), box) if box else []
        if not words:
            continue
        lines.append(OcrElement(ocr_class=OcrClass.LINE, bbox=BoundingBox(*box), children=words, language="vie"))

    return OcrElement(
        ocr_class=OcrClass.PAGE,
        bbox=BoundingBox(0, 0, image_width, image_height),
        children=lines,
        dpi=float(dpi),
    )
