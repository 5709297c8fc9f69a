"""Render the sample pages: fictional Vietnamese administrative documents, as if scanned.

Each page is laid out like an official document: A4, 300 dpi, and Times New
Roman metrics through Liberation Serif 2.x, which covers Vietnamese. It gets a
red seal and a blue signature, then is degraded like a scan with a fixed seed.
The output goes to ``samples/pages/``: ``<doc>-p<N>.png``, the text lines of
each page in ``<doc>-p<N>.txt`` and the document's metadata in ``<doc>.json``.

Run ``python samples/render.py``. The same Pillow, FreeType and zlib give the
same bytes on every run.
"""

from __future__ import annotations

import io
import json
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

OUTPUT_DIR = Path(__file__).resolve().parent / "pages"
FONT_DIR = Path("/usr/share/fonts/truetype/liberation2")
DPI = 300
PAGE_WIDTH, PAGE_HEIGHT = 2480, 3508  # A4 at 300 dpi
MM = DPI / 25.4
LEFT_MARGIN, RIGHT_MARGIN = round(30 * MM), round(20 * MM)
TOP_MARGIN, BOTTOM_MARGIN = round(20 * MM), round(20 * MM)
CONTENT_RIGHT = PAGE_WIDTH - RIGHT_MARGIN
LEFT_BLOCK_CENTER = LEFT_MARGIN + 340  # centre of the issuing body and "Nơi nhận" blocks
RIGHT_BLOCK_CENTER = 1700  # centre of the national motto and signer blocks
SEAL_RED = (205, 32, 44)
SIGNATURE_BLUE = (24, 48, 160)
PAPER_WHITE_LEVEL = 236  # a scanner's white point: lighter pixels become pure white
SEED = 20240115


def points(size: float) -> int:
    """Return a font size in pixels at 300 dpi for ``size`` typographic points."""
    return round(size * DPI / 72)


def load_font(style: str, size_pt: float) -> ImageFont.FreeTypeFont:
    path = FONT_DIR / f"LiberationSerif-{style}.ttf"
    if not path.exists():
        sys.exit(f"Font {path} not found: install the Debian package fonts-liberation2 (2.x covers Vietnamese).")
    return ImageFont.truetype(str(path), points(size_pt))


FONTS = {
    "header": load_font("Regular", 13),
    "header_bold": load_font("Bold", 13),
    "motto": load_font("Bold", 12.5),
    "motto_sub": load_font("Bold", 13.5),
    "date": load_font("Italic", 13.5),
    "number": load_font("Regular", 13.5),
    "type": load_font("Bold", 14.5),
    "subject": load_font("Bold", 14),
    "body": load_font("Regular", 14),
    "body_bold": load_font("Bold", 14),
    "recipients_title": load_font("BoldItalic", 12),
    "recipients": load_font("Regular", 11),
    "signer": load_font("Bold", 13.5),
    "seal": load_font("Bold", 11),
}


@dataclass
class Paragraph:
    """Body text: ``justify`` for running text, else one line as written, indented by ``indent`` px."""

    text: str
    justify: bool = True
    indent: int = 150
    font: str = "body"
    centered: bool = False


@dataclass
class Document:
    name: str
    parent_body: str
    issuing_body: str
    number: str
    place_date: str
    type_line: str
    subject_lines: list[str]
    authority_line: str | None
    pages: list[list[Paragraph]]  # body paragraphs of each page, page breaks as printed
    recipients: list[str]
    signer_lines: list[str]
    signer_name: str
    seal_text: str
    metadata: dict[str, object]
    color_pages: set[int] = field(default_factory=set)


class PageCanvas:
    """One page being drawn, recording every text line in reading order."""

    def __init__(self) -> None:
        self.image = Image.new("RGB", (PAGE_WIDTH, PAGE_HEIGHT), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.lines: list[str] = []

    def text(self, x: float, baseline: float, text: str, font: str, anchor: str = "ls") -> tuple[float, float]:
        """Draw ``text`` with its baseline at ``baseline`` and return its left and right x."""
        self.draw.text((x, baseline), text, font=FONTS[font], fill="black", anchor=anchor)
        self.lines.append(text)
        left, _top, right, _bottom = self.draw.textbbox((x, baseline), text, font=FONTS[font], anchor=anchor)
        return left, right

    def centered(self, center: float, baseline: float, text: str, font: str) -> tuple[float, float]:
        return self.text(center, baseline, text, font, anchor="ms")

    def rule(self, left: float, right: float, y: float, width: int = 3) -> None:
        self.draw.line([(left, y), (right, y)], fill="black", width=width)

    def justified(self, left: float, right: float, baseline: float, words: list[str], font: str) -> None:
        """Draw ``words`` spread from ``left`` to ``right``, recording them joined by single spaces."""
        widths = [FONTS[font].getlength(word) for word in words]
        gap = (right - left - sum(widths)) / max(len(words) - 1, 1)
        x = left
        for word, width in zip(words, widths):
            self.draw.text((x, baseline), word, font=FONTS[font], fill="black", anchor="ls")
            x += width + gap
        self.lines.append(" ".join(words))


def wrap_words(text: str, font: str, first_width: float, width: float) -> list[list[str]]:
    """Split ``text`` into lines of words that fit, the first line ``first_width`` wide."""
    lines: list[list[str]] = [[]]
    for word in text.split():
        limit = first_width if len(lines) == 1 else width
        candidate = " ".join(lines[-1] + [word])
        if lines[-1] and FONTS[font].getlength(candidate) > limit:
            lines.append([word])
        else:
            lines[-1].append(word)
    return lines


def line_height(font: str) -> int:
    return round(FONTS[font].size * 1.22)


def draw_header(canvas: PageCanvas, document: Document) -> float:
    """Draw the issuing body (left block) and the national motto (right block), returning the next baseline."""
    top = TOP_MARGIN + points(13)
    row = line_height("header")

    # Left block, read first: parent body, issuing body, number.
    canvas.centered(LEFT_BLOCK_CENTER, top, document.parent_body, "header")
    left, right = canvas.centered(LEFT_BLOCK_CENTER, top + row, document.issuing_body, "header_bold")
    third = (right - left) / 3
    canvas.rule(left + third, right - third, top + row + 30)
    number_baseline = top + 3 * row + 10
    canvas.centered(LEFT_BLOCK_CENTER, number_baseline, document.number, "number")

    # Right block: motto, underlined sub-motto, then place and date on the number's line.
    motto_left, _ = canvas.centered(RIGHT_BLOCK_CENTER, top, "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "motto")
    if motto_left <= right + 20:
        raise SystemExit(f"Header blocks overlap on {document.name}: move LEFT_BLOCK_CENTER or RIGHT_BLOCK_CENTER")
    left, right = canvas.centered(RIGHT_BLOCK_CENTER, top + row, "Độc lập - Tự do - Hạnh phúc", "motto_sub")
    canvas.rule(left, right, top + row + 30)
    canvas.centered(RIGHT_BLOCK_CENTER, number_baseline, document.place_date, "date")
    return number_baseline + 2 * row


def draw_title(canvas: PageCanvas, document: Document, baseline: float) -> float:
    center = (LEFT_MARGIN + CONTENT_RIGHT) / 2
    canvas.centered(center, baseline, document.type_line, "type")
    baseline += line_height("type")
    for line in document.subject_lines:
        left, right = canvas.centered(center, baseline, line, "subject")
        baseline += line_height("subject")
    canvas.rule(center - 180, center + 180, baseline - line_height("subject") + 40)
    baseline += 50
    if document.authority_line:
        canvas.centered(center, baseline, document.authority_line, "body_bold")
        baseline += line_height("body") + 30
    return baseline


def draw_paragraphs(canvas: PageCanvas, paragraphs: list[Paragraph], baseline: float) -> float:
    width = CONTENT_RIGHT - LEFT_MARGIN
    for paragraph in paragraphs:
        if paragraph.centered:
            canvas.centered((LEFT_MARGIN + CONTENT_RIGHT) / 2, baseline, paragraph.text, paragraph.font)
            baseline += line_height(paragraph.font) + 25
            continue
        if not paragraph.justify:
            canvas.text(LEFT_MARGIN + paragraph.indent, baseline, paragraph.text, paragraph.font)
            baseline += line_height(paragraph.font) + 8
            continue
        lines = wrap_words(paragraph.text, paragraph.font, width - paragraph.indent, width)
        for number, words in enumerate(lines):
            left = LEFT_MARGIN + (paragraph.indent if number == 0 else 0)
            if number == len(lines) - 1:
                canvas.text(left, baseline, " ".join(words), paragraph.font)
            else:
                canvas.justified(left, CONTENT_RIGHT, baseline, words, paragraph.font)
            baseline += line_height(paragraph.font)
        baseline += 25
    if baseline > PAGE_HEIGHT - BOTTOM_MARGIN:
        raise SystemExit("Body text runs past the bottom margin: move a paragraph to the next page")
    return baseline


def draw_footer(canvas: PageCanvas, document: Document, baseline: float, rng: random.Random) -> None:
    """Draw "Nơi nhận" (left block, read first), then the signer block with seal and signature."""
    top = baseline + 30
    canvas.text(LEFT_MARGIN, top, "Nơi nhận:", "recipients_title")
    for number, recipient in enumerate(document.recipients, start=1):
        canvas.text(LEFT_MARGIN, top + number * line_height("recipients"), recipient, "recipients")

    row = line_height("signer")
    for number, line in enumerate(document.signer_lines):
        canvas.centered(RIGHT_BLOCK_CENTER, top + number * row, line, "signer")
    name_baseline = top + (len(document.signer_lines) - 1) * row + 420
    canvas.centered(RIGHT_BLOCK_CENTER, name_baseline, document.signer_name, "signer")
    if name_baseline > PAGE_HEIGHT - BOTTOM_MARGIN:
        raise SystemExit("Signer block runs past the bottom margin: move a paragraph to the next page")

    signature_middle = (top + name_baseline) / 2 + 20
    stamp_signature(canvas.image, (RIGHT_BLOCK_CENTER + 40, signature_middle), rng)
    stamp_seal(canvas.image, (RIGHT_BLOCK_CENTER - 200, signature_middle - 40), document.seal_text, rng)


def ink(image: Image.Image, coverage: Image.Image, color: tuple[int, int, int]) -> None:
    """Multiply ``color`` into ``image`` where ``coverage`` (L, 255 = full ink) is set, like ink over print."""
    page = np.asarray(image, dtype=np.float32)
    alpha = np.asarray(coverage, dtype=np.float32)[..., None] / 255.0
    tint = np.array(color, dtype=np.float32) / 255.0
    page *= 1.0 - alpha * (1.0 - tint)
    image.paste(Image.fromarray(page.round().astype(np.uint8)))


def stamp_seal(image: Image.Image, center: tuple[float, float], text: str, rng: random.Random) -> None:
    """Press a round seal: two rings, ``text`` around the inside of the outer ring and a star."""
    radius = round(19 * MM)
    size = 2 * radius + 20
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    middle = size / 2
    draw.ellipse([middle - radius, middle - radius, middle + radius, middle + radius], outline=255, width=12)
    inner = radius - 95
    draw.ellipse([middle - inner, middle - inner, middle + inner, middle + inner], outline=255, width=5)

    # Letters upright towards the centre, clockwise from the lower left.
    font = FONTS["seal"]
    text_radius = radius - 52
    step = 360 / (len(text) + 2)
    for number, letter in enumerate(text):
        angle = 215 + number * step
        glyph = Image.new("L", (90, 90), 0)
        ImageDraw.Draw(glyph).text((45, 45), letter, font=font, fill=255, anchor="mm")
        glyph = glyph.rotate(-angle, resample=Image.BICUBIC)
        x = middle + text_radius * math.sin(math.radians(angle)) - 45
        y = middle - text_radius * math.cos(math.radians(angle)) - 45
        mask.paste(255, (round(x), round(y)), glyph)

    star = []
    for corner in range(10):
        reach = 70 if corner % 2 == 0 else 28
        angle = math.radians(corner * 36)
        star.append((middle + reach * math.sin(angle), middle - reach * math.cos(angle)))
    draw.polygon(star, fill=255)

    # Uneven ink: the seal is pressed a little harder on one side.
    gradient = np.linspace(0.72, 0.95, size, dtype=np.float32)[None, :]
    speckle = np.random.default_rng(rng.randrange(1 << 30)).uniform(0.8, 1.0, (size, size)).astype(np.float32)
    coverage = np.asarray(mask, dtype=np.float32) * gradient * speckle
    coverage_image = Image.fromarray(coverage.astype(np.uint8)).rotate(rng.uniform(-20, 20), resample=Image.BICUBIC)
    layer = Image.new("L", image.size, 0)
    layer.paste(coverage_image, (round(center[0] - middle), round(center[1] - middle)))
    ink(image, layer.filter(ImageFilter.GaussianBlur(1.2)), SEAL_RED)


def stamp_signature(image: Image.Image, center: tuple[float, float], rng: random.Random) -> None:
    """Draw a pen scribble through smooth random loops around ``center``."""
    anchors = [
        (center[0] - 250 + index * 42 + rng.uniform(-30, 30), center[1] + (-1) ** index * rng.uniform(30, 120))
        for index in range(13)
    ]
    path = []
    for index in range(1, len(anchors) - 2):
        p0, p1, p2, p3 = anchors[index - 1 : index + 3]
        for step in range(24):
            t = step / 24
            # Catmull-Rom spline through the anchors.
            path.append(
                tuple(
                    0.5 * (2 * b + (-a + c) * t + (2 * a - 5 * b + 4 * c - d) * t * t + (-a + 3 * b - 3 * c + d) * t**3)
                    for a, b, c, d in zip(p0, p1, p2, p3)
                )
            )
    path.append((path[-1][0] + 160, path[-1][1] - 40))
    layer = Image.new("L", image.size, 0)
    ImageDraw.Draw(layer).line(path, fill=230, width=6, joint="curve")
    ink(image, layer.filter(ImageFilter.GaussianBlur(0.8)), SIGNATURE_BLUE)


def degrade(image: Image.Image, rng: random.Random, color: bool) -> Image.Image:
    """Make a clean page look scanned: skew, blur, sensor noise, JPEG artefacts, white point."""
    image = image.rotate(rng.uniform(-1.0, 1.0), resample=Image.BICUBIC, fillcolor="white")
    image = image.filter(ImageFilter.GaussianBlur(1.0))

    pixels = np.asarray(image, dtype=np.float32)
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0.0, 5.0, pixels.shape[:2]).astype(np.float32)
    pixels = np.clip(pixels + noise[..., None], 0, 255).round().astype(np.uint8)
    image = Image.fromarray(pixels)

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=75)
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if not color:
        image = image.convert("L")

    pixels = np.asarray(image).copy()
    light = pixels.min(axis=-1) if color else pixels
    pixels[light >= PAPER_WHITE_LEVEL] = 255
    return Image.fromarray(pixels)


def render_document(document: Document, seed: int) -> None:
    rng = random.Random(seed)
    for page_number, paragraphs in enumerate(document.pages, start=1):
        canvas = PageCanvas()
        if page_number == 1:
            baseline = draw_header(canvas, document)
            baseline = draw_title(canvas, document, baseline)
        else:
            # Pages after the first carry their number, centred in the top margin.
            canvas.centered(PAGE_WIDTH / 2, round(12 * MM), str(page_number), "header")
            baseline = TOP_MARGIN + points(14) + 20
        baseline = draw_paragraphs(canvas, paragraphs, baseline)
        if page_number == len(document.pages):
            draw_footer(canvas, document, baseline, rng)

        color = page_number in document.color_pages
        scanned = degrade(canvas.image, rng, color)
        stem = f"{document.name}-p{page_number}"
        scanned.save(OUTPUT_DIR / f"{stem}.png", format="PNG", dpi=(DPI, DPI), optimize=True)
        (OUTPUT_DIR / f"{stem}.txt").write_text("\n".join(canvas.lines) + "\n", encoding="utf-8")
        print(f"{stem}.png: {len(canvas.lines)} lines, {'colour' if color else 'grey'}")

    metadata = dict(document.metadata, PageAmount=len(document.pages), Language="vi")
    (OUTPUT_DIR / f"{document.name}.json").write_text(
        json.dumps(metadata, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )


# The documents. Every person, number and identity number is made up.
ORGAN = "SỞ GIÁO DỤC VÀ ĐÀO TẠO"
PARENT = "UBND TỈNH QUẢNG NAM"
SEAL_TEXT = "SỞ GIÁO DỤC VÀ ĐÀO TẠO • TỈNH QUẢNG NAM •"
DEPUTY = ["KT. GIÁM ĐỐC", "PHÓ GIÁM ĐỐC"]
DEPUTY_POSITION = " ".join(DEPUTY)


def clause(text: str) -> Paragraph:
    return Paragraph(text)


def entry(text: str) -> Paragraph:
    """Make one line of a form-like list, not justified."""
    return Paragraph(text, justify=False, indent=150)


DECISION = Document(
    name="quyet-dinh",
    parent_body=PARENT,
    issuing_body=ORGAN,
    number="Số: 123/QĐ-SGDĐT",
    place_date="Quảng Nam, ngày 15 tháng 01 năm 2024",
    type_line="QUYẾT ĐỊNH",
    subject_lines=["Về việc công nhận tốt nghiệp trung học phổ thông năm 2023 (đợt bổ sung)"],
    authority_line="GIÁM ĐỐC SỞ GIÁO DỤC VÀ ĐÀO TẠO",
    pages=[
        [
            clause("Căn cứ Luật Giáo dục ngày 14 tháng 6 năm 2019;"),
            clause(
                "Căn cứ Quyết định số 25/2021/QĐ-UBND ngày 20 tháng 8 năm 2021 của Ủy ban nhân dân tỉnh Quảng Nam "
                "quy định chức năng, nhiệm vụ, quyền hạn và cơ cấu tổ chức của Sở Giáo dục và Đào tạo;"
            ),
            clause(
                "Căn cứ Quy chế thi tốt nghiệp trung học phổ thông ban hành kèm theo Thông tư số 15/2020/TT-BGDĐT "
                "ngày 26 tháng 5 năm 2020 của Bộ trưởng Bộ Giáo dục và Đào tạo;"
            ),
            clause(
                "Căn cứ kết quả xét công nhận tốt nghiệp của Hội đồng xét công nhận tốt nghiệp các trường "
                "trung học phổ thông trên địa bàn tỉnh tại phiên họp ngày 10 tháng 01 năm 2024;"
            ),
            clause("Theo đề nghị của Trưởng phòng Quản lý chất lượng."),
            Paragraph("QUYẾT ĐỊNH:", font="body_bold", centered=True),
            clause(
                "Điều 1. Công nhận tốt nghiệp trung học phổ thông năm 2023 (đợt bổ sung) cho 27 (hai mươi bảy) "
                "thí sinh có tên trong danh sách kèm theo Quyết định này."
            ),
            clause(
                "Điều 2. Hiệu trưởng các trường trung học phổ thông có thí sinh được công nhận tốt nghiệp có trách "
                "nhiệm thông báo kết quả cho thí sinh, lập hồ sơ đề nghị cấp bằng tốt nghiệp và gửi về Sở Giáo dục "
                "và Đào tạo trước ngày 31 tháng 01 năm 2024."
            ),
            clause(
                "Giấy chứng nhận tốt nghiệp tạm thời được cấp cho thí sinh trong thời gian chờ cấp bằng, có giá trị "
                "đến khi thí sinh nhận bằng tốt nghiệp chính thức."
            ),
        ],
        [
            clause(
                "Điều 3. Quyết định này có hiệu lực kể từ ngày ký. Chánh Văn phòng Sở, Trưởng phòng Quản lý chất "
                "lượng, Trưởng phòng Giáo dục trung học, Hiệu trưởng các trường trung học phổ thông có tên tại "
                "Điều 2 và các thí sinh có tên trong danh sách chịu trách nhiệm thi hành Quyết định này./."
            ),
        ],
    ],
    recipients=["- Như Điều 3;", "- Bộ GDĐT (để báo cáo);", "- UBND tỉnh (để báo cáo);", "- Lưu: VT, QLCL."],
    signer_lines=DEPUTY,
    signer_name="Phạm Quốc Hưng",
    seal_text=SEAL_TEXT,
    metadata={
        "TypeName": "Quyết định",
        "CodeNumber": "123",
        "CodeNotation": "QĐ-SGDĐT",
        "IssuedDate": "2024-01-15",
        "OrganName": ORGAN,
        "Subject": "Về việc công nhận tốt nghiệp trung học phổ thông năm 2023 (đợt bổ sung)",
        "Position": DEPUTY_POSITION,
        "FullName": "Phạm Quốc Hưng",
    },
    color_pages={2},
)

LICENCE = Document(
    name="giay-phep",
    parent_body=PARENT,
    issuing_body=ORGAN,
    number="Số: 45/GP-SGDĐT",
    place_date="Quảng Nam, ngày 12 tháng 02 năm 2024",
    type_line="GIẤY PHÉP",
    subject_lines=["Tổ chức hoạt động dạy thêm, học thêm"],
    authority_line="GIÁM ĐỐC SỞ GIÁO DỤC VÀ ĐÀO TẠO",
    pages=[
        [
            clause("Căn cứ Luật Giáo dục ngày 14 tháng 6 năm 2019;"),
            clause(
                "Căn cứ Thông tư số 17/2012/TT-BGDĐT ngày 16 tháng 5 năm 2012 của Bộ trưởng Bộ Giáo dục và Đào tạo "
                "ban hành Quy định về dạy thêm, học thêm;"
            ),
            clause(
                "Xét hồ sơ đề nghị cấp giấy phép tổ chức hoạt động dạy thêm, học thêm của bà Trần Thị Minh Hoa "
                "nộp ngày 29 tháng 01 năm 2024;"
            ),
            clause("Theo đề nghị của Trưởng phòng Giáo dục trung học."),
            Paragraph("CẤP PHÉP:", font="body_bold", centered=True),
            clause("Điều 1. Cho phép tổ chức hoạt động dạy thêm, học thêm ngoài nhà trường:"),
            entry("Họ và tên: Trần Thị Minh Hoa"),
            entry("Ngày sinh: 08/11/1985"),
            entry("Số CCCD: 049185000123"),
            entry("Địa điểm: số 27 đường Hùng Vương, phường An Mỹ, thành phố Tam Kỳ"),
            entry("Môn dạy thêm: Toán, Vật lý; đối tượng: học sinh trung học phổ thông"),
            clause(
                "Điều 2. Giấy phép có giá trị 24 tháng kể từ ngày ký. Người được cấp phép có trách nhiệm thực hiện "
                "đúng quy định về dạy thêm, học thêm và chịu sự kiểm tra, thanh tra của cơ quan quản lý giáo dục./."
            ),
        ],
    ],
    recipients=["- Như Điều 1;", "- UBND thành phố Tam Kỳ;", "- Lưu: VT, GDTrH."],
    signer_lines=DEPUTY,
    signer_name="Lê Thị Ngọc Ánh",
    seal_text=SEAL_TEXT,
    metadata={
        "TypeName": "Giấy phép",
        "CodeNumber": "45",
        "CodeNotation": "GP-SGDĐT",
        "IssuedDate": "2024-02-12",
        "OrganName": ORGAN,
        "Subject": "Tổ chức hoạt động dạy thêm, học thêm",
        "Position": DEPUTY_POSITION,
        "FullName": "Lê Thị Ngọc Ánh",
        "OwnerName": "Trần Thị Minh Hoa",
        "OwnerIdentity": "049185000123",
    },
    color_pages={1},
)

DIPLOMA_COPY = Document(
    name="ban-sao-bang",
    parent_body=PARENT,
    issuing_body=ORGAN,
    number="Số: 78/BS-SGDĐT",
    place_date="Quảng Nam, ngày 20 tháng 11 năm 2024",
    type_line="BẢN SAO BẰNG TỐT NGHIỆP TRUNG HỌC PHỔ THÔNG",
    subject_lines=["Cấp từ sổ gốc cấp bằng tốt nghiệp năm 2024"],
    authority_line="GIÁM ĐỐC SỞ GIÁO DỤC VÀ ĐÀO TẠO TỈNH QUẢNG NAM",
    pages=[
        [
            clause("Chứng nhận người có tên dưới đây đã tốt nghiệp trung học phổ thông năm 2024:"),
            entry("Họ và tên: Lê Thị Thu Trang"),
            entry("Ngày sinh: 14/03/2006"),
            entry("Nơi sinh: Quảng Nam"),
            entry("Giới tính: Nữ"),
            entry("Số định danh cá nhân: 049306001234"),
            entry("Học sinh trường: Trung học phổ thông Lê Quý Đôn"),
            entry("Xếp loại: Khá"),
            entry("Số hiệu bằng: QN-0123456"),
            entry("Số vào sổ gốc cấp bằng: 1234/2024"),
            clause(
                "Bản sao này được cấp từ sổ gốc cấp bằng tốt nghiệp trung học phổ thông năm 2024 do Sở Giáo dục và "
                "Đào tạo quản lý và có giá trị sử dụng thay cho bản chính trong các giao dịch."
            ),
        ],
    ],
    recipients=["- Người được cấp;", "- Lưu: VT, QLCL."],
    signer_lines=DEPUTY,
    signer_name="Phạm Quốc Hưng",
    seal_text=SEAL_TEXT,
    metadata={
        "TypeName": "Bản sao bằng tốt nghiệp",
        "CodeNumber": "78",
        "CodeNotation": "BS-SGDĐT",
        "IssuedDate": "2024-11-20",
        "OrganName": ORGAN,
        "Subject": "Cấp từ sổ gốc cấp bằng tốt nghiệp năm 2024",
        "Position": DEPUTY_POSITION,
        "FullName": "Phạm Quốc Hưng",
        "OwnerName": "Lê Thị Thu Trang",
        "OwnerIdentity": "049306001234",
    },
    color_pages={1},
)

DOCUMENTS = (DECISION, LICENCE, DIPLOMA_COPY)


def main() -> None:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    for offset, document in enumerate(DOCUMENTS):
        render_document(document, SEED + offset)


if __name__ == "__main__":
    main()
