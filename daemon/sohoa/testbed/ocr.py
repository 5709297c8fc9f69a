"""Rendered Vietnamese administrative pages with known text, for OCR tests and calibration.

Pages are drawn with Pillow in a TrueType font that covers Vietnamese
(U+1EA0-U+1EF9): Liberation Serif 2.x or Noto Serif. Debian's older
``fonts-liberation`` 1.07 lacks those letters, so fonts are checked before use.
"""

from __future__ import annotations

import io
import random
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIRS = (Path("/usr/share/fonts/truetype/liberation2"), Path("/usr/share/fonts/truetype/noto"))
SERIF_FONTS = {
    "liberation": ("LiberationSerif-Regular.ttf", "LiberationSerif-Bold.ttf"),
    "noto": ("NotoSerif-Regular.ttf", "NotoSerif-Bold.ttf"),
}
A4_INCHES = (8.27, 11.69)
COVERAGE_PROBE = "ẠặẾệỌợỰỹĐđ"

HEADER_LEFT = ("UBND TỈNH BÌNH ĐỊNH", "SỞ GIÁO DỤC VÀ ĐÀO TẠO")
HEADER_RIGHT = ("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Độc lập - Tự do - Hạnh phúc")
TITLE = ("QUYẾT ĐỊNH", "Về việc công nhận tốt nghiệp trung học phổ thông")

DECISION_BODY = (
    "GIÁM ĐỐC SỞ GIÁO DỤC VÀ ĐÀO TẠO",
    "Căn cứ Luật Giáo dục ngày 14 tháng 6 năm 2019;",
    "Căn cứ Thông tư số 15/2020/TT-BGDĐT ngày 26 tháng 5 năm 2020 của Bộ trưởng",
    "Bộ Giáo dục và Đào tạo ban hành Quy chế thi tốt nghiệp trung học phổ thông;",
    "Xét đề nghị của Trưởng phòng Khảo thí và Quản lý chất lượng giáo dục.",
    "QUYẾT ĐỊNH:",
    "Điều 1. Công nhận tốt nghiệp trung học phổ thông năm 2024 cho 1.245 học sinh",
    "có tên trong danh sách kèm theo Quyết định này.",
    "Điều 2. Quyết định này có hiệu lực kể từ ngày ký. Chánh Văn phòng Sở,",
    "Trưởng phòng Khảo thí, Hiệu trưởng các trường trung học phổ thông và các",
    "học sinh có tên tại Điều 1 chịu trách nhiệm thi hành Quyết định này.",
)

# Further sentences of the same register, used to vary calibration pages.
EXTRA_BODY = (
    "Căn cứ Nghị định số 30/2020/NĐ-CP ngày 05 tháng 3 năm 2020 của Chính phủ về công tác văn thư;",
    "Theo đề nghị của Chủ tịch Hội đồng xét duyệt hồ sơ học sinh lưu ban, bỏ học.",
    "Các đơn vị trực thuộc báo cáo kết quả thực hiện trước ngày 30 tháng 9 năm 2024.",
    "Kinh phí thực hiện được bố trí từ nguồn ngân sách sự nghiệp giáo dục năm học 2024 - 2025.",
    "Phòng Giáo dục và Đào tạo các huyện, thị xã, thành phố tổ chức kiểm tra, giám sát.",
    "Học sinh được cấp bằng tốt nghiệp phải có điểm trung bình các môn thi đạt từ 5,0 trở lên.",
    "Hồ sơ gồm: đơn đề nghị, bản sao giấy khai sinh, học bạ và giấy chứng nhận tạm thời.",
    "Trong quá trình thực hiện, nếu có vướng mắc, đề nghị phản ánh kịp thời về Sở để xử lý.",
    "Nơi nhận: Như Điều 2; Bộ GDĐT (để báo cáo); UBND tỉnh (để báo cáo); Lưu: VT, KTQLCLGD.",
    "Thời gian nộp hồ sơ: từ 7 giờ 30 phút đến 16 giờ 30 phút các ngày làm việc trong tuần.",
    "Ủy ban nhân dân xã Phước Thuận, huyện Tuy Phước; Trường Trung học cơ sở Nguyễn Huệ.",
    "Số điện thoại liên hệ: 0256 3822 456; thư điện tử: sogd@binhdinh.gov.vn.",
)

SIGNATURE_LEFT = ("Nơi nhận:", "- Như Điều 2;", "- Lưu: VT, KTQLCLGD.")
SIGNATURE_RIGHT = ("KT. GIÁM ĐỐC", "PHÓ GIÁM ĐỐC", "Nguyễn Văn Hùng")


@dataclass(frozen=True)
class RenderedLine:
    """A line drawn on a page: its text and its ink box (x0, y0, x1, y1) in page pixels."""

    text: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class RenderedPage:
    image: Image.Image
    lines: tuple[RenderedLine, ...]

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


def find_font(family: str = "liberation", bold: bool = False) -> Path:
    """Return the path of a serif font with Vietnamese letters, or raise FileNotFoundError."""
    name = SERIF_FONTS[family][1 if bold else 0]
    for directory in FONT_DIRS:
        path = directory / name
        if path.is_file() and covers_vietnamese(path):
            return path
    raise FileNotFoundError(f"{name} with Vietnamese letters not found in {', '.join(map(str, FONT_DIRS))}")


def covers_vietnamese(path: Path) -> bool:
    """Return True if the font draws every probe letter as a distinct glyph, not as a missing-glyph box."""
    font = ImageFont.truetype(str(path), 40)

    def glyph(letter: str) -> bytes:
        canvas = Image.new("L", (60, 60), 0)
        ImageDraw.Draw(canvas).text((5, 5), letter, font=font, fill=255)
        return canvas.tobytes()

    missing = glyph("\uffff")
    return all(glyph(letter) != missing for letter in COVERAGE_PROBE)


def render_decision_page(
    dpi: int = 300, family: str = "liberation", body: tuple[str, ...] = DECISION_BODY, size_pt: float = 13.0
) -> RenderedPage:
    """Draw a one-page decision: two-column header, title, body and signature block."""
    width, height = (int(round(side * dpi)) for side in A4_INCHES)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    regular = ImageFont.truetype(str(find_font(family)), int(round(size_pt * dpi / 72)))
    bold = ImageFont.truetype(str(find_font(family, bold=True)), int(round(size_pt * dpi / 72)))
    line_step = int(round(size_pt * 1.5 * dpi / 72))
    margin_left, margin_right = int(1.2 * dpi), int(0.8 * dpi)
    left_center, right_center = margin_left + int(1.3 * dpi), width - margin_right - int(1.75 * dpi)
    # Header and signature block are set one point smaller than the body.
    header_size = int(round((size_pt - 1) * dpi / 72))
    header_regular = ImageFont.truetype(str(find_font(family)), header_size)
    header_bold = ImageFont.truetype(str(find_font(family, bold=True)), header_size)
    lines: list[RenderedLine] = []

    def put(text: str, x: float, y: float, font: ImageFont.FreeTypeFont, anchor: str = "la") -> None:
        draw.text((x, y), text, font=font, fill="black", anchor=anchor)
        x0, y0, x1, y1 = draw.textbbox((x, y), text, font=font, anchor=anchor)
        lines.append(RenderedLine(text=text, box=(int(x0), int(y0), int(x1), int(y1))))

    top = int(0.8 * dpi)
    for row, text in enumerate(HEADER_LEFT):
        put(text, left_center, top + row * line_step, header_bold if row else header_regular, anchor="ma")
    for row, text in enumerate(HEADER_RIGHT):
        put(text, right_center, top + row * line_step, header_bold, anchor="ma")

    y = top + 4 * line_step
    for text in TITLE:
        put(text, width / 2, y, bold, anchor="ma")
        y += line_step
    y += line_step
    for paragraph in body:
        for text in wrap_text(draw, paragraph, regular, width - margin_left - margin_right):
            put(text, margin_left, y, regular)
            y += line_step

    y += line_step
    signature_top = y
    for row, text in enumerate(SIGNATURE_LEFT):
        put(text, margin_left, signature_top + row * line_step, header_regular)
    for row, text in enumerate(SIGNATURE_RIGHT):
        # The signer's name sits below the space for the handwritten signature.
        row_y = signature_top + (row + 3 if row == 2 else row) * line_step
        put(text, right_center, row_y, header_bold, anchor="ma")
    return RenderedPage(image=image, lines=tuple(lines))


def wrap_text(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, max_width: float) -> list[str]:
    """Break ``text`` at spaces into lines no wider than ``max_width`` pixels."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if current and draw.textlength(candidate, font=font) > max_width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def degrade_like_office_scan(image: Image.Image, seed: int, max_rotation_degrees: float = 1.5) -> Image.Image:
    """Return ``image`` rotated slightly, blurred, with sensor noise and JPEG artefacts."""
    rng = random.Random(seed)
    angle = rng.uniform(-max_rotation_degrees, max_rotation_degrees)
    rotated = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False, fillcolor="white")
    blurred = rotated.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.4, 0.9)))

    noise = np.random.default_rng(seed).normal(0.0, 6.0, size=(blurred.height, blurred.width, 1))
    noisy = np.clip(np.asarray(blurred, dtype=np.float32) - 8.0 + noise, 0, 255).astype(np.uint8)

    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="JPEG", quality=rng.randint(70, 88))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def stamp_seal(image: Image.Image, center: tuple[int, int], radius: int) -> Image.Image:
    """Return ``image`` with a red round seal printed over it, multiplied like ink on paper."""
    seal = Image.new("RGB", image.size, "white")
    draw = ImageDraw.Draw(seal)
    red = (210, 40, 45)
    x, y = center
    for ring_radius, width in ((radius, max(3, radius // 25)), (int(radius * 0.62), max(2, radius // 40))):
        draw.ellipse((x - ring_radius, y - ring_radius, x + ring_radius, y + ring_radius), outline=red, width=width)
    star = [
        (x + radius * 0.3 * np.cos(np.pi / 2 + k * np.pi / 5) * (1 if k % 2 == 0 else 0.4),
         y - radius * 0.3 * np.sin(np.pi / 2 + k * np.pi / 5) * (1 if k % 2 == 0 else 0.4))
        for k in range(10)
    ]
    draw.polygon(star, fill=red)
    font = ImageFont.truetype(str(find_font(bold=True)), max(10, radius // 7))
    for index, letter in enumerate("SỞ GIÁO DỤC VÀ ĐÀO TẠO * TỈNH"):
        angle = np.pi * (1.1 - index / 14.5)
        position = (x + radius * 0.81 * np.cos(angle), y - radius * 0.81 * np.sin(angle))
        draw.text(position, letter, font=font, fill=red, anchor="mm")
    page = np.asarray(image.convert("RGB"), dtype=np.uint16)
    ink = np.asarray(seal, dtype=np.uint16)
    return Image.fromarray((page * ink // 255).astype(np.uint8))


def degrade_like_poor_copy(image: Image.Image, seed: int, seal_center: tuple[int, int] | None = None) -> Image.Image:
    """Return ``image`` as a poor photocopy: seal, uneven light, rotation up to 3 degrees, blur, specks, JPEG."""
    rng = random.Random(seed)
    if seal_center is not None:
        image = stamp_seal(image, seal_center, radius=int(image.width * 0.085))

    width, height = image.size
    light = np.linspace(rng.uniform(0.72, 0.85), 1.0, width, dtype=np.float32)[np.newaxis, :, np.newaxis]
    lit = Image.fromarray((np.asarray(image, dtype=np.float32) * light).astype(np.uint8))
    rotated = lit.rotate(rng.uniform(-3.0, 3.0), resample=Image.Resampling.BICUBIC, fillcolor="white")
    blurred = np.asarray(rotated.filter(ImageFilter.GaussianBlur(radius=rng.uniform(1.0, 1.4)))).copy()

    specks = np.random.default_rng(seed)
    count = width * height // 500
    rows, columns = specks.integers(0, height, count), specks.integers(0, width, count)
    blurred[rows, columns] = specks.choice([0, 255], size=(count, 1))

    buffer = io.BytesIO()
    Image.fromarray(blurred).save(buffer, format="JPEG", quality=rng.randint(60, 72))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def calibration_pages(count: int = 4, dpi: int = 300) -> list[Image.Image]:
    """Return varied pages (fonts, sizes, text, scan quality) for quantization calibration."""
    pages = []
    for index in range(count):
        rng = random.Random(1000 + index)
        body = tuple(rng.sample(EXTRA_BODY, k=len(EXTRA_BODY)))
        family = "noto" if index % 2 else "liberation"
        page = render_decision_page(dpi=dpi, family=family, body=body, size_pt=rng.choice((12.0, 13.0, 14.0)))
        pages.append(degrade_like_office_scan(page.image, seed=index) if index % 2 == 0 else page.image)
    return pages


def normalize_text(text: str) -> str:
    """Return ``text`` in NFC with runs of whitespace made single spaces."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def edit_distance(first: str, second: str) -> int:
    """Return the Levenshtein distance between two strings."""
    previous = list(range(len(second) + 1))
    for row, first_char in enumerate(first, start=1):
        current = [row]
        for column, second_char in enumerate(second, start=1):
            current.append(
                min(previous[column] + 1, current[column - 1] + 1, previous[column - 1] + (first_char != second_char))
            )
        previous = current
    return previous[-1]


def line_matched_cer(reference_lines: list[str], output_lines: list[str]) -> float:
    """Return the character error rate of ``output_lines`` against ``reference_lines``.

    Each reference line is compared with the output line closest to it, so
    reading order does not count here; check it separately.
    """
    references = [normalize_text(line) for line in reference_lines if normalize_text(line)]
    outputs = [normalize_text(line) for line in output_lines]
    errors = 0
    for reference in references:
        errors += min((edit_distance(reference, output) for output in outputs), default=len(reference))
    return errors / max(1, sum(len(reference) for reference in references))


# --- Metrics for the OCR benchmark ---------------------------------------------

# Letters whose diacritic is part of the base shape rather than a combining mark in NFD.
STROKED_LETTERS = {"đ": "d", "Đ": "D"}


def fast_edit_distance(first: str, second: str) -> int:
    """Return the Levenshtein distance with Hyyrö's bit-parallel algorithm, for page-long strings.

    Python integers serve as bit vectors as long as ``first``, so a 2,000
    character page costs 2,000 big-integer steps instead of 4 million cells.
    """
    if not first:
        return len(second)
    if not second:
        return len(first)
    length = len(first)
    full = (1 << length) - 1
    last = 1 << (length - 1)
    positions: dict[str, int] = {}
    for index, char in enumerate(first):
        positions[char] = positions.get(char, 0) | (1 << index)

    plus, minus, score = full, 0, length
    for char in second:
        equal = positions.get(char, 0)
        vertical = equal | minus
        horizontal = ((((equal & plus) + plus) & full) ^ plus) | equal
        plus_h = minus | (~(horizontal | plus) & full)
        minus_h = plus & horizontal
        if plus_h & last:
            score += 1
        elif minus_h & last:
            score -= 1
        plus_h = ((plus_h << 1) | 1) & full
        minus_h = (minus_h << 1) & full
        plus = minus_h | (~(vertical | plus_h) & full)
        minus = plus_h & vertical
    return score


def page_cer(reference_lines: list[str], output_lines: list[str]) -> float:
    """Return the character error rate of the whole page text, so reading order counts.

    Lines are joined with single spaces in the order given, on both sides.
    """
    reference = normalize_text(" ".join(reference_lines))
    output = normalize_text(" ".join(output_lines))
    return fast_edit_distance(reference, output) / max(1, len(reference))


def has_diacritic(char: str) -> bool:
    """Return True for a letter with a tone or vowel mark (its NFD has a combining mark) and for đ, Đ."""
    if char in STROKED_LETTERS:
        return True
    return any(unicodedata.combining(mark) for mark in unicodedata.normalize("NFD", char)[1:])


def base_letter(char: str) -> str:
    """Return ``char`` without its marks: ``ế`` gives ``e``, ``Đ`` gives ``D``."""
    if char in STROKED_LETTERS:
        return STROKED_LETTERS[char]
    return unicodedata.normalize("NFD", char)[0]


def best_span(reference: str, text: str) -> tuple[int, list[tuple[str | None, str | None]]]:
    """Return the edit distance of ``reference`` to its closest substring of ``text``, and their alignment.

    The end of the best substring is found with the bit-parallel search
    (Myers), then a window of ``text`` ending there is aligned cell by cell.
    """
    if not reference:
        return 0, []
    length = len(reference)
    full = (1 << length) - 1
    last = 1 << (length - 1)
    positions: dict[str, int] = {}
    for index, char in enumerate(reference):
        positions[char] = positions.get(char, 0) | (1 << index)

    plus, minus, score = full, 0, length
    best_score, best_end = length, 0
    for end, char in enumerate(text, start=1):
        equal = positions.get(char, 0)
        vertical = equal | minus
        horizontal = ((((equal & plus) + plus) & full) ^ plus) | equal
        plus_h = minus | (~(horizontal | plus) & full)
        minus_h = plus & horizontal
        if plus_h & last:
            score += 1
        elif minus_h & last:
            score -= 1
        # Without the carried-in 1 the first row stays 0: a match may start anywhere.
        plus_h = (plus_h << 1) & full
        minus_h = (minus_h << 1) & full
        plus = minus_h | (~(vertical | plus_h) & full)
        minus = plus_h & vertical
        if score < best_score:
            best_score, best_end = score, end

    window = text[max(0, best_end - 2 * length) : best_end]
    return best_score, _align_suffix(reference, window)


def _align_suffix(reference: str, window: str) -> list[tuple[str | None, str | None]]:
    """Align ``reference`` with the best substring of ``window`` that ends at its end."""
    rows, columns = len(reference), len(window)
    cost = np.zeros((rows + 1, columns + 1), dtype=np.int32)
    cost[:, 0] = np.arange(rows + 1)
    for row in range(1, rows + 1):
        for column in range(1, columns + 1):
            cost[row, column] = min(
                cost[row - 1, column] + 1,
                cost[row, column - 1] + 1,
                cost[row - 1, column - 1] + (reference[row - 1] != window[column - 1]),
            )
    pairs: list[tuple[str | None, str | None]] = []
    row, column = rows, columns
    while row:
        if column and cost[row, column] == cost[row - 1, column - 1] + (reference[row - 1] != window[column - 1]):
            pairs.append((reference[row - 1], window[column - 1]))
            row, column = row - 1, column - 1
        elif cost[row, column] == cost[row - 1, column] + 1:
            pairs.append((reference[row - 1], None))
            row -= 1
        else:
            pairs.append((None, window[column - 1]))
            column -= 1
    return pairs[::-1]


@dataclass(frozen=True)
class LineMatchedErrors:
    """Error counts of a page's output against its reference lines.

    Each reference line is compared with its closest span of the whole
    output text (lines joined with spaces), so neither reading order nor
    two columns joined into one output line count here. ``diacritic_errors``
    counts reference letters with a diacritic (see :func:`has_diacritic`)
    that were deleted or replaced by another character. ``wrong_mark_errors``
    is the part of those replaced by the same base letter with other marks
    (``ổ`` read as ``ố``, ``đ`` as ``d``). Word errors are counted on the
    aligned span, words being runs of characters between spaces.
    """

    characters: int
    character_errors: int
    words: int
    word_errors: int
    diacritic_letters: int
    diacritic_errors: int
    wrong_mark_errors: int


def line_matched_errors(reference_lines: list[str], output_lines: list[str]) -> LineMatchedErrors:
    """Count character, word and diacritic errors of each reference line against its closest output span."""
    references = [normalize_text(line) for line in reference_lines if normalize_text(line)]
    output = normalize_text(" ".join(output_lines))
    characters = character_errors = words = word_errors = 0
    diacritic_letters = diacritic_errors = wrong_mark_errors = 0
    for reference in references:
        distance, pairs = best_span(reference, output)
        span = "".join(actual for _, actual in pairs if actual is not None)
        characters += len(reference)
        character_errors += distance
        reference_words = reference.split()
        words += len(reference_words)
        word_errors += edit_distance(reference_words, span.split())  # type: ignore[arg-type]

        for expected, actual in pairs:
            if expected is None or not has_diacritic(expected):
                continue
            diacritic_letters += 1
            if actual != expected:
                diacritic_errors += 1
                if actual is not None and base_letter(actual) == base_letter(expected):
                    wrong_mark_errors += 1
    return LineMatchedErrors(
        characters, character_errors, words, word_errors, diacritic_letters, diacritic_errors, wrong_mark_errors
    )
