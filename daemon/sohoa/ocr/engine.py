"""The OCR engine: detector and recognizer sessions and the page pipeline."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from sohoa.errors import ImageError, OcrError
from sohoa.i18n import N_
from sohoa.ocr import detection, layout, recognition
from sohoa.ocr.models import load_model_set, open_session
from sohoa.ocr.page import PageText, TextLine

log = logging.getLogger(__name__)

MIN_IMAGE_SIDE = 32
# 600 dpi A3 is about 70 Mpx; anything much larger is not a page scan.
MAX_IMAGE_PIXELS = 80_000_000
COLOUR_DROPOUT_GAIN = 1.5
# A page is taken as sideways when more detected lines are taller than wide
# by this ratio than are wider than tall by it.
SIDEWAYS_ASPECT = 1.5
# Upside-down pages read at a mean confidence of 0.86-0.88 and upright ones
# at 0.95-0.99 on the rendered test pages, so a page read at this mean
# confidence or more is taken as upright without the 180 degree check.
UPRIGHT_CONFIDENCE = 0.95
# Lines and pixels (at the recognizer's 32 px height) compared upright and
# turned by 180 degrees to choose between the two.
ORIENTATION_SAMPLE_LINES = 6
ORIENTATION_SAMPLE_WIDTH = 256
# Turned samples must read this much more confidently to turn the page.
ORIENTATION_MARGIN = 0.03


class OcrEngine:
    """Recognize Vietnamese text on page images with the models in ``models_dir``.

    An engine is not safe to share between threads; create one per worker.
    """

    def __init__(self, detector, recognizer, charset: tuple[str, ...], versions: dict[str, str]) -> None:
        self._detector = detector
        self._recognizer = recognizer
        self._charset = charset
        self._versions = dict(versions)
        self._detector_input = detector.get_inputs()[0].name
        self._recognizer_input = recognizer.get_inputs()[0].name
        # 1 for the grey recognizer in models/, 3 for AsterNet as asterocr ships it.
        channels = recognizer.get_inputs()[0].shape[1]
        self._recognizer_channels = channels if isinstance(channels, int) else 1

    @classmethod
    def load(cls, models_dir: Path, threads: int = 1) -> OcrEngine:
        """Verify the manifest's SHA-256 of every model file, then load the models.

        Raises ModelError naming the file that is missing, corrupt or does
        not match the manifest.
        """
        models = load_model_set(Path(models_dir))
        detector = open_session(models.detector, threads)
        recognizer = open_session(models.recognizer, threads)
        log.info("Loaded OCR models from %s (%s), %d thread(s)", models_dir, models.versions, threads)
        return cls(detector, recognizer, models.charset, models.versions)

    @property
    def versions(self) -> dict[str, str]:
        """Model name to the first 12 hex digits of its SHA-256."""
        return dict(self._versions)

    def recognize(self, image: Image.Image) -> PageText:
        """Return the text lines of a page image in reading order, turning a sideways or upside-down page upright.

        The detector's boxes show whether lines run across or down the page;
        for a page turned by 90 degrees, and for an upright page read with
        low confidence, the start of the longest lines is also read turned by
        180 degrees and the more confident reading wins.

        Raises ImageError when the image cannot be decoded or is too small or
        too large to be a page.
        """
        page = prepare_page(image)
        rotation = 0
        quads, boxes = self._find_lines(page)
        if is_sideways(boxes):
            rotation = 90
            page = np.ascontiguousarray(np.rot90(page))
            quads, boxes = self._find_lines(page)

        texts = self._recognize_lines(page, quads)
        if (rotation or _mean_confidence(texts) < UPRIGHT_CONFIDENCE) and self._reads_better_turned(page, quads):
            rotation += 180
            page = np.ascontiguousarray(np.rot90(page, 2))
            quads, boxes = self._find_lines(page)
            texts = self._recognize_lines(page, quads)

        height, width = page.shape
        lines = tuple(
            TextLine(text=result.text, box=_int_box(box, width, height), confidence=round(result.confidence, 4))
            for result, box in zip(texts, boxes)
            if result.text
        )
        log.debug("Recognized %d line(s) on a %dx%d page turned by %d degrees", len(lines), width, height, rotation)
        return PageText(width=width, height=height, lines=lines, rotation=rotation)

    def detector_input(self, page: np.ndarray) -> np.ndarray:
        """Return the detector's input tensor for a :func:`prepare_page` result; for quantization calibration."""
        return detection.prepare_detection_input(page).tensor

    def recognizer_inputs(self, page: np.ndarray) -> list[np.ndarray]:
        """Return the recognizer's input batches for a :func:`prepare_page` result; for quantization calibration."""
        quads, _ = self._find_lines(page)
        chunks = self._line_chunks(page, quads)
        return [
            recognition.prepare_batch([chunks[i].image for i in batch], self._recognizer_channels)
            for batch in recognition.plan_batches(chunks)
        ]

    def line_images(self, page: np.ndarray) -> list[np.ndarray]:
        """Return the grey line images, 32 px high, that the recognizer reads on a :func:`prepare_page` result, for training (models/distill.py)."""
        quads, _ = self._find_lines(page)
        return [chunk.image for chunk in self._line_chunks(page, quads)]

    def _find_lines(self, page: np.ndarray) -> tuple[list[np.ndarray], list[layout.Box]]:
        """Detect text lines and return their quads and boxes in page pixels, in reading order."""
        height, width = page.shape
        prepared = detection.prepare_detection_input(page)
        probability = self._run(self._detector, {self._detector_input: prepared.tensor})[0][0, 0]
        regions = []
        for region in detection.find_line_regions(probability):
            regions.extend(layout.split_at_column_gaps(region, probability))

        quads = []
        for region in regions:
            quad = _to_page_pixels(region.quad, prepared.scale_x, prepared.scale_y, width, height)
            quads.extend(layout.split_at_ink_gaps(quad, page))
        boxes = [_bounding_box(quad) for quad in quads]
        order = layout.reading_order(layout.deskewed_boxes(quads))
        return [quads[i] for i in order], [boxes[i] for i in order]

    def _reads_better_turned(self, page: np.ndarray, quads: list[np.ndarray]) -> bool:
        """Return True if the start of the longest lines reads more confidently turned by 180 degrees."""
        longest = sorted(quads, key=lambda quad: float(np.linalg.norm(quad[1] - quad[0])), reverse=True)
        samples = []
        for quad in longest[:ORIENTATION_SAMPLE_LINES]:
            scaled = recognition.scale_to_line_height(recognition.crop_line(page, quad))
            turned = cv2.rotate(scaled, cv2.ROTATE_180)
            samples.append((scaled[:, :ORIENTATION_SAMPLE_WIDTH], turned[:, :ORIENTATION_SAMPLE_WIDTH]))
        if not samples:
            return False

        tensor = recognition.prepare_batch([image for pair in samples for image in pair], self._recognizer_channels)
        log_probs = self._run(self._recognizer, {self._recognizer_input: tensor})[0]
        results = recognition.decode_greedy(log_probs, self._charset)
        upright = _mean_confidence(results[0::2])
        turned = _mean_confidence(results[1::2])
        log.debug("Orientation check: confidence %.3f upright, %.3f turned by 180 degrees", upright, turned)
        return turned > upright + ORIENTATION_MARGIN

    @staticmethod
    def _line_chunks(page: np.ndarray, quads: list[np.ndarray]) -> list[recognition.Chunk]:
        chunks: list[recognition.Chunk] = []
        for line, quad in enumerate(quads):
            scaled = recognition.scale_to_line_height(recognition.crop_line(page, quad))
            chunks.extend(recognition.split_into_chunks(line, scaled))
        return chunks

    def _recognize_lines(self, page: np.ndarray, quads: list[np.ndarray]) -> list[recognition.Recognized]:
        chunks = self._line_chunks(page, quads)
        results: list[recognition.Recognized | None] = [None] * len(chunks)
        for batch in recognition.plan_batches(chunks):
            tensor = recognition.prepare_batch([chunks[i].image for i in batch], self._recognizer_channels)
            log_probs = self._run(self._recognizer, {self._recognizer_input: tensor})[0]
            for index, result in zip(batch, recognition.decode_greedy(log_probs, self._charset)):
                results[index] = result
        return _join_chunks(len(quads), chunks, results)

    @staticmethod
    def _run(session, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return session.run(None, feeds)
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            shapes = {name: tensor.shape for name, tensor in feeds.items()}
            raise OcrError(N_("OCR model failed on input of shape {shapes}: {detail}"), shapes=shapes, detail=exc) from exc


def is_sideways(boxes: list[layout.Box]) -> bool:
    """Return True if most detected lines run vertically, as on a page scanned turned by 90 or 270 degrees."""
    tall = sum(1 for box in boxes if box.y1 - box.y0 > SIDEWAYS_ASPECT * (box.x1 - box.x0))
    wide = sum(1 for box in boxes if box.x1 - box.x0 > SIDEWAYS_ASPECT * (box.y1 - box.y0))
    return tall > wide


def _mean_confidence(results: list[recognition.Recognized]) -> float:
    """Return the mean confidence of lines with text, weighted by their length; 0 if none has text."""
    characters = sum(len(result.text) for result in results)
    if not characters:
        return 0.0
    return sum(result.confidence * len(result.text) for result in results) / characters


def image_to_rgb(image: Image.Image) -> np.ndarray:
    """Decode ``image`` into an RGB array, translating decoder errors into ImageError."""
    width, height = image.size
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageError(
            N_("Image of {width}x{height} pixels is too small to be a page scan. Check the scanner's resolution"), width=width, height=height
        )
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            N_("Image of {width}x{height} pixels is too large for OCR. Scan at 600 dpi or less"), width=width, height=height
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            if image.mode.startswith("I;16") or image.mode == "I":
                return _sixteen_bit_to_rgb(image)
            if image.mode in ("RGBA", "LA", "PA"):
                image = _flatten_alpha(image)
            elif image.mode != "RGB":
                image = image.convert("RGB")
            return np.asarray(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageError(N_("Image cannot be decoded: {detail}. Rescan the page"), detail=exc) from exc


def prepare_page(image: Image.Image) -> np.ndarray:
    """Decode ``image`` and return the grey page, with coloured ink dropped, that both models read."""
    return drop_coloured_ink(image_to_rgb(image))


def drop_coloured_ink(rgb: np.ndarray) -> np.ndarray:
    """Return the page in grey with red seals and blue signatures faded, as a scanner's colour dropout does.

    Each pixel becomes its brightest channel plus COLOUR_DROPOUT_GAIN times
    its saturation (brightest minus darkest channel). Black and grey print,
    which has no saturation, stays as it is. Saturated ink (a red seal, a
    blue signature) turns white, so the detector finds no lines in it and
    black letters printed under a seal read cleanly.
    """
    # NOTE: text printed in colour (a red heading) fades too and may be lost.
    red, green, blue = cv2.split(rgb)
    brightest = cv2.max(cv2.max(red, green), blue)
    darkest = cv2.min(cv2.min(red, green), blue)
    saturation = cv2.subtract(brightest, darkest)
    # uint8 arithmetic in OpenCV saturates at 255 instead of wrapping.
    return cv2.addWeighted(brightest, 1.0, saturation, COLOUR_DROPOUT_GAIN, 0.0)


def _sixteen_bit_to_rgb(image: Image.Image) -> np.ndarray:
    """Scale a 16-bit grey image to 8 bits; Pillow's own conversion clips values above 255 instead.

    A 32-bit integer image whose values all fit in 8 bits is taken as 8-bit.
    """
    values = np.asarray(image).astype(np.int64)
    if values.max(initial=0) > 255:
        values = values // 257
    gray = values.clip(0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, np.newaxis], 3, axis=2)


def _flatten_alpha(image: Image.Image) -> Image.Image:
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
    return background


def _to_page_pixels(quad: np.ndarray, scale_x: float, scale_y: float, width: int, height: int) -> np.ndarray:
    page = quad / np.array([scale_x, scale_y], dtype=np.float32)
    page[:, 0] = np.clip(page[:, 0], 0, width)
    page[:, 1] = np.clip(page[:, 1], 0, height)
    return page


def _bounding_box(quad: np.ndarray) -> layout.Box:
    x0, y0 = quad.min(axis=0)
    x1, y1 = quad.max(axis=0)
    return layout.Box(float(x0), float(y0), float(x1), float(y1))


def _int_box(box: layout.Box, width: int, height: int) -> tuple[int, int, int, int]:
    return (
        max(0, int(np.floor(box.x0))),
        max(0, int(np.floor(box.y0))),
        min(width, int(np.ceil(box.x1))),
        min(height, int(np.ceil(box.y1))),
    )


def _join_chunks(
    line_count: int, chunks: list[recognition.Chunk], results: list[recognition.Recognized | None]
) -> list[recognition.Recognized]:
    texts: list[list[str]] = [[] for _ in range(line_count)]
    confidences: list[list[tuple[float, int]]] = [[] for _ in range(line_count)]
    for chunk, result in zip(chunks, results):
        assert result is not None
        if chunk.space_before and texts[chunk.line]:
            texts[chunk.line].append(" ")
        texts[chunk.line].append(result.text)
        confidences[chunk.line].append((result.confidence, len(result.text)))

    joined = []
    for parts, weights in zip(texts, confidences):
        text = re.sub(r"\s+", " ", "".join(parts)).strip()
        characters = sum(count for _, count in weights)
        confidence = sum(value * count for value, count in weights) / characters if characters else 0.0
        joined.append(recognition.Recognized(text=text, confidence=confidence))
    return joined
