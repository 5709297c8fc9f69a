"""Tests of the on-box OCR engine with the real int8 models in ``models/``.

Pages are rendered with Pillow in Liberation Serif (see sohoa.testbed.ocr),
so the expected text and the position of every line are known. Character
error rates are line-matched: each reference line is compared with the
closest output line, and reading order is checked separately.

Measured on a 2-core x86 machine (onnxruntime 1.32, int8 models, 2 threads):
0.0% CER on the clean rendered decision and on the same page degraded like
an office scan, 0.1-0.3% degraded like a poor photocopy with a red seal,
0.0-0.4% on the pages in samples/pages, and 0.4-0.5 s per rendered page.
The bounds below leave room for other CPUs and onnxruntime versions.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from sohoa.errors import ImageError, ModelError, OcrError
from sohoa.ocr import OcrEngine, PageText, TextLine
from sohoa.ocr import cli as ocr_cli
from sohoa.ocr.detection import LineRegion
from sohoa.ocr.layout import Box, deskewed_boxes, reading_order, split_at_column_gaps, split_at_ink_gaps
from sohoa.ocr.models import MANIFEST_NAME
from sohoa.ocr.recognition import MAX_CHUNK_WIDTH
from sohoa.pdf import ConversionMark, PageInput, build_pdf
from sohoa.testbed.ocr import (
    HEADER_LEFT,
    HEADER_RIGHT,
    SIGNATURE_LEFT,
    SIGNATURE_RIGHT,
    degrade_like_office_scan,
    degrade_like_poor_copy,
    edit_distance,
    find_font,
    line_matched_cer,
    normalize_text,
    page_cer,
    render_decision_page,
)
from sohoa.testbed.ocr import best_span, fast_edit_distance, line_matched_errors

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO / "models"
SAMPLES_DIR = REPO / "samples" / "pages"

CLEAN_CER_BOUND = 0.015
SCAN_CER_BOUND = 0.02
SAMPLE_CER_BOUND = 0.03
POOR_COPY_CER_BOUND = 0.025
# int8 and fp32 outputs differed in 0.6% of characters on the rendered decision
# and in 0.1-2.0% on the sample pages.
INT8_FLOAT_CER_BOUND = 0.025
# The int8 models may read a page worse than the fp32 ones by at most this
# much CER; on the sample pages they were 0.1 points worse to 0.8 points better.
INT8_LOSS_BOUND = 0.005
PDF_MARK = ConversionMark(
    converted_at=datetime(2026, 12, 4, 22, 0, tzinfo=timezone(timedelta(hours=7))),
    operator="Nguyễn Thị Hồng Nhung",
    unit="Sở Giáo dục và Đào tạo tỉnh Bình Định",
    doc_code="G06.01_QĐ_000031_V1",
    pages_sha256="5a" * 32,
)
KEY_PHRASES = (
    "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
    "Độc lập - Tự do - Hạnh phúc",
    "QUYẾT ĐỊNH",
    "Về việc công nhận tốt nghiệp trung học phổ thông",
    "SỞ GIÁO DỤC VÀ ĐÀO TẠO",
)


@pytest.fixture(scope="module")
def engine() -> OcrEngine:
    return OcrEngine.load(MODELS_DIR, threads=2)


@pytest.fixture(scope="module")
def decision_page():
    return render_decision_page()


@pytest.fixture(scope="module")
def clean_result(engine, decision_page) -> PageText:
    return engine.recognize(decision_page.image)


def test_line_images_match_recognizer_input(engine, decision_page, clean_result):
    from sohoa.ocr import prepare_page

    images = engine.line_images(prepare_page(decision_page.image))

    # Long lines may be cut into chunks, so there are at least as many images as lines.
    assert len(images) >= len(clean_result.lines)
    assert all(image.dtype == np.uint8 and image.ndim == 2 and image.shape[0] == 32 for image in images)
    assert max(image.shape[1] for image in images) <= MAX_CHUNK_WIDTH


def closest_line(result: PageText, reference: str) -> tuple[int, int]:
    """Return (index, edit distance) of the output line closest to ``reference``."""
    distances = [edit_distance(normalize_text(reference), normalize_text(line.text)) for line in result.lines]
    index = int(np.argmin(distances))
    return index, distances[index]


def copy_models(target: Path) -> Path:
    shutil.copytree(MODELS_DIR, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return target


def manifest_file(models_dir: Path, name: str) -> str:
    manifest = json.loads((models_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    return next(model["file"] for model in manifest["models"] if model["name"] == name)


# --- recognition accuracy ---------------------------------------------------


def test_clean_page_character_error_rate(clean_result, decision_page):
    references = [line.text for line in decision_page.lines]
    cer = line_matched_cer(references, [line.text for line in clean_result.lines])
    assert cer <= CLEAN_CER_BOUND, clean_result.text


@pytest.mark.parametrize("phrase", KEY_PHRASES)
def test_clean_page_key_phrase_with_diacritics(clean_result, phrase):
    _, distance = closest_line(clean_result, phrase)
    assert distance <= 1, clean_result.text


def test_office_scan_character_error_rate(engine, decision_page):
    scan = degrade_like_office_scan(decision_page.image, seed=7)
    result = engine.recognize(scan)
    references = [line.text for line in decision_page.lines]
    cer = line_matched_cer(references, [line.text for line in result.lines])
    assert cer <= SCAN_CER_BOUND, result.text


def test_poor_copy_under_seal(engine, decision_page):
    """A red seal over the signer's title, uneven light, 3 degree skew, blur and specks."""
    title = next(line for line in decision_page.lines if line.text == SIGNATURE_RIGHT[1])
    center = ((title.box[0] + title.box[2]) // 2 - 120, title.box[3] + 40)
    copy = degrade_like_poor_copy(decision_page.image, seed=1, seal_center=center)

    result = engine.recognize(copy)

    references = [line.text for line in decision_page.lines]
    assert line_matched_cer(references, [line.text for line in result.lines]) <= POOR_COPY_CER_BOUND, result.text
    for text in SIGNATURE_RIGHT[:2]:
        _, distance = closest_line(result, text)
        assert distance <= 1, result.text


def test_output_is_nfc(clean_result):
    import unicodedata

    for line in clean_result.lines:
        assert unicodedata.is_normalized("NFC", line.text), line.text


def test_long_line_is_split_and_read(engine):
    """A line wider than the recognizer's maximum input is read in chunks, without a crash."""
    text = (
        "Căn cứ Nghị định số 30/2020/NĐ-CP ngày 05 tháng 3 năm 2020 của Chính phủ về công tác văn thư, "
        "Sở Giáo dục và Đào tạo hướng dẫn các trường trung học phổ thông thực hiện như sau"
    )
    font = ImageFont.truetype(str(find_font()), 54)
    width = int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(text, font=font)) + 200
    image = Image.new("RGB", (width, 300), "white")
    ImageDraw.Draw(image).text((100, 110), text, font=font, fill="black")
    assert width * 32 / 70 > MAX_CHUNK_WIDTH

    result = engine.recognize(image)

    assert len(result.lines) == 1, result.text
    assert line_matched_cer([text], [result.lines[0].text]) <= 0.03, result.text


@pytest.mark.skipif(not SAMPLES_DIR.is_dir(), reason="samples/pages has not been rendered")
def test_sample_pages_character_error_rate(engine):
    pages = sorted(SAMPLES_DIR.glob("*.png"))
    if not pages:
        pytest.skip("samples/pages contains no PNG pages")
    for png in pages:
        reference = png.with_suffix(".txt").read_text(encoding="utf-8").splitlines()
        with Image.open(png) as image:
            result = engine.recognize(image)
        cer = line_matched_cer(reference, [line.text for line in result.lines])
        assert cer <= SAMPLE_CER_BOUND, f"{png.name}: CER {cer:.4f}\n{result.text}"


# --- reading order and boxes -------------------------------------------------


def test_header_left_column_read_before_right(clean_result):
    order = [closest_line(clean_result, text)[0] for text in (*HEADER_LEFT, *HEADER_RIGHT)]
    assert order == sorted(order), clean_result.text
    assert order == list(range(len(order))), clean_result.text


def test_signature_block_left_column_read_first(clean_result):
    order = [closest_line(clean_result, text)[0] for text in (*SIGNATURE_LEFT, *SIGNATURE_RIGHT)]
    assert order == sorted(order), clean_result.text


def test_boxes_enclose_rendered_lines(clean_result, decision_page):
    """Each box encloses the drawn text with a margin under one text height."""
    tolerance = 4
    for rendered in decision_page.lines:
        index, _ = closest_line(clean_result, rendered.text)
        x0, y0, x1, y1 = clean_result.lines[index].box
        rx0, ry0, rx1, ry1 = rendered.box
        height = ry1 - ry0
        context = (rendered, clean_result.lines[index])
        assert x0 <= rx0 + tolerance, context
        assert y0 <= ry0 + tolerance, context
        assert x1 >= rx1 - tolerance, context
        assert y1 >= ry1 - tolerance, context
        assert (y1 - y0) <= 2 * height, context
        assert (x1 - x0) <= (rx1 - rx0) + 2 * height, context


def test_confidences_in_range(clean_result):
    assert clean_result.lines
    for line in clean_result.lines:
        assert 0.0 <= line.confidence <= 1.0
    assert min(line.confidence for line in clean_result.lines) > 0.8


def test_reading_order_two_column_band():
    boxes = [
        Box(1200, 100, 2200, 150),  # 0 right column, row 1
        Box(300, 100, 1000, 150),  # 1 left column, row 1
        Box(1300, 170, 2100, 220),  # 2 right column, row 2
        Box(350, 170, 950, 220),  # 3 left column, row 2
        Box(400, 240, 900, 290),  # 4 left column, row 3
        Box(300, 400, 2200, 450),  # 5 body line spanning the gutter
        Box(300, 470, 1500, 520),  # 6 body line
    ]
    assert reading_order(boxes) == [1, 3, 4, 0, 2, 5, 6]


def test_joined_columns_split_at_gutter():
    probability = np.zeros((100, 1000), dtype=np.float32)
    probability[40:60, 50:400] = 0.9  # left column text
    probability[40:60, 500:950] = 0.9  # right column text, 100 px (2.5 region heights) away
    probability[40:60, 120:135] = 0.0  # a word space, under one height
    quad = np.array([[40, 30], [960, 30], [960, 70], [40, 70]], dtype=np.float32)

    parts = split_at_column_gaps(LineRegion(quad=quad, score=0.9), probability)

    assert len(parts) == 2
    assert parts[0].quad[1][0] < 450
    assert parts[1].quad[0][0] > 450


def test_joined_columns_split_at_page_gutter():
    """A gutter that the probability map bridges is still found in the page's ink."""
    page = Image.new("L", (1200, 200), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.truetype(str(find_font()), 40)
    draw.text((60, 70), "UBND TỈNH BÌNH ĐỊNH", font=font, fill=0)
    draw.text((700, 70), "CỘNG HÒA XÃ HỘI", font=font, fill=0)
    quad = np.array([[40, 55], [1160, 55], [1160, 135], [40, 135]], dtype=np.float32)

    parts = split_at_ink_gaps(quad, np.asarray(page))

    assert len(parts) == 2
    assert parts[0][1][0] < 700
    assert parts[1][0][0] > 560


def test_line_with_word_spaces_not_split_at_ink():
    page = Image.new("L", (1200, 200), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.truetype(str(find_font()), 40)
    draw.text((60, 70), "Căn cứ Luật Giáo dục ngày 14 tháng 6 năm 2019;", font=font, fill=0)
    quad = np.array([[40, 55], [1160, 55], [1160, 135], [40, 135]], dtype=np.float32)

    parts = split_at_ink_gaps(quad, np.asarray(page))

    assert len(parts) == 1
    assert np.array_equal(parts[0], quad)


def test_reading_order_header_columns_overlap():
    """A narrow gutter: the boxes of the two header columns overlap by the split margin."""
    boxes = [
        Box(454, 241, 1166, 296),  # 0 "UBND TỈNH BÌNH ĐỊNH"
        Box(1141, 236, 2279, 299),  # 1 "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM"
        Box(385, 320, 1108, 389),  # 2 "SỞ GIÁO DỤC VÀ ĐÀO TẠO"
        Box(1382, 334, 2046, 389),  # 3 "Độc lập - Tự do - Hạnh phúc"
        Box(1052, 589, 1432, 655),  # 4 "QUYẾT ĐỊNH", centred across the gutter
    ]
    assert reading_order(boxes) == [0, 2, 1, 3, 4]


def test_reading_order_skewed_page():
    """On a page 3 degrees askew, a short line below a long one stays below it."""
    angle = np.radians(3.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], dtype=np.float32)

    def line_quad(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)
        return corners @ rotation.T

    quads = [line_quad(354, 1000, 2300, 1055), line_quad(354, 1081, 700, 1136), line_quad(354, 1162, 2300, 1217)]

    assert reading_order(deskewed_boxes(quads)) == [0, 1, 2]


def test_reading_order_single_column():
    boxes = [Box(300, 300, 2000, 350), Box(300, 100, 2000, 150), Box(300, 200, 1200, 250)]
    assert reading_order(boxes) == [1, 2, 0]


# --- benchmark metrics ----------------------------------------------------------


def test_fast_edit_distance_matches_levenshtein():
    rng = np.random.default_rng(5)
    alphabet = list("aăâđêôơư ếổ.")
    for _ in range(300):
        first = "".join(rng.choice(alphabet, size=rng.integers(0, 30)))
        second = "".join(rng.choice(alphabet, size=rng.integers(0, 30)))
        assert fast_edit_distance(first, second) == edit_distance(first, second), (first, second)


def test_best_span_finds_line_inside_joined_columns():
    distance, pairs = best_span("CỘNG HÒA XÃ HỘI", "UBND TỈNH BÌNH ĐỊNH CỘNG HÒA XA HỘI CHỦ NGHĨA")
    assert distance == 1
    assert "".join(actual for _, actual in pairs if actual) == "CỘNG HÒA XA HỘI"


def test_line_matched_errors_count_diacritics():
    errors = line_matched_errors(["trung học phổ thông", "Điều 1."], ["trung hoc phố thông", "Diều 1,"])
    assert errors.characters == 26
    assert errors.character_errors == 4
    assert errors.diacritic_letters == 5  # ọ, ổ, ô, Đ, ề
    assert errors.diacritic_errors == 3
    assert errors.wrong_mark_errors == 3
    assert errors.words == 6
    assert errors.word_errors == 4


def test_page_cer_counts_reading_order():
    references = ["UBND TỈNH", "SỞ GIÁO DỤC", "CỘNG HÒA"]
    assert page_cer(references, references) == 0
    assert page_cer(references, ["UBND TỈNH", "CỘNG HÒA", "SỞ GIÁO DỤC"]) > 0.2


# --- result records -----------------------------------------------------------


def test_page_text_round_trips_through_json(clean_result):
    restored = PageText.from_dict(json.loads(json.dumps(clean_result.to_dict(), ensure_ascii=False)))
    assert restored == clean_result
    assert restored.text == "\n".join(line.text for line in clean_result.lines)


def test_page_text_dimensions(clean_result, decision_page):
    assert (clean_result.width, clean_result.height) == decision_page.image.size
    assert all(isinstance(line, TextLine) for line in clean_result.lines)


def test_page_text_without_rotation_is_upright(clean_result):
    record = clean_result.to_dict()
    del record["rotation"]
    assert PageText.from_dict(record).rotation == 0


def test_page_text_rotation_round_trips():
    page = PageText(width=30, height=20, lines=(), rotation=270)
    assert PageText.from_dict(page.to_dict()).rotation == 270


def test_page_text_invalid_rotation():
    with pytest.raises(OcrError, match="45"):
        PageText.from_dict({"width": 10, "height": 10, "lines": [], "rotation": 45})


def test_versions_name_both_models(engine):
    versions = engine.versions
    assert set(versions) == {"detector", "recognizer"}
    for digest in versions.values():
        assert len(digest) == 12
        int(digest, 16)


# --- int8 against float ---------------------------------------------------------


@pytest.fixture(scope="module")
def float_engine(tmp_path_factory, load_models_module) -> OcrEngine:
    """Load the fp32 models the int8 ones were built from, copied out of the rapidocr and asterocr wheels."""
    if importlib.util.find_spec("rapidocr") is None or importlib.util.find_spec("asterocr") is None:
        pytest.skip("the rapidocr and asterocr wheels that ship the float models are not installed")
    folder = tmp_path_factory.mktemp("float-models")
    load_models_module("build").write_float_models(folder)
    int8_sources = {model["name"]: model["source"] for model in json.loads((MODELS_DIR / MANIFEST_NAME).read_text(encoding="utf-8"))["models"]}
    for model in json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))["models"]:
        expected = int8_sources[model["name"]]
        assert model["source"]["sha256"] == expected["sha256"], (
            f"installed {model['source']['package']} {model['source']['version']} ships another {model['name']} model "
            f"than the int8 one was built from; install {expected['package']}=={expected['version']}"
        )
    return OcrEngine.load(folder, threads=2)


def test_int8_agrees_with_float_models(float_engine, clean_result, decision_page):
    float_result = float_engine.recognize(decision_page.image)

    int8_lines = [line.text for line in clean_result.lines]
    float_lines = [line.text for line in float_result.lines]
    assert len(int8_lines) == len(float_lines)
    assert line_matched_cer(float_lines, int8_lines) <= INT8_FLOAT_CER_BOUND


@pytest.mark.skipif(not SAMPLES_DIR.is_dir(), reason="samples/pages has not been rendered")
@pytest.mark.parametrize("name", ["ban-sao-bang-p1", "giay-phep-p1", "quyet-dinh-p1", "quyet-dinh-p2"])
def test_int8_agrees_with_float_on_sample(float_engine, engine, name):
    png = SAMPLES_DIR / f"{name}.png"
    reference = png.with_suffix(".txt").read_text(encoding="utf-8").splitlines()
    with Image.open(png) as image:
        int8_lines = [line.text for line in engine.recognize(image).lines]
        float_lines = [line.text for line in float_engine.recognize(image).lines]

    assert len(int8_lines) == len(float_lines)
    assert line_matched_cer(float_lines, int8_lines) <= INT8_FLOAT_CER_BOUND
    assert line_matched_cer(reference, int8_lines) <= line_matched_cer(reference, float_lines) + INT8_LOSS_BOUND


# --- model and image errors -----------------------------------------------------


@pytest.mark.parametrize("model", ["detector", "recognizer"])
def test_missing_model_file_names_file(tmp_path, model):
    models_dir = copy_models(tmp_path / "models")
    file_name = manifest_file(models_dir, model)
    (models_dir / file_name).unlink()

    with pytest.raises(ModelError) as caught:
        OcrEngine.load(models_dir)

    assert file_name in str(caught.value)
    assert "missing" in str(caught.value)


@pytest.mark.parametrize("model", ["detector", "recognizer"])
def test_corrupt_model_file_names_file(tmp_path, model):
    models_dir = copy_models(tmp_path / "models")
    file_name = manifest_file(models_dir, model)
    path = models_dir / file_name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(ModelError) as caught:
        OcrEngine.load(models_dir)

    assert file_name in str(caught.value)
    assert "corrupt" in str(caught.value)


def test_corrupt_charset_names_file(tmp_path):
    models_dir = copy_models(tmp_path / "models")
    manifest = json.loads((models_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    charset = next(model["charset_file"] for model in manifest["models"] if model["name"] == "recognizer")
    (models_dir / charset).write_text('{"chars": ["a"]}', encoding="utf-8")

    with pytest.raises(ModelError) as caught:
        OcrEngine.load(models_dir)

    assert charset in str(caught.value)


def test_missing_manifest(tmp_path):
    models_dir = copy_models(tmp_path / "models")
    (models_dir / MANIFEST_NAME).unlink()

    with pytest.raises(ModelError) as caught:
        OcrEngine.load(models_dir)

    assert MANIFEST_NAME in str(caught.value)


def test_truncated_image_raises_image_error(engine, tmp_path, decision_page):
    path = tmp_path / "page.png"
    decision_page.image.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])

    with Image.open(path) as image, pytest.raises(ImageError):
        engine.recognize(image)


def test_tiny_image_raises_image_error(engine):
    with pytest.raises(ImageError):
        engine.recognize(Image.new("RGB", (10, 10), "white"))


def test_sixteen_bit_grey_page_is_read(engine, decision_page):
    grey = np.asarray(decision_page.image.convert("L"), dtype=np.uint16) * 257
    result = engine.recognize(Image.fromarray(grey))

    references = [line.text for line in decision_page.lines]
    assert line_matched_cer(references, [line.text for line in result.lines]) <= CLEAN_CER_BOUND, result.text


def test_malformed_page_record_raises_ocr_error():
    with pytest.raises(OcrError):
        PageText.from_dict({"width": 10, "height": 10, "lines": [{"text": "a", "box": [1, 2, 3]}]})
    with pytest.raises(OcrError):
        PageText.from_dict({"width": 10, "lines": []})


def test_unloadable_model_with_matching_digest(tmp_path):
    """A file that matches the manifest but is not an ONNX model gives ModelError naming it."""
    models_dir = copy_models(tmp_path / "models")
    file_name = manifest_file(models_dir, "detector")
    (models_dir / file_name).write_bytes(b"not an onnx model")
    manifest = json.loads((models_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    for model in manifest["models"]:
        if model["name"] == "detector":
            model["sha256"] = hashlib.sha256(b"not an onnx model").hexdigest()
    (models_dir / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")

    with pytest.raises(ModelError) as caught:
        OcrEngine.load(models_dir)

    assert file_name in str(caught.value)
    assert "onnxruntime" in str(caught.value)


def test_blank_page_has_no_lines(engine):
    result = engine.recognize(Image.new("RGB", (1240, 1754), "white"))
    assert result.lines == ()
    assert result.text == ""


# --- page orientation -------------------------------------------------------------


def turn_clockwise(image: Image.Image, degrees: int) -> Image.Image:
    """Return ``image`` as a scan of the page fed turned clockwise by ``degrees``."""
    return image.rotate(-degrees, expand=True)


@pytest.fixture(scope="module", params=[90, 180, 270])
def turned_result(request, engine, decision_page) -> tuple[int, PageText]:
    return request.param, engine.recognize(turn_clockwise(decision_page.image, request.param))


def test_turned_page_rotation_detected(turned_result):
    degrees, result = turned_result
    assert result.rotation == degrees


def test_turned_page_read_like_upright(turned_result, clean_result, decision_page):
    _, result = turned_result
    references = [line.text for line in decision_page.lines]
    assert (result.width, result.height) == decision_page.image.size
    assert page_cer(references, [line.text for line in result.lines]) <= CLEAN_CER_BOUND, result.text
    assert [line.text for line in result.lines] == [line.text for line in clean_result.lines]


def test_turned_page_boxes_in_upright_pixels(turned_result, clean_result):
    _, result = turned_result
    for turned_line, upright_line in zip(result.lines, clean_result.lines):
        assert np.abs(np.subtract(turned_line.box, upright_line.box)).max() <= 4, turned_line.text


def test_turned_poor_copy_rotation_detected(engine, decision_page):
    copy = degrade_like_poor_copy(decision_page.image, seed=3)
    result = engine.recognize(turn_clockwise(copy, 180))
    assert result.rotation == 180
    references = [line.text for line in decision_page.lines]
    assert line_matched_cer(references, [line.text for line in result.lines]) <= POOR_COPY_CER_BOUND, result.text


def test_turned_page_pdf_text_layer_lines_up(tmp_path, turned_result, decision_page):
    """The PDF shows the page upright and its invisible words lie over the printed ones."""
    degrees, result = turned_result
    scan = tmp_path / "scan.png"
    turn_clockwise(decision_page.image, degrees).save(scan)
    out = tmp_path / "turned.pdf"

    build_pdf([PageInput(image=scan, text=result, dpi=300)], out, mark=PDF_MARK, metadata={"DocCode": PDF_MARK.doc_code})

    words = pdf_words(out)
    for phrase in ("QUYẾT ĐỊNH", "Độc lập - Tự do - Hạnh phúc"):
        rendered = next(line for line in decision_page.lines if line.text == phrase)
        first_word = phrase.split()[0]
        x_min, y_min = next((x, y) for word, x, y in words if word == first_word)
        # Rendered boxes are in 300 dpi pixels; pdftotext reports points from the top-left corner.
        assert abs(x_min - rendered.box[0] * 72 / 300) <= 6, (phrase, x_min)
        assert abs(y_min - rendered.box[1] * 72 / 300) <= 6, (phrase, y_min)

    # The image under the words must be the upright page too: ink where the title is printed.
    pixels = np.asarray(render_pdf_page(out, tmp_path, resolution=50))
    x0, y0, x1, y1 = (value * 50 // 300 for value in next(line.box for line in decision_page.lines if line.text == "QUYẾT ĐỊNH"))
    assert pixels[y0 : y1 + 1, x0 : x1 + 1].min() < 128


def render_pdf_page(pdf: Path, folder: Path, resolution: int) -> Image.Image:
    prefix = folder / "rendered"
    subprocess.run(["pdftoppm", "-gray", "-r", str(resolution), "-f", "1", "-l", "1", "-singlefile", "-png", str(pdf), str(prefix)], check=True)
    with Image.open(prefix.with_suffix(".png")) as image:
        image.load()
    return image


def pdf_words(pdf: Path) -> list[tuple[str, float, float]]:
    """Return ``(word, xMin, yMin)`` in points for page 1, from ``pdftotext -bbox``."""
    completed = subprocess.run(["pdftotext", "-enc", "UTF-8", "-bbox", "-f", "1", "-l", "1", str(pdf), "-"], capture_output=True, check=True)
    root = ElementTree.fromstring(completed.stdout)
    return [(word.text, float(word.get("xMin")), float(word.get("yMin"))) for word in root.iter("{http://www.w3.org/1999/xhtml}word")]


# --- command line ---------------------------------------------------------------


def cli_args(images: list[Path], output_format: str = "text") -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ocr_cli.add_parser(parser.add_subparsers())
    return parser.parse_args(["ocr", *map(str, images), "--format", output_format, "--models", str(MODELS_DIR)])


@pytest.fixture(scope="module")
def page_file(tmp_path_factory, decision_page) -> Path:
    path = tmp_path_factory.mktemp("pages") / "decision.png"
    decision_page.image.save(path)
    return path


def test_cli_prints_lines_in_reading_order(page_file, capsys, decision_page):
    assert ocr_cli.run(cli_args([page_file])) == 0

    output = capsys.readouterr().out.splitlines()
    assert line_matched_cer([line.text for line in decision_page.lines], output) <= CLEAN_CER_BOUND
    assert normalize_text(output[0]) == normalize_text(HEADER_LEFT[0])


def test_cli_json_matches_engine(page_file, capsys, clean_result):
    assert ocr_cli.run(cli_args([page_file], "json")) == 0

    document = json.loads(capsys.readouterr().out)
    assert set(document["models"]) == {"detector", "recognizer"}
    assert document["pages"][0]["image"] == str(page_file)
    assert PageText.from_dict(document["pages"][0]) == clean_result


def test_cli_hocr_is_well_formed(page_file, capsys):
    assert ocr_cli.run(cli_args([page_file], "hocr")) == 0

    root = ElementTree.fromstring(capsys.readouterr().out)
    namespace = {"h": "http://www.w3.org/1999/xhtml"}
    lines = root.findall(".//h:span[@class='ocr_line']", namespace)
    assert lines
    assert lines[0].get("title").startswith("bbox ")


def test_cli_corrupt_image_reports_and_continues(page_file, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)

    status = ocr_cli.run(cli_args([broken, page_file]))

    captured = capsys.readouterr()
    assert status == ImageError.exit_status
    assert "broken.png" in captured.err
    assert normalize_text(captured.out.splitlines()[0]) == normalize_text(HEADER_LEFT[0])


def test_open_image_missing_file(tmp_path):
    with pytest.raises(ImageError) as caught:
        ocr_cli.open_image(tmp_path / "absent.png")
    assert "absent.png" in str(caught.value)
