"""The file types the hot folder accepts, recognized by content, and their conversion to page images.

Accepted: PDF, TIFF (every page of a multi-page TIFF), JPEG and PNG. The
type comes from the file's first bytes, never from its extension alone.
Each page is stored as a lossless PNG: images are decoded once and written
without further loss, and PDF pages are rasterized by ``pdftoppm`` from
poppler-utils. ``pdftoppm`` runs as a child process with a timeout, so a
malformed PDF from the network cannot crash the daemon or keep its memory.
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pikepdf
from PIL import Image, ImageSequence, UnidentifiedImageError
from pyhanko.pdf_utils.misc import PdfError as PyHankoPdfError
from pyhanko.pdf_utils.reader import PdfFileReader

from sohoa.errors import CorruptFileError, EncryptedPdfError, TooManyPagesError, UnsupportedFileError
from sohoa.fsutil import replace_durably
from sohoa.i18n import N_

log = logging.getLogger(__name__)

PDF, TIFF, JPEG, PNG = "pdf", "tiff", "jpeg", "png"
# How many bytes of the file are read to recognize its type. PDF readers
# accept "%PDF-" anywhere in the first 1024 bytes.
SNIFF_BYTES = 1024
# A complete PDF ends with "%%EOF" in its last bytes; a transfer cut short does not.
PDF_TAIL_BYTES = 2048
RASTERIZE_TIMEOUT_SECONDS = 300
TEXT_TIMEOUT_SECONDS = 120
# pdftoppm's colour options for the scanner's SANE modes; other modes render in colour.
RENDER_MODE_OPTIONS = {"gray": ["-gray"], "grey": ["-gray"], "lineart": ["-mono"], "binary": ["-mono"]}


@dataclass(frozen=True)
class PageImage:
    """One page written as PNG: its path, size in pixels and resolution in dpi."""

    path: Path
    width: int
    height: int
    dpi: int


@dataclass(frozen=True)
class PdfInfo:
    page_count: int
    signed: bool


def sniff_type(path: Path) -> str:
    """Return the type of the file at ``path`` from its first bytes; raise UnsupportedFileError for any other type."""
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return TIFF
    if b"%PDF-" in head:
        return PDF
    raise UnsupportedFileError(
        N_("{name} is not a PDF, TIFF, JPEG or PNG file (its content starts with {start}); set the scanner to save one of these types."),
        name=path.name,
        start=head[:8].hex(" ") or "nothing",
    )


# images


def image_pages(path: Path, kind: str, max_pages: int) -> Iterator[Image.Image]:
    """Yield each page of the TIFF, JPEG or PNG at ``path``, decoded in full; raise CorruptFileError if it cannot be."""
    try:
        with Image.open(path) as image, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Pillow calls a JPEG with extra frames (from some cameras) MPO.
            if (image.format or "").lower() not in ({JPEG, "mpo"} if kind == JPEG else {kind}):
                raise CorruptFileError(
                    N_("{name} starts like a {kind} file but cannot be read as one."), name=path.name, kind=kind.upper()
                )
            _check_page_count(path, getattr(image, "n_frames", 1), max_pages)
            for frame in ImageSequence.Iterator(image) if kind == TIFF else [image]:
                frame.load()
                yield _page_mode(frame)
    except (OSError, ValueError, SyntaxError, EOFError, UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise CorruptFileError(N_("{name} cannot be read as an image: {detail}"), name=path.name, detail=exc) from exc


def image_dpi(image: Image.Image, default_dpi: int) -> int:
    """Return the image's horizontal resolution in dpi, or ``default_dpi`` when it records none that is plausible."""
    value = image.info.get("dpi", (0, 0))[0]
    try:
        dpi = int(round(float(value)))
    except (TypeError, ValueError):
        return default_dpi
    return dpi if 50 <= dpi <= 2400 else default_dpi


def _page_mode(frame: Image.Image) -> Image.Image:
    """Return the frame in a mode the PDF builder and OCR take: 1, L or RGB (alpha and CMYK are converted)."""
    if frame.mode in ("1", "L", "RGB"):
        return frame.copy()
    if frame.mode in ("LA", "I;16", "I;16B", "I;16L", "I", "F"):
        return frame.convert("L")
    return frame.convert("RGB")


def write_png(image: Image.Image, target: Path, dpi: int) -> PageImage:
    """Write ``image`` to ``target`` as PNG durably: temporary file, fsync, rename."""
    from sohoa.fsutil import write_atomic_with

    write_atomic_with(target, lambda temporary: image.save(temporary, format="PNG", dpi=(dpi, dpi)), suffix=".png")
    return PageImage(target, image.width, image.height, dpi)


# PDF


def inspect_pdf(path: Path, max_pages: int) -> PdfInfo:
    """Return the page count of the PDF at ``path`` and whether a signature field carries a signature.

    Raises EncryptedPdfError for any encrypted PDF (even one that opens without
    a password), CorruptFileError for a file that is not a complete, readable PDF,
    and TooManyPagesError above ``max_pages``.
    """
    _check_pdf_tail(path)
    try:
        with pikepdf.open(path) as pdf:
            encrypted = pdf.is_encrypted
            page_count = len(pdf.pages)
    except pikepdf.PasswordError as exc:
        raise EncryptedPdfError(
            N_("{name} is protected by a password; save it again without protection."), name=path.name
        ) from exc
    except (pikepdf.PdfError, OSError, ValueError) as exc:
        raise CorruptFileError(N_("{name} cannot be read as a PDF: {detail}"), name=path.name, detail=exc) from exc
    if encrypted:
        raise EncryptedPdfError(
            N_("{name} is encrypted; archives keep no encrypted PDF. Save it again without protection."), name=path.name
        )
    if page_count == 0:
        raise CorruptFileError(N_("{name} is a PDF without any page."), name=path.name)
    _check_page_count(path, page_count, max_pages)
    return PdfInfo(page_count, _carries_signature(path))


def _check_page_count(path: Path, count: int, max_pages: int) -> None:
    """Raise TooManyPagesError when a file has more pages than one document may have."""
    if count > max_pages:
        raise TooManyPagesError(
            N_("{name} has {count} pages, more than the {limit} allowed in one document (scanner.max_pages); split it."),
            name=path.name,
            count=count,
            limit=max_pages,
        )


def _check_pdf_tail(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        handle.seek(max(0, size - PDF_TAIL_BYTES))
        tail = handle.read()
    if b"%%EOF" not in tail:
        raise CorruptFileError(
            N_("{name} is an incomplete PDF (no end-of-file marker); the transfer was probably cut short. Save or send it again."),
            name=path.name,
        )


def _carries_signature(path: Path) -> bool:
    """Return whether a signature field of the PDF has a value (a signature or a document timestamp)."""
    try:
        with open(path, "rb") as handle:
            return bool(PdfFileReader(handle, strict=False).embedded_signatures)
    except (PyHankoPdfError, OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(N_("{name} cannot be read as a PDF: {detail}"), name=path.name, detail=exc) from exc


def rasterize_pdf(
    path: Path, page_count: int, dpi: int, mode: str, page_path: Callable[[int], Path]
) -> Iterator[PageImage]:
    """Render each page of the PDF at ``dpi`` to the PNG at ``page_path(n)`` (n from 1), one page at a time."""
    options = RENDER_MODE_OPTIONS.get(mode.lower(), [])
    for number in range(1, page_count + 1):
        target = page_path(number)
        target.parent.mkdir(parents=True, exist_ok=True)
        prefix = target.with_name(f".{target.stem}.render")
        rendered = prefix.with_name(prefix.name + ".png")
        command = ["pdftoppm", "-r", str(dpi), "-png", *options, "-f", str(number), "-l", str(number), "-singlefile", str(path), str(prefix)]
        try:
            result = subprocess.run(command, capture_output=True, timeout=RASTERIZE_TIMEOUT_SECONDS, check=False)
        except subprocess.TimeoutExpired as exc:
            rendered.unlink(missing_ok=True)
            raise CorruptFileError(
                N_("Rendering page {page} of {name} took more than {seconds} s; the PDF is probably malformed."),
                page=number,
                name=path.name,
                seconds=RASTERIZE_TIMEOUT_SECONDS,
            ) from exc
        if result.returncode != 0 or not rendered.exists():
            rendered.unlink(missing_ok=True)
            raise CorruptFileError(
                N_("Page {page} of {name} cannot be rendered: {detail}"),
                page=number,
                name=path.name,
                detail=result.stderr.decode("utf-8", "replace").strip()[-300:] or f"pdftoppm exit status {result.returncode}",
            )
        yield _publish_render(rendered, target, dpi)


def _publish_render(rendered: Path, target: Path, dpi: int) -> PageImage:
    """Make pdftoppm's output the page file durably; it keeps its leading dot until then, so recovery never adopts it."""
    try:
        with Image.open(rendered) as image:
            width, height = image.size
    except BaseException:
        rendered.unlink(missing_ok=True)
        raise
    replace_durably(rendered, target)
    return PageImage(target, width, height, dpi)


def pdf_text(path: Path) -> str:
    """Return the PDF's text layer as ``pdftotext`` extracts it, or an empty string when it has none or fails."""
    try:
        result = subprocess.run(
            ["pdftotext", "-enc", "UTF-8", str(path), "-"],
            capture_output=True,
            timeout=TEXT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("pdftotext on %s failed: %s", path, exc)
        return ""
    if result.returncode != 0:
        log.warning("pdftotext on %s failed (%d): %s", path, result.returncode, result.stderr.decode("utf-8", "replace").strip())
        return ""
    return result.stdout.decode("utf-8", "replace")


def pdf_document_fields(path: Path) -> dict[str, str]:
    """Return sohoa's document fields from the PDF's XMP metadata, or an empty dict when it has none."""
    from sohoa.pdf.metadata import read_document_fields

    try:
        with pikepdf.open(path) as pdf:
            metadata = pdf.Root.get("/Metadata")
            if metadata is None:
                return {}
            return read_document_fields(metadata.read_bytes())
    except (pikepdf.PdfError, OSError, ValueError, SyntaxError) as exc:
        log.warning("The XMP metadata of %s cannot be read: %s", path, exc)
        return {}
