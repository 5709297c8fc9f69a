"""Line recognition: crops to AsterNet input, CTC greedy decoding.

The recognizer takes a batch of grey line images 32 px high, ``[batch, 1,
32, width]`` (``[batch, 3, 32, width]`` for AsterNet as asterocr ships it),
and returns log-probabilities ``[time, batch, classes]`` with one time step
per 4 input columns. Lines are narrowed to WIDTH_SCALE of their
width at that height, because the recognizer's time grows with the input
width and it reads the narrowed lines as well. Class 0 is the CTC blank.
Pixels are scaled to [0, 1] without mean subtraction, as in asterocr's
training data loader.

onnxruntime 1.32 fails on AsterNet inputs wider than 1024 px, so longer
lines are cut at word gaps into chunks of at most MAX_CHUNK_WIDTH and
recognized separately.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import cv2
import numpy as np

LINE_HEIGHT = 32
# Lines are scaled to LINE_HEIGHT and then narrowed to this share of their
# width. On the 9 pages of tests/benchmarks/ocr_benchmark.py (the int8 models
# built for full-width lines, 1 thread), narrowing to 0.7 cut the recognizer's
# time from 1.21 to 0.83 s a page, and its CER per quality went from
# 0.27-0.43% to 0.33-0.43%. At 0.6 the CER rose to 0.37-0.60%, and at 0.5 it
# passed 1%.
# NOTE: models/build.py calibrates on the engine's batches, so changing this
# changes the int8 recognizer it builds; rebuild and commit the models after.
WIDTH_SCALE = 0.7
CROP_PAD_HEIGHTS = 0.15
CROP_PAD_BOTTOM = 0.04
WIDTH_STEP = 4
MAX_CHUNK_WIDTH = 960
# A cut is searched for between this share of MAX_CHUNK_WIDTH and MAX_CHUNK_WIDTH.
CUT_SEARCH_START = 0.6
# A run of blank columns this wide (in recognizer input pixels) is a word
# space. It was 5 px before lines were narrowed by WIDTH_SCALE.
SPACE_MIN_WIDTH = 4
MAX_BATCH_SIZE = 16
# Sum of the padded widths of one batch, in pixels, to bound its memory.
# A batch's activations reach about 100 MB at 8192 px, so 4096 px kept the
# peak RSS of a 9-page run at 330-340 MB instead of 400-430 MB, at the same
# speed within measurement noise (tests/benchmarks/ocr_benchmark.py, 1 thread).
# NOTE: models/build.py calibrates on the engine's batches, so changing this
# changes the int8 recognizer it builds; rebuild and commit the models after.
MAX_BATCH_WIDTH = 4096
# Lines in one batch differ in width by at most this ratio, to limit padding.
BATCH_WIDTH_RATIO = 1.1
# Pixel value (0..255) used to pad crops; page background is white.
PAD_VALUE = 255


@dataclass(frozen=True)
class Chunk:
    """Part of a line: grey pixels scaled to the recognizer's height."""

    line: int
    image: np.ndarray
    space_before: bool


@dataclass(frozen=True)
class Recognized:
    """Text of a line or chunk and the mean probability of its characters."""

    text: str
    confidence: float


def crop_line(page: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Cut the rotated rectangle ``quad`` (page pixels) out of the grey page, upright.

    The rectangle is widened at both ends by CROP_PAD_HEIGHTS of its height,
    because the detector's boxes often end right at the last letter and
    leave out a trailing full stop or comma. It is lowered at the bottom by
    CROP_PAD_BOTTOM of its height, because a box that ends at the baseline
    cuts the dot below (Ộ read as Ô).
    """
    quad = _pad_quad(quad)
    width = max(1, int(round(np.linalg.norm(quad[1] - quad[0]))))
    height = max(1, int(round(np.linalg.norm(quad[3] - quad[0]))))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    transform = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    return cv2.warpPerspective(
        page, transform, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )


def _pad_quad(quad: np.ndarray) -> np.ndarray:
    top_left, top_right, bottom_right, bottom_left = quad.astype(np.float32)
    across = top_right - top_left
    down = bottom_left - top_left
    width = float(np.linalg.norm(across))
    height = float(np.linalg.norm(down))
    if width == 0 or height == 0:
        return quad.astype(np.float32)
    pad_x = across / width * CROP_PAD_HEIGHTS * height
    pad_y = down / height * CROP_PAD_BOTTOM * height
    return np.array(
        [top_left - pad_x, top_right + pad_x, bottom_right + pad_x + pad_y, bottom_left - pad_x + pad_y],
        dtype=np.float32,
    )


def scale_to_line_height(crop: np.ndarray) -> np.ndarray:
    """Scale a line crop to LINE_HEIGHT pixels high and WIDTH_SCALE of the width that keeps its aspect."""
    height, width = crop.shape
    target_width = max(WIDTH_STEP, int(round(width * LINE_HEIGHT / height * WIDTH_SCALE)))
    interpolation = cv2.INTER_AREA if height > LINE_HEIGHT else cv2.INTER_CUBIC
    return cv2.resize(crop, (target_width, LINE_HEIGHT), interpolation=interpolation)


def split_into_chunks(line: int, scaled: np.ndarray) -> list[Chunk]:
    """Cut a scaled line into chunks no wider than MAX_CHUNK_WIDTH, at the widest blank run."""
    ink = ink_columns(scaled)
    chunks = []
    start = 0
    space_before = False
    width = scaled.shape[1]
    while width - start > MAX_CHUNK_WIDTH:
        cut, is_space = _choose_cut(ink, start)
        chunks.append(Chunk(line=line, image=scaled[:, start:cut], space_before=space_before))
        start, space_before = cut, is_space
    chunks.append(Chunk(line=line, image=scaled[:, start:], space_before=space_before))
    return chunks


def ink_columns(image: np.ndarray) -> np.ndarray:
    """Return True for the columns of a grey line image that contain pixels darker than its background."""
    gray = image.astype(np.float32)
    background = float(np.percentile(gray, 90))
    darkest = float(gray.min())
    threshold = background - max(24.0, 0.35 * (background - darkest))
    return (gray < threshold).any(axis=0)


def _choose_cut(ink: np.ndarray, start: int) -> tuple[int, bool]:
    """Return the cut column in the middle of the widest blank run, and whether it is a space."""
    low = start + int(CUT_SEARCH_START * MAX_CHUNK_WIDTH)
    high = start + MAX_CHUNK_WIDTH
    window = ink[low:high]
    best_start, best_length, run_start = low, 0, None
    for offset, inked in enumerate(np.append(window, True)):
        if not inked and run_start is None:
            run_start = offset
        elif inked and run_start is not None:
            if offset - run_start > best_length:
                best_start, best_length = low + run_start, offset - run_start
            run_start = None
    if best_length == 0:
        # NOTE: no blank column in the window, so the cut may split a letter.
        return high, False
    return best_start + best_length // 2, best_length >= SPACE_MIN_WIDTH


def plan_batches(chunks: list[Chunk]) -> list[list[int]]:
    """Group chunk indices into batches of similar width, widest first."""
    order = sorted(range(len(chunks)), key=lambda i: chunks[i].image.shape[1], reverse=True)
    batches: list[list[int]] = []
    for index in order:
        width = chunks[index].image.shape[1]
        if batches:
            batch = batches[-1]
            batch_width = chunks[batch[0]].image.shape[1]
            fits = len(batch) < MAX_BATCH_SIZE and batch_width * (len(batch) + 1) <= MAX_BATCH_WIDTH
            if fits and batch_width <= width * BATCH_WIDTH_RATIO:
                batch.append(index)
                continue
        batches.append([index])
    return batches


def prepare_batch(images: list[np.ndarray], channels: int = 1) -> np.ndarray:
    """Pad grey line images (32 px high) to one width and scale them to [0, 1], as ``[N, channels, 32, width]``.

    The recognizer in models/ reads one grey channel. AsterNet as asterocr
    ships it reads three, so ``channels=3`` repeats the grey image into RGB.
    Pixels are not mean-subtracted, as in AsterNet's training.
    """
    width = max(image.shape[1] for image in images)
    width = -(-(width + 2 * WIDTH_STEP) // WIDTH_STEP) * WIDTH_STEP
    batch = np.full((len(images), 1, LINE_HEIGHT, width), PAD_VALUE, dtype=np.uint8)
    for row, image in enumerate(images):
        batch[row, 0, :, WIDTH_STEP : WIDTH_STEP + image.shape[1]] = image
    tensor = batch.astype(np.float32)
    tensor *= 1.0 / 255.0
    if channels == 1:
        return tensor
    return np.ascontiguousarray(np.broadcast_to(tensor, (len(images), channels, LINE_HEIGHT, width)))


def decode_greedy(log_probs: np.ndarray, charset: tuple[str, ...]) -> list[Recognized]:
    """Decode ``[time, batch, classes]`` log-probabilities by best path, collapsing repeats and blanks."""
    best = log_probs.argmax(axis=2)
    best_log_prob = log_probs.max(axis=2)
    results = []
    for column in range(best.shape[1]):
        path = best[:, column]
        keep = path != 0
        keep[1:] &= path[1:] != path[:-1]
        classes = path[keep]
        text = "".join(charset[c] for c in classes if c < len(charset))
        confidence = float(np.exp(best_log_prob[keep, column]).mean()) if classes.size else 0.0
        results.append(Recognized(text=unicodedata.normalize("NFC", text), confidence=confidence))
    return results
