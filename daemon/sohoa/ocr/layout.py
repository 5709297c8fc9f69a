"""Page layout: split joined columns and put lines in reading order.

Vietnamese administrative documents open with a two-column header (the
issuing body on the left, the national motto on the right) and close with a
two-column block (recipients on the left, the signer on the right). The
detector often joins the two columns into one region, and reading row by row
would interleave them. So regions are first split at wide gaps, then rows
that share a column gutter are read left column first, then right column.
The recipients list usually runs on below the signer's title, so a band
includes every following row that does not cross its gutter.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sohoa.ocr.detection import PIXEL_THRESHOLD, LineRegion
from sohoa.ocr.recognition import ink_columns

# A gap in a region wider than this many region heights separates two columns.
# Word spaces in a line are well under one height.
COLUMN_GAP_HEIGHTS = 1.2
# Share of a region's height, at top and at bottom, left out when looking for
# ink in the page, because a detected region is grown beyond its text and may
# reach the ascenders and descenders of the lines above and below.
INK_SEARCH_MARGIN = 0.2
# Two boxes are on one row when they overlap vertically by this share of the
# shorter box's height.
ROW_OVERLAP = 0.5
# Neighbours in a row whose boxes overlap by less than this many box heights
# are still two columns: the margin added when a joined region is split at
# its gutter makes the boxes of a narrow gutter overlap.
COLUMN_OVERLAP_HEIGHTS = 0.5


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in page pixels, x1 and y1 exclusive."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def height(self) -> float:
        return self.y1 - self.y0


def split_at_column_gaps(region: LineRegion, probability: np.ndarray) -> list[LineRegion]:
    """Split a region wherever the probability map has a gap wider than a column gutter."""
    quad = region.quad
    width = int(round(np.linalg.norm(quad[1] - quad[0])))
    height = int(round(np.linalg.norm(quad[3] - quad[0])))
    if width < 2 or height < 2:
        return [region]

    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    transform = cv2.getPerspectiveTransform(quad, target)
    strip = cv2.warpPerspective(probability, transform, (width, height), flags=cv2.INTER_LINEAR)
    inked = strip.max(axis=0) > PIXEL_THRESHOLD

    spans = _inked_spans(inked, min_gap=COLUMN_GAP_HEIGHTS * height)
    if len(spans) < 2:
        return [region]
    return [LineRegion(quad=_sub_quad(quad, start / width, end / width), score=region.score) for start, end in spans]


def split_at_ink_gaps(quad: np.ndarray, page: np.ndarray) -> list[np.ndarray]:
    """Split a line quad (page pixels) wherever the grey page has no ink over a gap wider than a column gutter.

    The detector's probability map, at its reduced scale, can bridge the
    narrow gutter between the two columns of the national header, while the
    page itself still shows the blank gap.
    """
    width = int(round(np.linalg.norm(quad[1] - quad[0])))
    height = int(round(np.linalg.norm(quad[3] - quad[0])))
    if width < 2 or height < 2:
        return [quad]

    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    transform = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    strip = cv2.warpPerspective(page, transform, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    margin = int(INK_SEARCH_MARGIN * height)
    inked = ink_columns(strip[margin : height - margin])

    spans = _inked_spans(inked, min_gap=COLUMN_GAP_HEIGHTS * height)
    if len(spans) < 2:
        return [quad]
    return [_sub_quad(quad, start / width, end / width) for start, end in spans]


def _inked_spans(inked: np.ndarray, min_gap: float) -> list[tuple[int, int]]:
    """Return (start, end) column spans separated by ink-free runs of at least ``min_gap``."""
    columns = np.flatnonzero(inked)
    if columns.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(columns) > min_gap)
    starts = np.concatenate(([columns[0]], columns[breaks + 1]))
    ends = np.concatenate((columns[breaks], [columns[-1]])) + 1
    return list(zip(starts.tolist(), ends.tolist()))


def _sub_quad(quad: np.ndarray, start: float, end: float) -> np.ndarray:
    """Cut the part of ``quad`` between two fractions of its width, keeping a margin."""
    top_left, top_right, bottom_right, bottom_left = quad
    height = float(np.linalg.norm(bottom_left - top_left))
    width = float(np.linalg.norm(top_right - top_left))
    margin = 0.2 * height / max(width, 1.0)
    start = max(0.0, start - margin)
    end = min(1.0, end + margin)
    return np.array(
        [
            top_left + (top_right - top_left) * start,
            top_left + (top_right - top_left) * end,
            bottom_left + (bottom_right - bottom_left) * end,
            bottom_left + (bottom_right - bottom_left) * start,
        ],
        dtype=np.float32,
    )


def deskewed_boxes(quads: list[np.ndarray]) -> list[Box]:
    """Return the bounding boxes of ``quads`` turned about the origin so that the page's lines run level.

    The skew is the median angle of the lines' top edges, weighted by their
    length. On a page scanned 3 degrees askew, the bounding box of a long
    line grows taller than the short line below its end and puts both in
    one row. So reading order is found on these boxes.
    """
    if not quads:
        return []
    edges = np.array([quad[1] - quad[0] for quad in quads], dtype=np.float64)
    angles = np.arctan2(edges[:, 1], edges[:, 0])
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    order = np.argsort(angles)
    cumulative = np.cumsum(lengths[order])
    skew = float(angles[order][np.searchsorted(cumulative, cumulative[-1] / 2)])

    cos, sin = np.cos(-skew), np.sin(-skew)
    boxes = []
    for quad in quads:
        x = quad[:, 0] * cos - quad[:, 1] * sin
        y = quad[:, 0] * sin + quad[:, 1] * cos
        boxes.append(Box(float(x.min()), float(y.min()), float(x.max()), float(y.max())))
    return boxes


def reading_order(boxes: list[Box]) -> list[int]:
    """Return the indices of ``boxes`` in reading order.

    Rows run top to bottom and boxes in a row left to right. A row of two or
    more boxes starts a two-column band, with the widest gap of that row as
    its gutter. The band runs down to the first row with a box that spans the
    gutter, and its left column is read before its right column.
    """
    rows = _group_rows(boxes)
    order: list[int] = []
    index = 0
    while index < len(rows):
        band_end, gutter = _find_band(rows, index, boxes)
        if gutter is None:
            order.extend(rows[index])
            index += 1
            continue
        middle = (gutter[0] + gutter[1]) / 2
        band = [member for row in rows[index:band_end] for member in row]
        band.sort(key=lambda member: (boxes[member].y0 + boxes[member].y1) / 2)
        order.extend(member for member in band if _center_x(boxes[member]) < middle)
        order.extend(member for member in band if _center_x(boxes[member]) >= middle)
        index = band_end
    return order


def _center_x(box: Box) -> float:
    return (box.x0 + box.x1) / 2


def _group_rows(boxes: list[Box]) -> list[list[int]]:
    """Group boxes into rows; a box joins a row if it overlaps the row's first box enough."""
    by_center = sorted(range(len(boxes)), key=lambda i: (boxes[i].y0 + boxes[i].y1) / 2)
    rows: list[list[int]] = []
    for member in by_center:
        box = boxes[member]
        if rows:
            first = boxes[rows[-1][0]]
            overlap = min(first.y1, box.y1) - max(first.y0, box.y0)
            shorter = min(first.height, box.height)
            if shorter > 0 and overlap >= ROW_OVERLAP * shorter:
                rows[-1].append(member)
                continue
        rows.append([member])
    return [sorted(row, key=lambda i: boxes[i].x0) for row in rows]


def _find_band(rows: list[list[int]], first: int, boxes: list[Box]) -> tuple[int, tuple[float, float] | None]:
    """Return the end row (exclusive) of the two-column band starting at ``first`` and its gutter."""
    gutter = _row_gutter(rows[first], boxes)
    if gutter is None:
        return first + 1, None

    band_end = first + 1
    while band_end < len(rows) and not any(
        boxes[member].x0 < gutter[0] and boxes[member].x1 > gutter[1] for member in rows[band_end]
    ):
        band_end += 1
    return band_end, gutter


def _row_gutter(row: list[int], boxes: list[Box]) -> tuple[float, float] | None:
    """Return the (left, right) x of the widest gap between boxes of a row, if it has one."""
    if len(row) < 2:
        return None
    gaps = [(boxes[right].x0 - boxes[left].x1, left, right) for left, right in zip(row, row[1:])]
    width, left, right = max(gaps)
    height = (boxes[left].height + boxes[right].height) / 2
    if width <= -COLUMN_OVERLAP_HEIGHTS * height:
        return None
    return min(boxes[left].x1, boxes[right].x0), max(boxes[left].x1, boxes[right].x0)
