"""Colour policy: colour scans without colour content are embedded in grey, seals and ink stay in colour."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy
import pikepdf
import pytest
from PIL import Image, ImageDraw

from sohoa.fsutil import sha256_file
from sohoa.pdf import ConversionMark, PageInput, build_pdf
from sohoa.pdf.colour import analyse_colour, apply_colour_policy
from sohoa.testbed.pdf import render_page

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "pages"
DPI = 300
MARK = ConversionMark(
    converted_at=datetime(2026, 12, 4, 22, 0, 0, tzinfo=timezone(timedelta(hours=7))),
    operator="Nguyễn Văn An",
    unit="Sở Giáo dục và Đào tạo tỉnh Bắc Ninh",
    doc_code="H31.01_QĐ_000009_V1",
    pages_sha256="1d" * 32,
)


def _aged_colour_scan(path: Path, tint: tuple[float, float, float] = (1.0, 0.97, 0.88)) -> Image.Image:
    """A black-on-white page as a colour scanner returns it: tinted paper, sensor noise, red and cyan fringes on text."""
    render_page(path, dpi=DPI, mode="L")
    with Image.open(path) as page:
        grey = numpy.asarray(page, dtype=numpy.float32)
    rgb = numpy.stack([grey * tint[0], grey * tint[1], grey * tint[2]], axis=-1)
    rgb[..., 0] = numpy.roll(rgb[..., 0], 1, axis=1)  # one-pixel colour fringe on every edge
    noise = numpy.random.default_rng(5).normal(0, 6, rgb.shape)
    return Image.fromarray(numpy.clip(rgb + noise, 0, 255).astype(numpy.uint8), mode="RGB")


def test_sample_grey_page_is_grey():
    with Image.open(SAMPLES / "quyet-dinh-p1.png") as page:
        analysis = analyse_colour(page.convert("RGB"))

    assert not analysis.has_colour
    assert analysis.colour_fraction < 0.0001


@pytest.mark.parametrize("name", ["quyet-dinh-p2", "giay-phep-p1", "ban-sao-bang-p1"])
def test_sample_colour_pages_keep_colour(name):
    with Image.open(SAMPLES / f"{name}.png") as page:
        analysis = analyse_colour(page)

    assert analysis.has_colour, analysis


@pytest.mark.parametrize("tint", [(1.0, 0.97, 0.88), (0.98, 0.92, 0.70), (1.0, 1.0, 1.0)], ids=["aged", "yellowed", "white"])
def test_aged_paper_scan_is_grey(tmp_path, tint):
    scan = _aged_colour_scan(tmp_path / "page.png", tint)

    analysis = analyse_colour(scan)

    assert not analysis.has_colour, analysis
    assert apply_colour_policy(scan).mode == "L"


def test_blue_signature_keeps_colour(tmp_path):
    scan = _aged_colour_scan(tmp_path / "page.png")
    draw = ImageDraw.Draw(scan)
    # A short signature in blue ballpoint: strokes about 0.4 mm wide, 4 cm long.
    points = [(1500 + x, 2900 + int(40 * numpy.sin(x / 25))) for x in range(0, 470, 10)]
    draw.line(points, fill=(20, 50, 170), width=5)

    analysis = analyse_colour(scan)

    assert analysis.has_colour, analysis
    assert apply_colour_policy(scan) is scan


def test_red_seal_keeps_colour(tmp_path):
    render_page(tmp_path / "page.png", dpi=DPI, mode="RGB")

    with Image.open(tmp_path / "page.png") as page:
        assert analyse_colour(page).has_colour


def test_grey_and_bilevel_pass_through(tmp_path):
    grey = Image.new("L", (100, 100), 255)
    bilevel = Image.new("1", (100, 100), 1)

    assert apply_colour_policy(grey) is grey
    assert apply_colour_policy(bilevel) is bilevel


def test_pdf_embeds_colourless_scan_in_grey(tmp_path):
    aged = tmp_path / "page-1.png"
    _aged_colour_scan(tmp_path / "source.png").save(aged)
    sealed = tmp_path / "page-2.png"
    text = render_page(sealed, dpi=DPI, mode="RGB")
    master_digest = sha256_file(aged)
    out = tmp_path / "out.pdf"

    build_pdf([PageInput(aged, text, DPI), PageInput(sealed, text, DPI)], out, mark=MARK, metadata={"DocCode": MARK.doc_code})

    with pikepdf.open(out) as pdf:
        images = [next(iter(page.get_images().values())) for page in pdf.pages]
        assert str(images[0].ColorSpace) == "/DeviceGray"
        assert str(images[0].Filter) == "/FlateDecode"
        assert str(images[1].ColorSpace) == "/DeviceRGB"
        assert str(images[1].Filter) == "/DCTDecode"
    assert sha256_file(aged) == master_digest
