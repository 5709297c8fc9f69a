"""Scan-like test pages for page clean-up: blank backs, near-blank pages, sheets on a dark background.

Every page is drawn with OpenCV from a seeded random generator, so a test
gets the same pixels on every run. A "blank" page carries what a real blank
back carries: paper shading, paper texture, sensor noise, dust specks and the
shadow of the sheet's edge.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

A4_MM = (210.0, 297.0)
MM_PER_INCH = 25.4


def mm(value: float, dpi: int) -> int:
    """Return ``value`` millimetres in pixels at ``dpi``."""
    return round(value * dpi / MM_PER_INCH)


def blank_scan(seed: int, *, dpi: int = 300, colour: bool = True, paper_level: int = 238, noise: float = 5.0) -> np.ndarray:
    """Return a blank A4 back as a scanner produces it, ``H x W x 3`` RGB or ``H x W`` grey.

    The page has a slow shading of about 12 grey levels across it and a paper
    texture of fibres a few pixels wide. It carries sensor noise of standard
    deviation ``noise``, 40 dust specks 1 to 3 pixels across, and the shadow
    of the sheet's edge along the top and left.
    """
    rng = np.random.default_rng(seed)
    width, height = mm(A4_MM[0], dpi), mm(A4_MM[1], dpi)

    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    columns = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    page = paper_level - 12.0 * (0.6 * rows + 0.4 * columns)
    texture = cv2.GaussianBlur(rng.normal(0.0, 1.0, (height, width)).astype(np.float32), (0, 0), 2.0)
    page = page + texture * (3.0 / max(float(texture.std()), 1e-6))
    page = page + rng.normal(0.0, noise, (height, width)).astype(np.float32)

    for _ in range(40):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        radius = int(rng.integers(0, 2))
        cv2.circle(page, (x, y), radius, float(paper_level - rng.integers(60, 140)), -1)

    # The sheet's edge casts a shadow 2 mm deep that fades into the paper.
    shadow = mm(2.0, dpi)
    fade = np.linspace(120.0, 0.0, shadow, dtype=np.float32)
    page[:shadow, :] -= fade[:, None]
    page[:, :shadow] -= fade[None, :]

    grey = np.clip(page, 0, 255).astype(np.uint8)
    if not colour:
        return grey
    # A slightly warm paper: the blue channel a little darker.
    return np.dstack([grey, grey, cv2.subtract(grey, 6)])


def draw_signature(page: np.ndarray, seed: int, dpi: int = 300) -> np.ndarray:
    """Draw one short handwritten-like stroke in blue ink, about 15 x 6 mm, and return the page."""
    rng = np.random.default_rng(seed)
    x0, y0 = mm(120.0, dpi), mm(200.0, dpi)
    steps = np.linspace(0.0, 2.0 * np.pi, 40)
    xs = x0 + np.linspace(0.0, mm(15.0, dpi), steps.size)
    ys = y0 + mm(3.0, dpi) * np.sin(steps * 1.5) + rng.normal(0.0, 1.0, steps.size)
    points = np.column_stack([xs, ys]).astype(np.int32)
    cv2.polylines(page, [points], False, _ink(page, (40, 60, 150)), thickness=max(2, mm(0.3, dpi)), lineType=cv2.LINE_AA)
    return page


def draw_faint_stamp(page: np.ndarray, dpi: int = 300) -> np.ndarray:
    """Draw a faint seal in light red: two rings 30 and 24 mm wide, and return the page."""
    centre = (mm(150.0, dpi), mm(230.0, dpi))
    colour = _ink(page, (232, 190, 190))
    cv2.circle(page, centre, mm(15.0, dpi), colour, thickness=mm(0.6, dpi), lineType=cv2.LINE_AA)
    cv2.circle(page, centre, mm(12.0, dpi), colour, thickness=mm(0.3, dpi), lineType=cv2.LINE_AA)
    return page


def draw_page_number(page: np.ndarray, number: str = "3", dpi: int = 300) -> np.ndarray:
    """Print ``number`` at the bottom centre, 12 mm above the edge, and return the page.

    The text box is 3.5 mm tall, which gives digits about 2.6 mm tall, as in 10 pt type.
    """
    height, width = page.shape[:2]
    thickness = max(2, mm(0.3, dpi))
    (_, unit_height), _ = cv2.getTextSize(number, cv2.FONT_HERSHEY_SIMPLEX, 1.0, thickness)
    scale = mm(3.5, dpi) / unit_height
    origin = (width // 2, height - mm(12.0, dpi))
    cv2.putText(page, number, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, _ink(page, (30, 30, 30)), thickness, cv2.LINE_AA)
    return page


def draw_pencil_mark(page: np.ndarray, dpi: int = 300, darkness: int = 40) -> np.ndarray:
    """Draw a light pencil tick 8 mm long, ``darkness`` grey levels under the paper, 2 px wide, and return the page."""
    x0, y0 = mm(60.0, dpi), mm(100.0, dpi)
    paper = int(np.median(page[y0 - 20 : y0 + 20, x0 - 20 : x0 + 20]))
    level = paper - darkness
    cv2.line(page, (x0, y0), (x0 + mm(3.0, dpi), y0 + mm(3.0, dpi)), _ink(page, (level, level, level)), 2, cv2.LINE_AA)
    cv2.line(page, (x0 + mm(3.0, dpi), y0 + mm(3.0, dpi)), (x0 + mm(8.0, dpi), y0 - mm(4.0, dpi)), _ink(page, (level, level, level)), 2, cv2.LINE_AA)
    return page


def on_dark_background(page: np.ndarray, seed: int, *, border_mm: float = 8.0, angle: float = 0.0, dpi: int = 300) -> np.ndarray:
    """Return ``page`` laid on a dark scanner background ``border_mm`` wide, turned by ``angle`` degrees counterclockwise."""
    rng = np.random.default_rng(seed)
    border = mm(border_mm, dpi)
    height, width = page.shape[:2]
    canvas_shape = (height + 2 * border, width + 2 * border) + page.shape[2:]
    background = np.clip(rng.normal(28.0, 6.0, canvas_shape), 0, 255).astype(np.uint8)
    sheet_mask = np.zeros(canvas_shape[:2], np.uint8)
    sheet_mask[border : border + height, border : border + width] = 255
    canvas = background.copy()
    canvas[border : border + height, border : border + width] = page
    if angle:
        centre = (canvas_shape[1] / 2, canvas_shape[0] / 2)
        matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
        size = (canvas_shape[1], canvas_shape[0])
        canvas = cv2.warpAffine(canvas, matrix, size, flags=cv2.INTER_LINEAR)
        sheet_mask = cv2.warpAffine(sheet_mask, matrix, size, flags=cv2.INTER_NEAREST)
        canvas[sheet_mask == 0] = background[sheet_mask == 0]
    return canvas


def to_image(page: np.ndarray, dpi: int = 300) -> Image.Image:
    """Return ``page`` as a Pillow image that carries ``dpi``."""
    image = Image.fromarray(page)
    image.info["dpi"] = (dpi, dpi)
    return image


def save_png(page: np.ndarray, path, dpi: int = 300) -> None:
    """Write ``page`` as a PNG with its dpi, as the scanner module writes pages."""
    Image.fromarray(page).save(path, format="PNG", dpi=(dpi, dpi), compress_level=1)


def _ink(page: np.ndarray, rgb: tuple[int, int, int]):
    """Return ``rgb`` in the form OpenCV draws with on ``page``: a tuple for colour, one grey level for grey."""
    if page.ndim == 3:
        return tuple(int(channel) for channel in rgb)
    return int(round(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]))
