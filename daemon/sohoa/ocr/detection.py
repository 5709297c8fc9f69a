"""Text detection: PP-OCRv6 probability map to line boxes.

The detector (a DB text detector) outputs, for each pixel of its input, the
probability that the pixel lies inside a text line. The map is thresholded,
each connected region becomes a rotated rectangle, and the rectangle is grown
("unclipped") by the margin the detector was trained to shrink text regions
by. Detection runs on a downscaled page, because the full 300 dpi page costs
several times the time and memory for no gain on body-size text.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pyclipper

# Maximum length of the detector input's longest side, in pixels. At 960 px
# the detector still found every line of 7 and 8 pt Liberation Serif and Noto
# Serif text on a 300 dpi A4 page, clean and at office-scan quality. It took
# 0.17 s a page against 0.32 s at 1280 px (int8, 1 thread). It joins the
# header's columns more often, so layout.split_at_ink_gaps splits them.
DETECTION_MAX_SIDE = 960
# The detector needs both input sides to be multiples of 32.
DETECTION_STRIDE = 32
# Mean and standard deviation of PaddleOCR's DB detector input, per channel.
DETECTION_MEAN = 0.5
DETECTION_STD = 0.5

PIXEL_THRESHOLD = 0.3
BOX_THRESHOLD = 0.5
UNCLIP_RATIO = 1.6
MIN_BOX_SIDE = 3
MAX_CANDIDATES = 2000


@dataclass(frozen=True)
class DetectionInput:
    """The detector's input tensor and its scale relative to the page."""

    tensor: np.ndarray
    scale_x: float
    scale_y: float


@dataclass(frozen=True)
class LineRegion:
    """A detected text line as a rotated rectangle.

    ``quad`` contains four corners, in detector pixels, ordered top-left,
    top-right, bottom-right, bottom-left.
    """

    quad: np.ndarray
    score: float


def prepare_detection_input(page: np.ndarray, max_side: int = DETECTION_MAX_SIDE) -> DetectionInput:
    """Scale a grey page so its longest side is at most ``max_side`` and normalize it to three channels."""
    height, width = page.shape
    scale = min(1.0, max_side / max(height, width))
    target_height = max(DETECTION_STRIDE, int(round(height * scale / DETECTION_STRIDE)) * DETECTION_STRIDE)
    target_width = max(DETECTION_STRIDE, int(round(width * scale / DETECTION_STRIDE)) * DETECTION_STRIDE)

    resized = cv2.resize(page, (target_width, target_height), interpolation=cv2.INTER_AREA)
    channel = resized.astype(np.float32)
    channel *= 1.0 / (255.0 * DETECTION_STD)
    channel -= DETECTION_MEAN / DETECTION_STD
    tensor = np.ascontiguousarray(np.broadcast_to(channel, (1, 3, target_height, target_width)))
    return DetectionInput(tensor=tensor, scale_x=target_width / width, scale_y=target_height / height)


def find_line_regions(probability: np.ndarray) -> list[LineRegion]:
    """Turn the detector's probability map (height x width) into line regions."""
    bitmap = (probability > PIXEL_THRESHOLD).astype(np.uint8)
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    regions = []
    for contour in contours[:MAX_CANDIDATES]:
        region = _region_from_contour(contour, probability)
        if region is not None:
            regions.append(region)
    return regions


def _region_from_contour(contour: np.ndarray, probability: np.ndarray) -> LineRegion | None:
    rectangle = cv2.minAreaRect(contour)
    if min(rectangle[1]) < MIN_BOX_SIDE:
        return None
    score = _mean_probability(probability, contour.reshape(-1, 2))
    if score < BOX_THRESHOLD:
        return None

    grown = _unclip(cv2.boxPoints(rectangle))
    if grown is None:
        return None
    rectangle = cv2.minAreaRect(grown)
    if min(rectangle[1]) < MIN_BOX_SIDE + 2:
        return None

    height, width = probability.shape
    quad = order_corners(cv2.boxPoints(rectangle))
    quad[:, 0] = np.clip(quad[:, 0], 0, width)
    quad[:, 1] = np.clip(quad[:, 1], 0, height)
    return LineRegion(quad=quad, score=score)


def _mean_probability(probability: np.ndarray, polygon: np.ndarray) -> float:
    x0, y0 = np.floor(polygon.min(axis=0)).astype(int)
    x1, y1 = np.ceil(polygon.max(axis=0)).astype(int)
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    cv2.fillPoly(mask, [(polygon - [x0, y0]).astype(np.int32)], 1)
    return float(cv2.mean(probability[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


def _unclip(box: np.ndarray) -> np.ndarray | None:
    """Grow a box by area * ratio / perimeter, the inverse of DB's training shrink."""
    area = cv2.contourArea(box)
    perimeter = cv2.arcLength(box, closed=True)
    if perimeter == 0:
        return None
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(box.astype(np.int64).tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    paths = offset.Execute(area * UNCLIP_RATIO / perimeter)
    if len(paths) != 1:
        return None
    return np.array(paths[0], dtype=np.float32)


def order_corners(points: np.ndarray) -> np.ndarray:
    """Order four corners as top-left, top-right, bottom-right, bottom-left."""
    by_x = points[np.argsort(points[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)
