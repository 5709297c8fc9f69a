"""The searchable PDF/A-2b: page images, an invisible text layer, the mark of conversion.

With attachments (the fields as ``fields.json``, see :mod:`sohoa.pdf.attachments`)
the document is PDF/A-3b instead, because PDF/A-2 allows only PDF/A files as
attachments.

The PDF is assembled from maintained libraries rather than written by hand:

- fpdf2 lays out the pages: each page image at its scanned size (in grey
  when a colour scan has no colour content, :mod:`sohoa.pdf.colour`), and on
  page 1 the visible mark of conversion in Noto Serif with a QR code
  (:mod:`sohoa.pdf.mark`).
- OCRmyPDF's fpdf2 renderer (``Fpdf2MultiPageRenderer``) draws the
  recognised lines as invisible text (render mode 3) with its bundled
  Noto Sans, one word at a time, scaled to cover the word's pixels
  (:mod:`sohoa.pdf.textlayer`). pikepdf puts each text page under its image
  page as a Form XObject, as OCRmyPDF's own pipeline grafts its text layer.
  The text layer is rendered as a separate document because the renderer
  leaves the text render mode at 3 in the page's graphics state, which
  would make text drawn after it on the same page (the mark) invisible.
- pikepdf's PDF/A module adds the sRGB output intent, declares PDF/A-2b
  in XMP and keeps the Info dictionary in step. :func:`pikepdf.pdfa.check`
  validates the document before sohoa's own XMP fields are added
  (:mod:`sohoa.pdf.metadata`). That allowlist validator rejects every XMP
  namespace it does not know, even one described by a PDF/A extension
  schema. ``docs/pdfa.md`` lists what is checked.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pikepdf
import pikepdf.pdfa
from fpdf import FPDF
from fpdf.errors import FPDFException
from ocrmypdf.fpdf_renderer import Fpdf2MultiPageRenderer

from sohoa import __version__
from sohoa.errors import PdfError
from sohoa.fsutil import write_atomic_with
from sohoa.i18n import N_
from sohoa.ocr import PageText
from sohoa.pdf import metadata as xmp
from sohoa.pdf.attachments import Attachment, attach
from sohoa.pdf.colour import apply_colour_policy
from sohoa.pdf.images import check_dpi, load_page_image, prepare_for_embedding
from sohoa.pdf.mark import ConversionMark, draw_mark, place_mark, qr_payload
from sohoa.pdf.textlayer import font_manager, page_element

__all__ = ["Attachment", "ConversionMark", "PageInput", "build_pdf", "qr_payload"]

log = logging.getLogger(__name__)

PDFA_FLAVOUR = "2b"
# PDF/A-3 allows embedded files of any type, as associated files.
PDFA_FLAVOUR_WITH_ATTACHMENTS = "3b"
PRODUCER = f"sohoa {__version__} (fpdf2, OCRmyPDF renderer, pikepdf {pikepdf.__version__})"


@dataclass(frozen=True)
class PageInput:
    """One scanned page and its recognised text."""

    image: Path  # lossless PNG page from the scanner
    text: PageText
    dpi: int


@dataclass(frozen=True)
class _PageSize:
    width_px: int
    height_px: int
    dpi: int

    @property
    def width_pt(self) -> float:
        return self.width_px * 72.0 / self.dpi

    @property
    def height_pt(self) -> float:
        return self.height_px * 72.0 / self.dpi


def build_pdf(
    pages: Sequence[PageInput],
    out: Path,
    *,
    mark: ConversionMark,
    metadata: Mapping[str, str],
    title: str | None = None,
    attachments: Sequence[Attachment] = (),
) -> str:
    """Write the searchable PDF/A of ``pages`` to ``out`` atomically; return the flavour, ``"2b"`` or ``"3b"``.

    The document is PDF/A-2b, or PDF/A-3b when ``attachments`` is not empty.

    Raises:
        ImageError: if a page image is missing, corrupt, truncated or too
            large; the message names the file. Nothing is written.
        PdfError: if the document cannot be assembled or fails PDF/A
            validation. Nothing is written.
    """
    if not pages:
        raise PdfError(N_("No pages were given for {out}; scan at least one page."), out=out)
    xmp.check_field_names(metadata)
    flavour = PDFA_FLAVOUR_WITH_ATTACHMENTS if attachments else PDFA_FLAVOUR

    try:
        with tempfile.TemporaryDirectory(prefix="sohoa-pdf-") as work:
            work_dir = Path(work)
            sizes = render_image_pages(pages, work_dir / "images.pdf", mark)
            render_text_layer(pages, sizes, work_dir / "text.pdf")
            with pikepdf.open(work_dir / "images.pdf") as pdf, pikepdf.open(work_dir / "text.pdf") as text_pdf:
                put_text_under_images(pdf, text_pdf)
                now = datetime.now(timezone.utc).astimezone()
                for attachment in attachments:
                    attach(pdf, attachment, now=now)
                save_kwargs = make_pdfa(pdf, mark=mark, title=title or metadata.get("Subject") or mark.doc_code, flavour=flavour)
                add_document_fields(pdf, metadata)
                write_atomic_with(out, lambda tmp: pdf.save(tmp, **save_kwargs), suffix=".pdf")
    except (pikepdf.PdfError, FPDFException, ValueError) as exc:
        # fpdf2, OCRmyPDF's renderer (ValueError on an invalid element tree) and pikepdf
        raise PdfError(N_("Building the PDF {out} failed: {detail}"), out=out, detail=exc) from exc
    log.info("Built %s: %d pages, PDF/A-%s, %d attachments", out, len(pages), flavour, len(attachments))
    return flavour


def render_image_pages(pages: Sequence[PageInput], out: Path, mark: ConversionMark) -> list[_PageSize]:
    """Lay out one page per image with fpdf2 and draw the mark on page 1; return the page sizes."""
    pdf = FPDF(unit="pt")
    pdf.set_auto_page_break(auto=False)
    pdf.set_margins(0, 0, 0)
    sizes = []
    for number, page in enumerate(pages, start=1):
        check_dpi(page.image, page.dpi)
        # The recognizer turns a sideways or upside-down scan upright, and its line boxes refer to the turned page.
        with load_page_image(page.image) as scanned, page.text.upright(scanned) as image:
            size = _PageSize(image.width, image.height, page.dpi)
            placement = place_mark(image, page.dpi) if number == 1 else None
            embeddable = prepare_for_embedding(apply_colour_policy(image))
            pdf.add_page(format=(size.width_pt, size.height_pt))
            pdf.image(embeddable.source, x=0, y=0, w=size.width_pt, h=size.height_pt)
        log.debug("Page %d: %s, %dx%d px at %d dpi", number, embeddable.encoding, size.width_px, size.height_px, size.dpi)
        if placement is not None:
            draw_mark(pdf, mark, placement)
        sizes.append(size)
    pdf.output(str(out))
    return sizes


def render_text_layer(pages: Sequence[PageInput], sizes: Sequence[_PageSize], out: Path) -> None:
    """Render the invisible text of every page, one PDF page per image, with OCRmyPDF's renderer."""
    trees = [
        (index, page_element(page.text, size.width_px, size.height_px, size.dpi), float(size.dpi))
        for index, (page, size) in enumerate(zip(pages, sizes, strict=True))
    ]
    Fpdf2MultiPageRenderer(pages_data=trees, multi_font_manager=font_manager(), invisible_text=True).render(out)


def put_text_under_images(pdf: pikepdf.Pdf, text_pdf: pikepdf.Pdf) -> None:
    """Draw each text page under the image page of the same number."""
    if len(text_pdf.pages) != len(pdf.pages):
        raise PdfError(
            N_("The text layer has {text} pages but the document has {images}; the PDF was not written."),
            text=len(text_pdf.pages),
            images=len(pdf.pages),
        )
    for page, text_page in zip(pdf.pages, text_pdf.pages, strict=True):
        page.add_underlay(pdf.copy_foreign(text_page.as_form_xobject()))


def make_pdfa(pdf: pikepdf.Pdf, *, mark: ConversionMark, title: str, flavour: str = PDFA_FLAVOUR) -> dict[str, object]:
    """Add the output intent and the PDF/A identification of ``flavour``, validate, and return the save settings."""
    # fpdf2 2.8 always writes a zoom destination as /OpenAction. PDF/A-2
    # allows a destination there, but pikepdf's validator accepts no
    # /OpenAction at all, and the zoom is only a viewer preference.
    if "/OpenAction" in pdf.Root:
        del pdf.Root.OpenAction
    pikepdf.pdfa.prepare(pdf, flavour, output_intent="sRGB")
    now = datetime.now(timezone.utc).astimezone()
    with pdf.open_metadata(set_pikepdf_as_editor=False) as meta:
        meta["dc:title"] = title
        meta["dc:creator"] = [mark.operator]
        meta["xmp:CreatorTool"] = f"sohoa {__version__}"
        meta["xmp:CreateDate"] = mark.converted_at.isoformat(timespec="seconds")
        meta["xmp:ModifyDate"] = now.isoformat(timespec="seconds")
        meta["xmp:MetadataDate"] = now.isoformat(timespec="seconds")
        meta["pdf:Producer"] = PRODUCER

    report = pikepdf.pdfa.check(pdf, flavour)
    if not report.passed:
        findings = "; ".join(f"{finding.rule}: {finding.message}" for finding in report.findings[:8])
        if flavour == PDFA_FLAVOUR:
            raise PdfError(N_("The PDF does not conform to PDF/A-2b: {findings}"), findings=findings)
        raise PdfError(N_("The PDF does not conform to PDF/A-3b: {findings}"), findings=findings)
    return dict(report.save_kwargs)


def add_document_fields(pdf: pikepdf.Pdf, metadata: Mapping[str, str]) -> None:
    """Add the document's fields and their PDF/A extension schema to the XMP packet."""
    stream = pdf.Root.Metadata
    packet = xmp.add_document_fields(stream.read_bytes(), metadata)
    undescribed = xmp.undescribed_properties(packet)
    if undescribed:
        raise PdfError(N_("XMP fields {names} lack a PDF/A extension schema entry."), names=", ".join(undescribed))
    stream.write(packet)
