"""Page clean-up between scanning and recognition: blank backs, black borders, skew.

The scanned page file is never changed, because its SHA-256 is in the journal
and in the QR code of the conversion mark. Clean-up returns a derived image
that OCR reads and the PDF embeds; :class:`sohoa.pipeline.Pipeline` writes it
next to the scan.

Order of the steps in :func:`clean_page`:

1. :func:`is_blank` measures the ink on the sheet. A page is dropped only when
   no group of ink pixels reaches :data:`MIN_MARK_AREA_MM2` and the ink in
   total stays under :data:`MAX_BLANK_INK_RATIO`; any signature, stamp, digit
   or pencil mark keeps it.
2. :func:`crop_to_paper` paints the dark scanner background around the sheet
   in the paper's colour and crops to the sheet plus a small margin.
3. :func:`deskew` turns the page by the skew of its text lines, at most
   :data:`MAX_SKEW_DEGREES`, and leaves it alone when the lines disagree.

Turning a page by 90, 180 or 270 degrees is left to the OCR engine, which
detects it while reading (see ``PageText.rotation``).

Images are numpy arrays as Pillow gives them: ``H x W`` grey or ``H x W x 3``
RGB, ``uint8``. Sizes in millimetres are converted with the page's dpi.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

MM_PER_INCH = 25.4

# Blank-page detection. A pixel is ink when it is this many grey levels darker
# than the paper around it, after a 3 x 3 Gaussian blur that brings sensor
# noise of 5 levels (standard deviation) down to about 2.
# NOTE: a pencil line 2 px wide needs about 24 levels of contrast to count.
# At 16 levels, blank pages with sensor noise of 7 levels were no longer found
# blank, so fainter marks are traded for that.
INK_CONTRAST_LEVELS = 20
# A group of ink pixels this large keeps the page: a dot 0.5 mm across. In
# the tests, a digit printed 2.6 mm tall (10 pt type) covers 3.5 to 4.5 mm² and
# a light pencil tick 8 mm long 1.5 to 4 mm². Dust and noise specks stay below it.
MIN_MARK_AREA_MM2 = 0.2
# Specks smaller than a mark still keep the page when together they cover
# this fraction of the sheet (dot-printed or very light text).
MAX_BLANK_INK_RATIO = 0.0002
# Band along the sheet's edges left out of the measurement: the shadow of the
# sheet edge and the scanner's own edge. Page numbers usually sit 10 mm or
# more from the edge.
BLANK_EDGE_MARGIN_MM = 5.0
# The paper's local brightness is measured on 1 mm cells with a 7 mm maximum
# filter, wider than any pen stroke, so slow shading is not taken as ink.
PAPER_CELL_MM = 1.0
PAPER_WINDOW_CELLS = 7

# Crop to the sheet. The sheet is the largest bright region; its outside is
# scanner background only when it is this many grey levels darker than the paper.
MIN_BORDER_CONTRAST_LEVELS = 60
MIN_SHEET_FRACTION = 0.2
# Less background than this fraction of the image is no border worth cropping.
MIN_BORDER_FRACTION = 0.002
CROP_MARGIN_MM = 1.0
# The sheet's outline is found on a 100 dpi copy and its edge pixels blend
# paper with background, so this band inside the outline is painted too.
# Office printers leave a margin of several millimetres, so no print lies there.
SHEET_EDGE_MM = 0.5
SHEET_ANALYSIS_DPI = 100

# Deskew: text lines are found at SKEW_ANALYSIS_DPI by joining the letters of
# each line with a horizontal closing SKEW_JOIN_INCH wide.
SKEW_ANALYSIS_DPI = 150
SKEW_JOIN_INCH = 0.1
MAX_SKEW_DEGREES = 10.0
# Below this the page is left as scanned: resampling would cost sharpness for
# a tilt that neither OCR nor a reader notices (0.2 degrees is 0.7 mm across A4).
MIN_SKEW_DEGREES = 0.2
MIN_SKEW_LINES = 3
# Lines whose angles spread more than this (median absolute deviation) are not
# trusted: a page of drawings, a photo, or mixed directions.
MAX_SKEW_SPREAD_DEGREES = 0.5
MIN_LINE_LENGTH_INCH = 0.8
MAX_LINE_THICKNESS_INCH = 0.5
MIN_LINE_ELONGATION = 6.0


@dataclass(frozen=True)
class Sheet:
    """The sheet of paper found on a scan against a dark background."""

    hull: np.ndarray  # convex hull of the sheet, int32 points (x, y) in image pixels
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) of the hull, x1 and y1 exclusive
    paper_level: int  # median grey level of the paper
    border_level: int  # median grey level of the background around it
    border_fraction: float  # fraction of the image outside the hull


@dataclass(frozen=True)
class BlankVerdict:
    """The ink measured on one page, and whether the page counts as blank."""

    blank: bool
    ink_ratio: float  # fraction of the measured area that is ink
    measured_mm2: float  # area measured: the sheet less BLANK_EDGE_MARGIN_MM at its edges
    # Groups of ink pixels are counted only when the ink ratio alone does not
    # keep the page; these are None otherwise.
    marks: int | None = None  # groups of MIN_MARK_AREA_MM2 or more
    specks: int | None = None  # smaller groups, taken as dust and noise
    largest_mark_mm2: float | None = None  # area of the largest group

    def describe(self) -> str:
        """Return the figures as one line for the log and the journal."""
        figures = f"ink {self.ink_ratio * 100:.4f}% of {self.measured_mm2 / 100:.0f} cm²"
        if self.marks is None:
            return f"{figures}, more than the {MAX_BLANK_INK_RATIO * 100:.2f}% a blank page may have"
        return (
            f"{figures}, {self.marks} mark(s) of {MIN_MARK_AREA_MM2} mm² or more, {self.specks} speck(s), "
            f"largest {self.largest_mark_mm2:.2f} mm²"
        )


@dataclass(frozen=True)
class SkewEstimate:
    """The skew of a page's text lines.

    ``angle`` is in degrees, counterclockwise positive in the image as shown
    (the sense of ``cv2.getRotationMatrix2D``), the turn that makes the lines
    level; None when the lines are too few or disagree.
    """

    angle: float | None
    lines: int
    spread: float


@dataclass(frozen=True)
class CleanResult:
    """Outcome of :func:`clean_page` for one page."""

    image: Image.Image | None  # the cleaned page; None when the page is blank and was dropped
    verdict: BlankVerdict | None  # None when blank pages are not looked for
    sheet: Sheet | None  # the sheet cropped to, or None when no dark border was found or cropping is off
    skew: SkewEstimate | None  # None when deskewing is off
    deskewed: bool

    @property
    def dropped(self) -> bool:
        return self.image is None

    @property
    def changed(self) -> bool:
        """Whether the cleaned image differs from the scan."""
        return self.sheet is not None or self.deskewed


def pixels_per_mm(dpi: float) -> float:
    return dpi / MM_PER_INCH


def to_grey(image: np.ndarray) -> np.ndarray:
    """Return the grey page in which any ink is dark: the darkest channel of a colour page.

    The darkest channel keeps a faint red stamp or blue ink as dark as its
    strongest colour, where luminance would lighten it.
    """
    if image.ndim == 2:
        return image
    red, green, blue = cv2.split(image)
    return cv2.min(cv2.min(red, green), blue)


def _resize_to_dpi(image: np.ndarray, dpi: float, target_dpi: float) -> tuple[np.ndarray, float]:
    """Return ``image`` shrunk to about ``target_dpi`` (never enlarged) and the factor applied."""
    factor = min(1.0, target_dpi / dpi)
    if factor >= 1.0:
        return image, 1.0
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor


# sheet


def find_sheet(image: np.ndarray, dpi: float) -> Sheet | None:
    """Find the sheet of paper on a scan with a dark background, or return None.

    None means there is no dark border: the scanner's backing is light, or
    the sheet fills the scan. The background is the region darker than
    Otsu's threshold that touches the scan's edges, so a dark frame printed
    inside the paper's white margin is never taken for it. The sheet is the
    largest region left, taken with its convex hull so that dark content at
    the paper's edge stays inside it.
    """
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    small, factor = _resize_to_dpi(grey, dpi, SHEET_ANALYSIS_DPI)
    _, bright = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    bright = cv2.morphologyEx(bright, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    background = _edge_connected(cv2.bitwise_not(bright))
    if cv2.countNonZero(background) < MIN_BORDER_FRACTION * small.size:
        return None
    contours, _ = cv2.findContours(cv2.bitwise_not(background), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    hull = cv2.convexHull(max(contours, key=cv2.contourArea))

    inside = np.zeros_like(small)
    cv2.fillConvexPoly(inside, hull, 255)
    inside_count = cv2.countNonZero(inside)
    border_fraction = 1.0 - inside_count / small.size
    if inside_count < MIN_SHEET_FRACTION * small.size or border_fraction < MIN_BORDER_FRACTION:
        return None
    paper_level = int(np.median(small[(inside > 0) & (bright > 0)]))
    border_level = int(np.median(small[(inside == 0) & (background > 0)]))
    if paper_level - border_level < MIN_BORDER_CONTRAST_LEVELS:
        return None

    full_hull = np.round(hull.reshape(-1, 2) / factor).astype(np.int32)
    height, width = grey.shape
    full_hull[:, 0] = np.clip(full_hull[:, 0], 0, width - 1)
    full_hull[:, 1] = np.clip(full_hull[:, 1], 0, height - 1)
    x, y, box_width, box_height = cv2.boundingRect(full_hull)
    return Sheet(
        hull=full_hull,
        box=(x, y, x + box_width, y + box_height),
        paper_level=paper_level,
        border_level=border_level,
        border_fraction=round(border_fraction, 4),
    )


def _edge_connected(mask: np.ndarray) -> np.ndarray:
    """Return the parts of ``mask`` (0 or 255) connected to the image's edges."""
    count, labels = cv2.connectedComponents(mask, connectivity=4)
    if count <= 1:
        return np.zeros_like(mask)
    edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge_labels = edge_labels[edge_labels != 0]
    return np.where(np.isin(labels, edge_labels), 255, 0).astype(np.uint8)


def _sheet_mask(shape: tuple[int, int], sheet: Sheet | None) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    if sheet is None:
        mask[:] = 255
    else:
        cv2.fillConvexPoly(mask, sheet.hull, 255)
    return mask


def paper_colour(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[int, ...]:
    """Return the paper's colour: the per-channel median of the brightest half of the page's pixels.

    The brightest half is paper on any page that is not mostly ink, so the
    median of it is the paper's shade, not the ink's.
    """
    step = max(1, image.shape[0] // 400)
    sample = image[::step, ::step]
    grey = to_grey(sample)
    selected = grey >= np.median(grey if mask is None else grey[mask[::step, ::step] > 0])
    if mask is not None:
        selected &= mask[::step, ::step] > 0
    pixels = sample[selected]
    if pixels.size == 0:
        pixels = sample.reshape(-1, *sample.shape[2:])
    if image.ndim == 2:
        return (int(np.median(pixels)),)
    return tuple(int(value) for value in np.median(pixels.reshape(-1, image.shape[2]), axis=0))


# blank pages


def is_blank(image: np.ndarray, dpi: float, sheet: Sheet | None = None) -> BlankVerdict:
    """Measure the ink on a page and decide conservatively whether it is blank.

    The paper's own brightness is estimated around every point, so uneven
    lighting and the shadow near the edges are not ink, and a band of
    :data:`BLANK_EDGE_MARGIN_MM` along the sheet's edges is left out. Ink is
    grouped into connected pixels: one group of :data:`MIN_MARK_AREA_MM2`
    or more, or specks covering more than :data:`MAX_BLANK_INK_RATIO` of the
    sheet together, keep the page. ``sheet`` is :func:`find_sheet`'s result
    when the caller already has it.
    """
    grey = to_grey(image)
    if sheet is None:
        sheet = find_sheet(image, dpi)
    scale = pixels_per_mm(dpi)

    measured = _measured_area(grey.shape, sheet, dpi)
    measured_pixels = cv2.countNonZero(measured)
    if measured_pixels == 0:
        # A sliver narrower than two margins: nothing to measure, so it is kept.
        return BlankVerdict(blank=False, ink_ratio=0.0, measured_mm2=0.0)

    blurred = cv2.GaussianBlur(grey, (3, 3), 0)
    ink = cv2.subtract(estimate_paper(blurred, dpi), blurred)
    _, ink = cv2.threshold(ink, INK_CONTRAST_LEVELS, 255, cv2.THRESH_BINARY)
    ink = cv2.bitwise_and(ink, measured)
    ink_ratio = cv2.countNonZero(ink) / measured_pixels
    measured_mm2 = measured_pixels / (scale * scale)
    if ink_ratio > MAX_BLANK_INK_RATIO:
        return BlankVerdict(blank=False, ink_ratio=ink_ratio, measured_mm2=measured_mm2)

    count, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    areas = stats[1:count, cv2.CC_STAT_AREA]
    marks = int(np.count_nonzero(areas >= MIN_MARK_AREA_MM2 * scale * scale))
    return BlankVerdict(
        blank=marks == 0,
        ink_ratio=ink_ratio,
        measured_mm2=measured_mm2,
        marks=marks,
        specks=int(areas.size) - marks,
        largest_mark_mm2=float(areas.max(initial=0)) / (scale * scale),
    )


def _measured_area(shape: tuple[int, int], sheet: Sheet | None, dpi: float) -> np.ndarray:
    """Return the mask of the sheet less BLANK_EDGE_MARGIN_MM along its edges, built on 1 mm cells."""
    cell = pixels_per_mm(dpi) * PAPER_CELL_MM
    cells_shape = (max(1, round(shape[0] / cell)), max(1, round(shape[1] / cell)))
    mask = np.zeros(cells_shape, np.uint8)
    if sheet is None:
        mask[:] = 255
    else:
        cv2.fillConvexPoly(mask, np.round(sheet.hull * (cells_shape[1] / shape[1])).astype(np.int32), 255)
    margin = round(BLANK_EDGE_MARGIN_MM / PAPER_CELL_MM)
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    mask = cv2.erode(mask, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def estimate_paper(grey: np.ndarray, dpi: float) -> np.ndarray:
    """Return the paper's brightness around every pixel, as if the ink were lifted off."""
    cells, factor = _resize_to_dpi(grey, dpi, MM_PER_INCH / PAPER_CELL_MM)
    window = np.ones((PAPER_WINDOW_CELLS, PAPER_WINDOW_CELLS), np.uint8)
    paper = cv2.dilate(cells, window)
    paper = cv2.blur(paper, (PAPER_WINDOW_CELLS, PAPER_WINDOW_CELLS))
    if factor >= 1.0:
        return paper
    return cv2.resize(paper, (grey.shape[1], grey.shape[0]), interpolation=cv2.INTER_LINEAR)


# crop


def crop_to_paper(image: np.ndarray, dpi: float, sheet: Sheet | None = None) -> tuple[np.ndarray, Sheet | None]:
    """Remove the dark scanner background around the sheet; return the page and the sheet found.

    The background outside the sheet's convex hull is painted in the paper's
    colour and the image is cropped to the hull plus :data:`CROP_MARGIN_MM`.
    Nothing inside the hull is changed, so no content is cut. Without a dark
    background the image is returned unchanged with None.
    """
    if sheet is None:
        sheet = find_sheet(image, dpi)
    if sheet is None:
        return image, None

    mask = _sheet_mask(image.shape[:2], sheet)
    edge = max(1, round(SHEET_EDGE_MM * pixels_per_mm(dpi)))
    mask = cv2.erode(mask, np.ones((2 * edge + 1, 2 * edge + 1), np.uint8))
    painted = image.copy()
    painted[mask == 0] = paper_colour(image, mask)
    return _crop_around(painted, sheet.box, dpi), sheet


def _crop_around(image: np.ndarray, box: tuple[int, int, int, int], dpi: float) -> np.ndarray:
    """Return ``image`` cropped to ``box`` plus CROP_MARGIN_MM on each side."""
    margin = round(CROP_MARGIN_MM * pixels_per_mm(dpi))
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box
    x0, y0 = max(0, x0 - margin), max(0, y0 - margin)
    x1, y1 = min(width, x1 + margin), min(height, y1 + margin)
    return np.ascontiguousarray(image[y0:y1, x0:x1])


# deskew


def estimate_skew(image: np.ndarray, dpi: float) -> SkewEstimate:
    """Estimate the skew from the page's text lines, horizontal or, on a sideways page, vertical."""
    small, _ = _resize_to_dpi(image, dpi, SKEW_ANALYSIS_DPI)
    small = to_grey(small)
    analysis_dpi = dpi * small.shape[1] / image.shape[1]
    _, ink = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)

    estimate = _line_skew(ink, analysis_dpi, vertical=False)
    if estimate.angle is None:
        sideways = _line_skew(ink, analysis_dpi, vertical=True)
        if sideways.angle is not None:
            return sideways
    return estimate


def _line_skew(ink: np.ndarray, dpi: float, *, vertical: bool) -> SkewEstimate:
    """Join each line's letters into one blob, fit a rotated rectangle to each, and take the median angle."""
    join = max(3, round(SKEW_JOIN_INCH * dpi))
    kernel = np.ones((join, 1) if vertical else (1, join), np.uint8)
    lines = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, kernel)
    contours, _ = cv2.findContours(lines, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)

    angles, lengths = [], []
    for contour in contours:
        if len(contour) < 5:
            continue
        angle, length, thickness = _line_angle(cv2.minAreaRect(contour), vertical=vertical)
        if (
            length >= MIN_LINE_LENGTH_INCH * dpi
            and thickness <= MAX_LINE_THICKNESS_INCH * dpi
            and length >= MIN_LINE_ELONGATION * max(thickness, 1.0)
            and abs(angle) <= MAX_SKEW_DEGREES + MAX_SKEW_SPREAD_DEGREES
        ):
            angles.append(angle)
            lengths.append(length)
    if len(angles) < MIN_SKEW_LINES:
        return SkewEstimate(None, len(angles), 0.0)

    angle = _weighted_median(np.array(angles), np.array(lengths))
    spread = _weighted_median(np.abs(np.array(angles) - angle), np.array(lengths))
    if spread > MAX_SKEW_SPREAD_DEGREES or abs(angle) > MAX_SKEW_DEGREES:
        return SkewEstimate(None, len(angles), round(spread, 3))
    return SkewEstimate(round(angle, 3), len(angles), round(spread, 3))


def _line_angle(rect, *, vertical: bool) -> tuple[float, float, float]:
    """Return the turn (degrees, counterclockwise positive) that levels a rotated rectangle, its length and thickness."""
    corners = cv2.boxPoints(rect)
    first, second = corners[1] - corners[0], corners[2] - corners[1]
    along, across = (first, second) if np.hypot(*first) >= np.hypot(*second) else (second, first)
    dx, dy = float(along[0]), float(along[1])
    if vertical:
        # A vertical line is levelled like the horizontal line it becomes when the page is turned upright.
        dx, dy = dy, -dx
    if dx < 0:
        dx, dy = -dx, -dy
    # Image y points down, so a line rising to the right has dy < 0 and is
    # levelled by turning it clockwise, a negative angle.
    angle = math.degrees(math.atan2(dy, dx))
    return angle, float(np.hypot(*along)), float(np.hypot(*across))


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def deskew(image: np.ndarray, dpi: float, estimate: SkewEstimate | None = None) -> tuple[np.ndarray, SkewEstimate, bool]:
    """Turn the page so its text lines are level; return the page, the estimate and whether it was turned.

    The page is left as it is when the estimate is unsure or under
    :data:`MIN_SKEW_DEGREES`. The turned page is filled with the paper's
    colour and keeps its size when the corners that fall outside hold only
    paper. It grows to hold the whole turned page when they hold ink.
    """
    if estimate is None:
        estimate = estimate_skew(image, dpi)
    if estimate.angle is None or abs(estimate.angle) < MIN_SKEW_DEGREES:
        return image, estimate, False
    turned, _ = _turn(image, estimate.angle, dpi)
    return turned, estimate, True


def _turn(image: np.ndarray, angle: float, dpi: float) -> tuple[np.ndarray, np.ndarray]:
    """Turn ``image`` by ``angle`` degrees; return it and the 2 x 3 matrix from old to new pixel positions."""

    height, width = image.shape[:2]
    fill = paper_colour(image)
    radians = math.radians(angle)
    cos, sin = abs(math.cos(radians)), abs(math.sin(radians))
    grown_width, grown_height = math.ceil(width * cos + height * sin), math.ceil(width * sin + height * cos)
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    matrix[0, 2] += (grown_width - width) / 2
    matrix[1, 2] += (grown_height - height) / 2
    turned = cv2.warpAffine(
        image,
        matrix,
        (grown_width, grown_height),
        # Bilinear: on a 300 dpi colour A4 page, OpenCV 5.1's bicubic warp took
        # ten times as long (1.1 s against 0.12 s, one x86 core).
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=fill if len(fill) > 1 else fill[0],
    )
    top, left = _trim_offsets(turned, (height, width), min(fill), dpi)
    matrix[0, 2] -= left
    matrix[1, 2] -= top
    return np.ascontiguousarray(turned[top : top + height if top else None, left : left + width if left else None]), matrix


def _trim_offsets(turned: np.ndarray, size: tuple[int, int], paper_level: int, dpi: float) -> tuple[int, int]:
    """Return the top and left offsets that cut ``turned`` back to ``size`` around its centre, or (0, 0).

    The page is cut back only when the strips cut off hold no ink: no more
    than a speck's worth of pixels INK_CONTRAST_LEVELS darker than
    ``paper_level``. Shading darker than that also keeps the grown size,
    which loses nothing.
    """
    height, width = size
    top = max(0, (turned.shape[0] - height) // 2)
    left = max(0, (turned.shape[1] - width) // 2)
    if top == 0 and left == 0:
        return 0, 0
    strips = [turned[:top], turned[top + height :], turned[:, :left], turned[:, left + width :]]
    threshold = paper_level - INK_CONTRAST_LEVELS
    ink = sum(int(np.count_nonzero(to_grey(np.ascontiguousarray(strip)) < threshold)) for strip in strips if strip.size)
    if ink > MIN_MARK_AREA_MM2 * pixels_per_mm(dpi) ** 2:
        return 0, 0
    return top, left


def _turned_box(sheet: Sheet, matrix: np.ndarray, dpi: float) -> tuple[int, int, int, int]:
    """Return the box of ``sheet`` after :func:`crop_to_paper` cropped it and ``matrix`` turned it."""
    margin = round(CROP_MARGIN_MM * pixels_per_mm(dpi))
    origin = np.array([max(0, sheet.box[0] - margin), max(0, sheet.box[1] - margin)], np.float32)
    hull = (sheet.hull.astype(np.float32) - origin).reshape(-1, 1, 2)
    x, y, width, height = cv2.boundingRect(cv2.transform(hull, matrix).astype(np.int32))
    return (x, y, x + width, y + height)


# the whole page


def clean_page(image: Image.Image, dpi: float, *, remove_blank: bool, crop: bool, straighten: bool) -> CleanResult:
    """Clean one scanned page: drop it when blank, else crop it to the sheet and deskew it.

    The result keeps the scan's colour mode (bilevel, grey or RGB), and the
    caller keeps its dpi. A page is never dropped when ``remove_blank`` is
    False.
    """
    from sohoa.pdf.images import normalize_mode

    image = normalize_mode(image)
    mode = image.mode
    pixels = np.asarray(image.convert("L") if mode == "1" else image)
    sheet = find_sheet(pixels, dpi) if (remove_blank or crop) else None

    verdict = None
    if remove_blank:
        verdict = is_blank(pixels, dpi, sheet)
        if verdict.blank:
            return CleanResult(image=None, verdict=verdict, sheet=sheet, skew=None, deskewed=False)

    cropped = None
    if crop:
        pixels, cropped = crop_to_paper(pixels, dpi, sheet)

    skew, deskewed = None, False
    if straighten:
        skew = estimate_skew(pixels, dpi)
        deskewed = skew.angle is not None and abs(skew.angle) >= MIN_SKEW_DEGREES
    if deskewed:
        pixels, matrix = _turn(pixels, skew.angle, dpi)
        if cropped is not None:
            # Crop again to the turned sheet, so a tilted sheet gains no paper-coloured frame.
            pixels = _crop_around(pixels, _turned_box(cropped, matrix, dpi), dpi)

    if cropped is None and not deskewed:
        return CleanResult(image=image, verdict=verdict, sheet=None, skew=skew, deskewed=False)
    cleaned = Image.fromarray(pixels)
    if mode == "1":
        cleaned = cleaned.point(lambda level: 255 if level >= 128 else 0).convert("1")
    return CleanResult(image=cleaned, verdict=verdict, sheet=cropped, skew=skew, deskewed=deskewed)
