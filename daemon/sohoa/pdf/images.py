"""Page images: reading the scanner's PNG safely and choosing how to embed it."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy
from PIL import Image

from sohoa.errors import ImageError
from sohoa.i18n import N_

log = logging.getLogger(__name__)

# An A3 page (297 x 420 mm) scanned at 600 dpi is 7016 x 9922 pixels, the
# largest page the box is expected to scan. A header that declares more is
# rejected before any pixel is decoded, which stops decompression bombs.
MAX_PAGE_PIXELS = 7016 * 9922
MIN_DPI = 50
MAX_DPI = 1200
JPEG_QUALITY = 88


@dataclass(frozen=True)
class EmbeddableImage:
    """A page image ready for ``FPDF.image``: PIL image (Flate, CCITT) or JPEG bytes."""

    source: Image.Image | io.BytesIO
    width: int
    height: int
    encoding: str


def load_page_image(path: Path) -> Image.Image:
    """Read a page image fully into memory.

    Raises:
        ImageError: if the file is missing, corrupt, truncated, or declares
            more than :data:`MAX_PAGE_PIXELS` pixels.
    """
    try:
        image = Image.open(path)
    except (OSError, Image.DecompressionBombError) as exc:
        raise ImageError(N_("Page image {path} cannot be read: {detail}"), path=path, detail=exc) from exc

    width, height = image.size
    if width <= 0 or height <= 0 or width * height > MAX_PAGE_PIXELS:
        image.close()
        raise ImageError(
            N_(
                "Page image {path} is {width} x {height} pixels, more than the limit of"
                " {limit} pixels (A3 at 600 dpi); scan at a lower resolution."
            ),
            path=path,
            width=width,
            height=height,
            limit=MAX_PAGE_PIXELS,
        )

    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(N_("Page image {path} is corrupt or truncated: {detail}. Scan the page again."), path=path, detail=exc) from exc
    return image


def check_dpi(path: Path, dpi: int) -> None:
    if not MIN_DPI <= dpi <= MAX_DPI:
        raise ImageError(
            N_("Page image {path} has a resolution of {dpi} dpi; expected {low} to {high} dpi."),
            path=path,
            dpi=dpi,
            low=MIN_DPI,
            high=MAX_DPI,
        )


def normalize_mode(image: Image.Image) -> Image.Image:
    """Return the image as bilevel (``1``), grey (``L``) or colour (``RGB``), without alpha.

    PDF/A-2 allows soft masks, but a scan has nothing to mask, so alpha is
    flattened onto white rather than embedded.
    """
    if image.mode in ("1", "L", "RGB"):
        return image
    if image.mode.startswith("I;16"):
        # 16-bit grey from a scanner: keep the 8 most significant bits.
        return Image.fromarray((numpy.asarray(image, dtype=numpy.uint16) >> 8).astype(numpy.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flattened = Image.alpha_composite(background, rgba)
        return flattened.convert("L" if image.mode == "LA" else "RGB")
    return image.convert("RGB")


def prepare_for_embedding(image: Image.Image) -> EmbeddableImage:
    """Choose the lossless or JPEG encoding for one page.

    fpdf2 embeds bilevel pages with CCITT G4 when Pillow has libtiff, and
    grey pages with Flate. Colour pages, which carry seals and photos, become
    JPEG at quality :data:`JPEG_QUALITY`. No encoding substitutes symbols
    (no JBIG2), so characters are never swapped for look-alikes.
    """
    image = normalize_mode(image)
    width, height = image.size
    if image.mode != "RGB":
        encoding = "bilevel" if image.mode == "1" else "grey"
        return EmbeddableImage(source=image, width=width, height=height, encoding=encoding)

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True, subsampling="4:2:0")
    buffer.seek(0)
    return EmbeddableImage(source=buffer, width=width, height=height, encoding="jpeg")
