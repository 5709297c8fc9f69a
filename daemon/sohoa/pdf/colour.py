"""Colour policy: a page keeps colour only when it has colour content, otherwise it is embedded in grey.

A seal, a photo, a coloured stamp or a signature in blue ink must stay in
colour. A page of black print on white or yellowed paper carries nothing in
its colour channels but scanner artefacts, and embedding it in grey keeps
the PDF small without losing anything. Only the embedded copy changes: the
scanner's lossless colour master stays on disk as it was.

How colour content is measured, on a copy downscaled with area averaging
to :data:`ANALYSIS_LONG_SIDE` pixels:

1. the chroma channels a* and b* of CIELAB (OpenCV's 8-bit Lab), minus
   their page median, so that the paper's own tint (white, cream, yellowed)
   counts as neutral;
2. a Gaussian blur of a* and b*. A scanner's colour channels are often
   misregistered by a fraction of a pixel, which leaves a red fringe on one
   side of each black stroke and a cyan fringe on the other. The two have
   opposite chroma and cancel in the blur, while ink of one colour keeps
   its chroma;
3. the share of pixels whose chroma exceeds :data:`CHROMA_MIN`. Above
   :data:`COLOUR_FRACTION_MIN` the page has colour content.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy
from PIL import Image

log = logging.getLogger(__name__)

ANALYSIS_LONG_SIDE = 1200  # pixels; about 0.25 mm per pixel on an A4 page
CHROMA_BLUR_SIGMA = 1.5  # analysis pixels
CHROMA_MIN = 20.0  # in OpenCV's 8-bit Lab units, where a* and b* span -128..127
# 0.03% of an A4 page is about 19 mm², less than a short ballpoint signature
# (about 0.075% in tests/test_colour.py) or the ring of a red seal (0.3%).
COLOUR_FRACTION_MIN = 0.0003
_COLOUR_MODES = ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


@dataclass(frozen=True)
class ColourAnalysis:
    """Share of coloured pixels on a page, and the decision taken from it."""

    colour_fraction: float
    has_colour: bool


def analyse_colour(image: Image.Image) -> ColourAnalysis:
    """Measure the share of coloured pixels of ``image``; bilevel and grey images have none."""
    if image.mode not in _COLOUR_MODES:
        return ColourAnalysis(0.0, False)
    pixels = numpy.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    scale = min(1.0, ANALYSIS_LONG_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)

    lab = cv2.cvtColor(pixels, cv2.COLOR_RGB2LAB).astype(numpy.float32)
    chroma_a = lab[..., 1] - numpy.median(lab[..., 1])
    chroma_b = lab[..., 2] - numpy.median(lab[..., 2])
    chroma_a = cv2.GaussianBlur(chroma_a, (0, 0), CHROMA_BLUR_SIGMA)
    chroma_b = cv2.GaussianBlur(chroma_b, (0, 0), CHROMA_BLUR_SIGMA)
    fraction = float((numpy.hypot(chroma_a, chroma_b) > CHROMA_MIN).mean())
    return ColourAnalysis(fraction, fraction > COLOUR_FRACTION_MIN)


def apply_colour_policy(image: Image.Image) -> Image.Image:
    """Return ``image`` unchanged when it has colour content or is not in colour, else its grey version."""
    if image.mode not in _COLOUR_MODES:
        return image
    analysis = analyse_colour(image)
    if analysis.has_colour:
        return image
    log.debug("Page has %.4f%% coloured pixels, embedding it in grey", analysis.colour_fraction * 100)
    if image.mode in ("RGBA", "PA", "P"):
        # Flatten alpha onto white first, as normalize_mode does for colour pages.
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("L")
