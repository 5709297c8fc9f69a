"""Building the searchable PDF/A-2b, or PDF/A-3b with fields.json: text layer, mark, metadata, bad input."""

from __future__ import annotations

import gettext
import hashlib
import json
import logging
import subprocess
import unicodedata
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy
import pikepdf
import pikepdf.pdfa
import pytest
from lxml import etree
from PIL import Image, ImageChops

from sohoa import i18n
from sohoa.errors import ImageError, PdfError
from sohoa.ocr import PageText, TextLine
from sohoa.pdf import Attachment, ConversionMark, PageInput, build_pdf, qr_payload
from sohoa.pdf import metadata as xmp
from sohoa.pdf.attachments import attach
from sohoa.pdf.conformance import check_pdfa
from sohoa.pdf.mark import format_conversion_time
from sohoa.testbed.legal import compile_vietnamese_catalog
from sohoa.testbed.pdf import DECISION_LINES, render_page, word_box_pixels

DPI = 200
MARK = ConversionMark(
    converted_at=datetime(2026, 12, 4, 21, 15, 3, tzinfo=timezone(timedelta(hours=7))),
    operator="Nguyễn Thị Hồng Nhung",
    unit="Sở Giáo dục và Đào tạo tỉnh Bắc Ninh",
    doc_code="G06.01_QĐ_000021_V1",
    pages_sha256="3f" * 32,
)
METADATA = {
    "DocCode": "G06.01_QĐ_000021_V1",
    "TypeName": "Quyết định",
    "CodeNumber": "15",
    "CodeNotation": "QĐ-SGDĐT",
    "IssuedDate": "2026-12-01",
    "OrganName": "Sở Giáo dục và Đào tạo tỉnh Bắc Ninh",
    "Subject": "Về việc công nhận tốt nghiệp trung học phổ thông năm 2026",
    "Language": "vi",
    "PageAmount": "2",
    "UnsureFields": "",
}
MARK_HEADLINE = "Bản điện tử được chuyển đổi từ bản giấy"


@pytest.fixture
def vietnamese_mark(tmp_path, monkeypatch):
    """Translate user text with the Vietnamese catalog and this area's unmerged fragment."""
    mo_path = compile_vietnamese_catalog(tmp_path)
    with open(mo_path, "rb") as handle:
        monkeypatch.setattr(i18n, "_translation", gettext.GNUTranslations(handle))


@pytest.fixture
def two_pages(tmp_path):
    """A grey decision page and a colour page with a seal, with their exact line boxes."""
    first = render_page(tmp_path / "page-1.png", dpi=DPI, mode="L")
    second = render_page(tmp_path / "page-2.png", ["Danh sách học sinh được công nhận tốt nghiệp"], dpi=DPI, mode="RGB")
    return [
        PageInput(image=tmp_path / "page-1.png", text=first, dpi=DPI),
        PageInput(image=tmp_path / "page-2.png", text=second, dpi=DPI),
    ]


@pytest.fixture
def built(tmp_path, two_pages, vietnamese_mark):
    out = tmp_path / "out" / "G06.01_QĐ_000021_V1_20261204_quyet-dinh.unsigned.pdf"
    build_pdf(two_pages, out, mark=MARK, metadata=METADATA)
    return out


def pdftotext(pdf: Path, *args: str) -> str:
    result = subprocess.run(["pdftotext", "-enc", "UTF-8", *args, str(pdf), "-"], capture_output=True, check=True)
    return result.stdout.decode("utf-8")


def render(pdf: Path, tmp_path: Path, resolution: int, page: int = 1) -> Image.Image:
    prefix = tmp_path / f"render-{resolution}-{page}"
    subprocess.run(
        ["pdftoppm", "-gray", "-r", str(resolution), "-f", str(page), "-l", str(page), "-singlefile", str(pdf), str(prefix)],
        check=True,
    )
    return Image.open(f"{prefix}.pgm")


def word_boxes(pdf: Path, page: int) -> list[tuple[str, float, float, float, float]]:
    """Return ``(word, xMin, yMin, xMax, yMax)`` in points for one page, from ``pdftotext -bbox``."""
    root = etree.fromstring(pdftotext(pdf, "-bbox", "-f", str(page), "-l", str(page)).encode("utf-8"), etree.HTMLParser(encoding="utf-8"))
    return [
        (word.text, float(word.get("xmin")), float(word.get("ymin")), float(word.get("xmax")), float(word.get("ymax")))
        for word in root.iter("word")
    ]


def font_dictionaries(pdf: pikepdf.Pdf):
    """Yield every font dictionary reachable from the pages, Form XObjects included."""
    seen = set()

    def walk(resources):
        if resources is None:
            return
        for font in (resources.get("/Font") or {}).values():
            if font.objgen not in seen:
                seen.add(font.objgen)
                yield font
        for xobject in (resources.get("/XObject") or {}).values():
            if xobject.get("/Subtype") == "/Form" and xobject.objgen not in seen:
                seen.add(xobject.objgen)
                yield from walk(xobject.get("/Resources"))

    for page in pdf.pages:
        yield from walk(page.obj.get("/Resources"))


def test_text_layer_keeps_vietnamese_diacritics(built):
    text = pdftotext(built)

    assert unicodedata.is_normalized("NFC", text)
    for line in DECISION_LINES:
        assert line in text
    assert "Danh sách học sinh được công nhận tốt nghiệp" in text


def test_text_layer_word_lies_over_its_pixels(built, two_pages):
    page_text = two_pages[0].text
    line_index = DECISION_LINES.index("Về việc công nhận tốt nghiệp trung học phổ thông năm 2026")
    left_px, right_px = word_box_pixels(page_text, line_index, "nghiệp", dpi=DPI)
    _x0, top_px, _x1, bottom_px = page_text.lines[line_index].box
    to_points = 72 / DPI

    found = [box for box in word_boxes(built, 1) if box[0] == "nghiệp" and box[2] < bottom_px * to_points < box[4] + 5]

    assert len(found) == 1
    _word, x_min, y_min, x_max, y_max = found[0]
    # Word boxes inside a line are estimated from the widths of Noto Sans,
    # not of the font on paper, so a word may drift by a few points.
    assert abs(x_min - left_px * to_points) < 4
    assert abs(x_max - right_px * to_points) < 4
    assert top_px * to_points - 3 < y_min < bottom_px * to_points
    assert top_px * to_points < y_max < bottom_px * to_points + 3


def test_text_layer_is_invisible(tmp_path, two_pages):
    """A page whose image is blank shows nothing although it carries text."""
    blank = tmp_path / "blank.png"
    Image.new("L", Image.open(two_pages[0].image).size, 255).save(blank)
    out = tmp_path / "blank.pdf"

    build_pdf([PageInput(blank, two_pages[0].text, DPI)], out, mark=MARK, metadata=METADATA)

    assert "QUYẾT ĐỊNH" in pdftotext(out)
    pixels = numpy.asarray(render(out, tmp_path, 50))
    upper_half = pixels[: pixels.shape[0] // 2]
    assert upper_half.min() > 200


def test_mark_is_vietnamese_on_page_one(built):
    page_one = pdftotext(built, "-f", "1", "-l", "1")
    page_two = pdftotext(built, "-f", "2", "-l", "2")

    assert MARK_HEADLINE in page_one
    assert "04/12/2026 21:15:03 (UTC+07:00)" in page_one
    assert MARK.operator in page_one
    assert MARK.unit in page_one
    assert MARK_HEADLINE not in page_two


def test_mark_sits_in_blank_bottom_band(built, tmp_path):
    boxes = word_boxes(built, 1)
    mark_top = min(box[2] for box in boxes if box[0] == "Bản")
    content_bottom = max(box[4] for box in boxes if box[0] == "Điều")
    with pikepdf.open(built) as pdf:
        page_height = float(pdf.pages[0].mediabox[3])

    assert mark_top > content_bottom
    assert mark_top > page_height - 60
    pixels = numpy.asarray(render(built, tmp_path, 50))
    bottom_band = pixels[int(pixels.shape[0] * 0.92) :]
    assert (bottom_band < 128).sum() > 100


def test_mark_qr_code_decodes(built, tmp_path):
    pixels = numpy.asarray(render(built, tmp_path, 200))

    decoded, _points, _straight = cv2.QRCodeDetector().detectAndDecode(pixels)

    assert decoded == qr_payload(MARK)
    assert MARK.doc_code in decoded
    assert MARK.pages_sha256 in decoded


def test_mark_covers_bottom_when_page_is_full(tmp_path, vietnamese_mark, caplog):
    image_path = tmp_path / "full.png"
    page = render_page(image_path, dpi=DPI)
    with Image.open(image_path) as image:
        full = image.copy()
    stripes = numpy.asarray(full).copy()
    stripes[-DPI:, ::7] = 0  # ink right down to the bottom edge
    Image.fromarray(stripes).save(image_path)
    out = tmp_path / "full.pdf"

    with caplog.at_level(logging.WARNING, logger="sohoa.pdf.mark"):
        build_pdf([PageInput(image_path, page, DPI)], out, mark=MARK, metadata=METADATA)

    assert any("no blank band" in record.getMessage() for record in caplog.records)
    assert MARK_HEADLINE in pdftotext(out)
    decoded, _points, _straight = cv2.QRCodeDetector().detectAndDecode(numpy.asarray(render(out, tmp_path, 400)))
    assert decoded == qr_payload(MARK)


def test_mark_english_when_selected(tmp_path, two_pages):
    i18n.set_language("en")
    out = tmp_path / "en.pdf"

    build_pdf(two_pages, out, mark=MARK, metadata=METADATA)

    assert "Electronic copy converted from a paper original" in pdftotext(out, "-f", "1", "-l", "1")


def test_conversion_time_format():
    assert format_conversion_time(MARK.converted_at) == "04/12/2026 21:15:03 (UTC+07:00)"
    utc = datetime(2026, 1, 5, 8, 0, 0, tzinfo=timezone.utc)
    assert format_conversion_time(utc) == "05/01/2026 08:00:00 (UTC+00:00)"


def test_mark_rejects_naive_time():
    with pytest.raises(ValueError, match="timezone-aware"):
        ConversionMark(datetime(2026, 12, 4, 21, 15), "A", "B", "C", "0" * 64)


def test_xmp_declares_pdfa_2b(built):
    with pikepdf.open(built) as pdf:
        meta = pdf.open_metadata()
        docinfo = pdf.docinfo

        assert meta["pdfaid:part"] == "2"
        assert meta["pdfaid:conformance"] == "B"
        assert meta["dc:title"] == METADATA["Subject"]
        assert meta["dc:creator"] == [MARK.operator]
        assert meta["xmp:CreateDate"] == "2026-12-04T21:15:03+07:00"
        assert meta["pdf:Producer"].startswith("sohoa ")
        assert str(docinfo["/Producer"]) == meta["pdf:Producer"]
        assert str(docinfo["/Title"]) == METADATA["Subject"]
        assert str(docinfo["/Author"]) == MARK.operator


def test_xmp_carries_document_fields(built):
    with pikepdf.open(built) as pdf:
        packet = pdf.Root.Metadata.read_bytes()

    assert xmp.read_document_fields(packet) == METADATA
    assert xmp.undescribed_properties(packet) == []


def test_pdfa_validator_passes_without_extension(built, tmp_path):
    """pikepdf's allowlist validator rejects any custom XMP namespace, so it checks the rest."""
    stripped = tmp_path / "stripped.pdf"
    with pikepdf.open(built) as pdf:
        root = etree.fromstring(pdf.Root.Metadata.read_bytes())
        custom = {xmp.DOCUMENT_NAMESPACE, xmp.PDFA_EXTENSION}
        for description in root.iter(f"{{{xmp.RDF}}}Description"):
            if any(isinstance(child.tag, str) and child.tag[1:].split("}")[0] in custom for child in description):
                description.getparent().remove(description)
        pdf.Root.Metadata.write(etree.tostring(root.getroottree(), encoding="utf-8"))
        pdf.save(stripped, **pikepdf.pdfa.resolve_save_kwargs("2b"))

    report = pikepdf.pdfa.validate_written(stripped, "2b")

    assert report.findings == []
    assert report.passed


def test_output_intent_is_srgb(built):
    with pikepdf.open(built) as pdf:
        intents = pdf.Root.OutputIntents

        assert len(intents) == 1
        assert intents[0].S == "/GTS_PDFA1"
        assert "/DestOutputProfile" in intents[0]


def test_every_font_embedded(built):
    with pikepdf.open(built) as pdf:
        fonts = list(font_dictionaries(pdf))

        assert len(fonts) >= 2
        for font in fonts:
            descriptor_owner = font.DescendantFonts[0] if font.Subtype == "/Type0" else font
            descriptor = descriptor_owner.FontDescriptor
            assert any(key in descriptor for key in ("/FontFile", "/FontFile2", "/FontFile3")), font.BaseFont


def test_qpdf_check_passes(built):
    result = subprocess.run(["qpdf", "--check", str(built)], capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "No syntax or stream encoding errors found" in result.stdout


def test_page_count_and_size_follow_images(built, two_pages):
    with pikepdf.open(built) as pdf:
        assert len(pdf.pages) == len(two_pages)
        for page, source in zip(pdf.pages, two_pages, strict=True):
            _x0, _y0, width, height = (float(value) for value in page.mediabox)
            assert width == pytest.approx(source.text.width * 72 / DPI, abs=0.01)
            assert height == pytest.approx(source.text.height * 72 / DPI, abs=0.01)


def test_image_encoding_per_colour_mode(tmp_path):
    """Bilevel and grey pages round-trip pixel for pixel; colour pages become JPEG."""
    pages = []
    for mode in ("1", "L", "RGB"):
        path = tmp_path / f"page-{mode}.png"
        pages.append(PageInput(path, render_page(path, dpi=DPI, mode=mode), DPI))
    out = tmp_path / "modes.pdf"

    build_pdf(pages, out, mark=MARK, metadata=METADATA)

    with pikepdf.open(out) as pdf:
        filters = []
        extracted = []
        for page in pdf.pages:
            (image,) = [xobject for xobject in page.get_images().values()]
            filters.append((str(image.Filter), int(image.BitsPerComponent)))
            extracted.append(pikepdf.PdfImage(image).as_pil_image().convert("L"))
    for index in (0, 1):
        with Image.open(pages[index].image) as source:
            assert ImageChops.difference(extracted[index], source.convert("L")).getbbox() is None
    assert filters[0] in {("/CCITTFaxDecode", 1), ("/FlateDecode", 1)}
    assert filters[1] == ("/FlateDecode", 8)
    assert filters[2] == ("/DCTDecode", 8)
    assert out.stat().st_size < 600_000


def test_ocr_boxes_rescaled_to_image_size(tmp_path):
    path = tmp_path / "page.png"
    page = render_page(path, dpi=DPI)
    half = PageText(
        width=page.width // 2,
        height=page.height // 2,
        lines=tuple(TextLine(line.text, tuple(value // 2 for value in line.box), line.confidence) for line in page.lines),
    )
    out = tmp_path / "half.pdf"

    build_pdf([PageInput(path, half, DPI)], out, mark=MARK, metadata=METADATA)

    (box,) = [box for box in word_boxes(out, 1) if box[0] == "QUYẾT"]
    assert abs(box[1] - page.lines[4].box[0] * 72 / DPI) < 3


def test_page_without_text_is_built(tmp_path, two_pages):
    empty = PageText(width=two_pages[1].text.width, height=two_pages[1].text.height, lines=())
    pages = [two_pages[0], PageInput(two_pages[1].image, empty, DPI)]
    out = tmp_path / "doc.pdf"

    build_pdf(pages, out, mark=MARK, metadata=METADATA)

    with pikepdf.open(out) as pdf:
        assert len(pdf.pages) == 2
    assert "QUYẾT ĐỊNH" in pdftotext(out, "-f", "1", "-l", "1")


def test_truncated_image_raises_and_writes_nothing(tmp_path, two_pages):
    data = two_pages[1].image.read_bytes()
    two_pages[1].image.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out" / "doc.pdf"

    with pytest.raises(ImageError) as raised:
        build_pdf(two_pages, out, mark=MARK, metadata=METADATA)

    assert str(two_pages[1].image) in str(raised.value)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_garbage_image_raises(tmp_path, two_pages):
    two_pages[0].image.write_bytes(b"not a PNG at all")
    out = tmp_path / "doc.pdf"

    with pytest.raises(ImageError, match="page-1.png"):
        build_pdf(two_pages, out, mark=MARK, metadata=METADATA)

    assert not out.exists()


def test_missing_image_raises(tmp_path, two_pages):
    two_pages[0].image.unlink()

    with pytest.raises(ImageError, match="page-1.png"):
        build_pdf(two_pages, tmp_path / "doc.pdf", mark=MARK, metadata=METADATA)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_rejected(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000), 1).save(bomb)
    out = tmp_path / "bomb.pdf"

    with pytest.raises(ImageError, match="bomb.png") as raised:
        build_pdf([PageInput(bomb, PageText(12000, 12000, ()), 600)], out, mark=MARK, metadata=METADATA)

    assert "12000 x 12000" in str(raised.value)
    assert not out.exists()


def test_existing_output_kept_on_failure(tmp_path, two_pages):
    out = tmp_path / "doc.pdf"
    out.write_bytes(b"previous build")
    two_pages[0].image.write_bytes(b"\x89PNG\r\n\x1a\n broken")

    with pytest.raises(ImageError):
        build_pdf(two_pages, out, mark=MARK, metadata=METADATA)

    assert out.read_bytes() == b"previous build"
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".part")] == []


def test_invalid_metadata_name_rejected(tmp_path, two_pages):
    with pytest.raises(PdfError, match="not a valid XML name"):
        build_pdf(two_pages, tmp_path / "doc.pdf", mark=MARK, metadata={"Doc Code": "x"})


def test_no_pages_rejected(tmp_path):
    with pytest.raises(PdfError, match="No pages"):
        build_pdf([], tmp_path / "doc.pdf", mark=MARK, metadata=METADATA)


# The fields as an associated file: PDF/A-3b.

FIELDS_JSON = json.dumps({"DocCode": METADATA["DocCode"], "TypeName": "Quyết định"}, ensure_ascii=False).encode("utf-8")


@pytest.fixture
def with_attachment(tmp_path, two_pages):
    out = tmp_path / "attached.pdf"
    attachment = Attachment("fields.json", FIELDS_JSON, "application/json", "Document fields", created_at=MARK.converted_at)
    flavour = build_pdf(two_pages[:1], out, mark=MARK, metadata=METADATA, attachments=[attachment])
    return out, flavour


def test_default_build_is_2b_without_attachment(built):
    with pikepdf.open(built) as pdf:
        assert "/AF" not in pdf.Root
        assert "/Names" not in pdf.Root
        assert dict(pdf.attachments) == {}


def test_attachment_makes_pdfa_3b(with_attachment):
    out, flavour = with_attachment

    assert flavour == "3b"
    with pikepdf.open(out) as pdf:
        meta = pdf.open_metadata()
        assert meta["pdfaid:part"] == "3"
        assert meta["pdfaid:conformance"] == "B"
    assert check_pdfa(out).findings == ()
    assert check_pdfa(out).flavour == "3b"


def test_attachment_is_associated_file(with_attachment):
    out, _flavour = with_attachment

    with pikepdf.open(out) as pdf:
        names = pdf.Root.Names.EmbeddedFiles.Names
        assert str(names[0]) == "fields.json"
        filespec = names[1]
        assert filespec.is_indirect
        assert [item.objgen for item in pdf.Root.AF] == [filespec.objgen]
        assert filespec.AFRelationship == "/Data"
        assert str(filespec.F) == "fields.json"
        assert str(filespec.UF) == "fields.json"
        stream = filespec.EF.F
        assert stream.Subtype == "/application/json"
        assert stream.read_bytes() == FIELDS_JSON
        params = stream.Params
        assert int(params.Size) == len(FIELDS_JSON)
        assert bytes(params.CheckSum) == hashlib.md5(FIELDS_JSON).digest()  # noqa: S324 - the checksum PDF defines
        assert str(params.CreationDate).startswith("D:20261204211503")
        assert str(params.ModDate).startswith("D:")


def test_attachment_qpdf_check_passes(with_attachment):
    out, _flavour = with_attachment

    result = subprocess.run(["qpdf", "--check", str(out)], capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr


def test_check_pdfa_flags_attachment_params(with_attachment, tmp_path):
    out, _flavour = with_attachment
    broken = tmp_path / "broken.pdf"
    with pikepdf.open(out) as pdf:
        params = pdf.Root.AF[0].EF.F.Params
        del params.ModDate
        pdf.save(broken)
    wrong_size = tmp_path / "wrong-size.pdf"
    with pikepdf.open(out) as pdf:
        pdf.Root.AF[0].EF.F.Params.Size = 3
        pdf.save(wrong_size)

    assert any("/ModDate" in finding for finding in check_pdfa(broken).findings)
    assert any("/Size 3" in finding for finding in check_pdfa(wrong_size).findings)


def test_check_pdfa_flags_unlisted_attachment(with_attachment, tmp_path):
    out, _flavour = with_attachment
    unlisted = tmp_path / "unlisted.pdf"
    with pikepdf.open(out) as pdf:
        del pdf.Root.AF
        pdf.save(unlisted)

    report = check_pdfa(unlisted)

    assert not report.passed
    assert any("associated file" in finding for finding in report.findings), report.findings


def test_check_pdfa_flags_attachment_in_2b(built, tmp_path):
    attached = tmp_path / "attached-2b.pdf"
    with pikepdf.open(built) as pdf:
        attach(pdf, Attachment("fields.json", FIELDS_JSON, "application/json", "Document fields"), now=MARK.converted_at)
        pdf.save(attached)

    report = check_pdfa(attached)

    assert report.part == "2"
    assert not report.passed
