"""Rendered Vietnamese page images with known line boxes, for PDF and pipeline tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from sohoa.ocr import PageText, TextLine

TEST_FONT_PATH = Path("/usr/share/fonts/truetype/liberation2/LiberationSerif-Regular.ttf")
A4_INCHES = (210 / 25.4, 297 / 25.4)

DECISION_LINES = (
    "SỞ GIÁO DỤC VÀ ĐÀO TẠO",
    "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
    "Độc lập - Tự do - Hạnh phúc",
    "Số: 15/QĐ-SGDĐT",
    "QUYẾT ĐỊNH",
    "Về việc công nhận tốt nghiệp trung học phổ thông năm 2026",
    "Điều 1. Công nhận tốt nghiệp cho học sinh có tên trong danh sách kèm theo.",
)


def render_page(
    path: Path,
    lines: Sequence[str] = DECISION_LINES,
    *,
    dpi: int = 200,
    mode: str = "L",
    font_points: float = 13.0,
    top_inches: float = 1.0,
    left_inches: float = 1.0,
    line_spacing: float = 2.0,
) -> PageText:
    """Draw ``lines`` in Liberation Serif on a white A4 page, save it as PNG, return its exact text.

    Each line box is the ink box Pillow reports for the drawn text, in pixels
    of the saved image, so a test can compute where every word lies. ``mode`` is a
    Pillow mode: ``1`` (bilevel), ``L`` (grey) or ``RGB`` (colour, with a red
    seal drawn under the text).
    """
    width, height = round(A4_INCHES[0] * dpi), round(A4_INCHES[1] * dpi)
    image = Image.new("RGB" if mode == "RGB" else "L", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(TEST_FONT_PATH), round(font_points * dpi / 72))
    if mode == "RGB":
        centre_x, centre_y, radius = width * 0.7, height * 0.45, dpi * 0.8
        draw.ellipse((centre_x - radius, centre_y - radius, centre_x + radius, centre_y + radius), outline=(210, 20, 20), width=dpi // 25)

    text_lines = []
    y = top_inches * dpi
    x = left_inches * dpi
    for text in lines:
        box = draw.textbbox((x, y), text, font=font)
        draw.text((x, y), text, font=font, fill="black")
        text_lines.append(TextLine(text=text, box=tuple(int(round(v)) for v in box), confidence=0.99))
        y += font_points * dpi / 72 * line_spacing

    if mode == "1":
        image = image.convert("1", dither=Image.Dither.NONE)
    image.save(path, format="PNG")
    return PageText(width=width, height=height, lines=tuple(text_lines))


def word_box_pixels(page: PageText, line_index: int, word: str, font_points: float = 13.0, dpi: int = 200) -> tuple[float, float]:
    """Return the left and right pixel edges of ``word`` in a line drawn by :func:`render_page`."""
    text = page.lines[line_index].text
    start = text.index(word)
    font = ImageFont.truetype(str(TEST_FONT_PATH), round(font_points * dpi / 72))
    x0 = page.lines[line_index].box[0] - font.getbbox(text)[0]
    left = x0 + font.getlength(text[:start]) + font.getbbox(word)[0]
    return left, left + font.getbbox(word)[2] - font.getbbox(word)[0]
