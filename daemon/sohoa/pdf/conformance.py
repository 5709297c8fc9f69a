"""PDF/A-2b and PDF/A-3b check of a finished file, signed or not.

pikepdf 10.18's validator (``pikepdf.pdfa``) is an allowlist: it denies what
it cannot evaluate. It rejects every XMP namespace it does not know, even one
described by a PDF/A extension schema, and it does not evaluate interactive
forms, so every signed PDF gets an "unsupported /AcroForm" finding. This
module therefore checks those two parts itself and runs the validator on a
copy without them:

- sohoa's XMP fields: every property is described by the extension schema
  and uses the declared prefix;
- the ETSI developer extension (``/Extensions /ESIC``) that pyHanko declares
  for PAdES signatures: PDF/A-2 allows developer extensions, pikepdf's
  validator accepts only Adobe's, so the copy drops it;
- signature fields: each widget is printable and not hidden, has a normal
  appearance stream whose fonts are embedded (unless it has zero size), and the form does not ask the
  viewer to build appearances (``/NeedAppearances``), has no XFA, and no
  JavaScript action;
- in a PDF/A-3 file, each embedded file's ``/Params``: ``/ModDate``
  present, ``/Size`` and ``/CheckSum`` matching the data
  (:func:`sohoa.pdf.attachments.attachment_findings`). The validator checks
  the rest of ISO 19005-3 clause 6.8: the MIME type, ``/F``, ``/UF``,
  ``/AFRelationship``, and that an ``/AF`` array lists each file;
- everything else: ``pikepdf.pdfa.validate_written`` on a copy with sohoa's
  XMP descriptions, the form and the widgets removed.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pikepdf
import pikepdf.pdfa
from lxml import etree

from sohoa.errors import PdfError
from sohoa.i18n import N_
from sohoa.pdf import metadata as xmp
from sohoa.pdf.attachments import attachment_findings

log = logging.getLogger(__name__)

# Annotation flags (ISO 32000-1, table 165): PDF/A requires Print and forbids Hidden, Invisible, NoView.
_FLAG_INVISIBLE, _FLAG_HIDDEN, _FLAG_PRINT, _FLAG_NO_VIEW = 1, 2, 4, 32


@dataclass(frozen=True)
class PdfaReport:
    """Outcome of :func:`check_pdfa`.

    ``part`` and ``conformance`` are the XMP identification (``"2"``, ``"B"``),
    empty when missing. ``findings`` lists every problem in English;
    ``passed`` is true when there is none and the file claims PDF/A.
    """

    part: str
    conformance: str
    findings: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return bool(self.part) and not self.findings

    @property
    def flavour(self) -> str:
        """The identification as pikepdf names it, for example ``"2b"``; empty when missing."""
        return f"{self.part}{self.conformance.lower()}" if self.part else ""


def check_pdfa(path: Path) -> PdfaReport:
    """Check ``path`` against the PDF/A part and level its XMP declares.

    Raises PdfError when the file cannot be opened as a PDF.
    """
    try:
        with pikepdf.open(path) as pdf:
            part, conformance = _identification(pdf)
            findings = [*_xmp_findings(pdf), *_form_findings(pdf)]
            if not part:
                findings.append("XMP has no PDF/A identification (pdfaid:part)")
                return PdfaReport("", "", tuple(findings))
            flavour = f"{part}{conformance.lower()}"
            if part == "3":
                findings.extend(attachment_findings(pdf))
            findings.extend(_validator_findings(pdf, flavour))
    except pikepdf.PdfError as exc:
        raise PdfError(N_("Cannot check {path} for PDF/A, it is not a readable PDF: {detail}"), path=path, detail=exc) from exc
    report = PdfaReport(part, conformance, tuple(findings))
    log.debug("PDF/A check of %s: %s, %d finding(s)", path, report.flavour or "no identification", len(findings))
    return report


def _identification(pdf: pikepdf.Pdf) -> tuple[str, str]:
    meta = pdf.open_metadata()
    return str(meta.get("pdfaid:part") or ""), str(meta.get("pdfaid:conformance") or "").upper()


def _xmp_findings(pdf: pikepdf.Pdf) -> list[str]:
    if "/Metadata" not in pdf.Root:
        return ["the catalog has no XMP metadata stream"]
    packet = pdf.Root.Metadata.read_bytes()
    findings = []
    undescribed = xmp.undescribed_properties(packet)
    if undescribed:
        findings.append(f"XMP properties without an extension schema entry: {', '.join(undescribed)}")
    root = etree.fromstring(packet, etree.XMLParser(resolve_entities=False, no_network=True))
    for element in root.iter():
        if isinstance(element.tag, str) and element.tag.startswith(f"{{{xmp.DOCUMENT_NAMESPACE}}}"):
            if element.prefix != xmp.DOCUMENT_PREFIX:
                findings.append(f"XMP uses prefix {element.prefix!r} for {xmp.DOCUMENT_NAMESPACE}, not {xmp.DOCUMENT_PREFIX!r}")
                break
    return findings


def _form_findings(pdf: pikepdf.Pdf) -> list[str]:
    findings = []
    form = pdf.Root.get("/AcroForm")
    if form is not None:
        if bool(form.get("/NeedAppearances", False)):
            findings.append("/AcroForm sets /NeedAppearances true")
        if "/XFA" in form:
            findings.append("/AcroForm contains XFA")
    for number, page in enumerate(pdf.pages, start=1):
        for annotation in page.obj.get("/Annots", []):
            if annotation.get("/Subtype") == "/Widget":
                findings.extend(_widget_findings(annotation, number))
    return findings


def _widget_findings(widget: pikepdf.Dictionary, page_number: int) -> list[str]:
    name = str(widget.get("/T", "?"))
    flags = int(widget.get("/F", 0))
    findings = []
    if not flags & _FLAG_PRINT or flags & (_FLAG_INVISIBLE | _FLAG_HIDDEN | _FLAG_NO_VIEW):
        findings.append(f"field {name} on page {page_number} has annotation flags {flags}: not printable or hidden")
    if "/A" in widget or "/AA" in widget:
        findings.append(f"field {name} on page {page_number} has an action")
    appearance = widget.get("/AP")
    x1, y1, x2, y2 = (float(value) for value in widget.get("/Rect", [0, 0, 0, 0]))
    if appearance is None and x1 == x2 and y1 == y2:
        # PDF/A-2 lets an annotation of zero size, such as an invisible document timestamp field, omit /AP.
        return findings
    if appearance is None or "/N" not in appearance:
        findings.append(f"field {name} on page {page_number} has no normal appearance stream")
        return findings
    if set(appearance.keys()) - {"/N"}:
        findings.append(f"field {name} on page {page_number} has appearances other than /N")
    for font in _fonts(appearance.N, set()):
        owner = font.DescendantFonts[0] if font.get("/Subtype") == "/Type0" else font
        descriptor = owner.get("/FontDescriptor")
        if descriptor is None or not any(key in descriptor for key in ("/FontFile", "/FontFile2", "/FontFile3")):
            findings.append(f"field {name} on page {page_number} uses font {font.get('/BaseFont')} without embedding it")
    return findings


def _fonts(stream: pikepdf.Object, seen: set) -> list[pikepdf.Dictionary]:
    """Return the fonts of a Form XObject and of the Form XObjects it draws."""
    if stream.objgen in seen and stream.objgen != (0, 0):
        return []
    seen.add(stream.objgen)
    resources = stream.get("/Resources") or {}
    fonts = list((resources.get("/Font") or {}).values())
    for child in (resources.get("/XObject") or {}).values():
        if child.get("/Subtype") == "/Form":
            fonts.extend(_fonts(child, seen))
    return fonts


def _validator_findings(pdf: pikepdf.Pdf, flavour: str) -> list[str]:
    """Run pikepdf's validator on a copy without sohoa's XMP namespace, the form and the widgets."""
    _strip_sohoa_xmp(pdf)
    extensions = pdf.Root.get("/Extensions")
    if extensions is not None and "/ESIC" in extensions:
        del extensions.ESIC
        if not extensions.keys():
            del pdf.Root.Extensions
    if "/AcroForm" in pdf.Root:
        del pdf.Root.AcroForm
    for page in pdf.pages:
        if "/Annots" in page.obj:
            kept = [annotation for annotation in page.obj.Annots if annotation.get("/Subtype") != "/Widget"]
            page.obj.Annots = pdf.make_indirect(pikepdf.Array(kept))
    try:
        save_kwargs = pikepdf.pdfa.resolve_save_kwargs(flavour)
    except ValueError as exc:
        return [f"PDF/A flavour {flavour!r} is not one pikepdf can validate: {exc}"]
    with tempfile.TemporaryDirectory(prefix="sohoa-pdfa-") as work:
        copy = Path(work) / "copy.pdf"
        pdf.save(copy, **save_kwargs)
        report = pikepdf.pdfa.validate_written(copy, flavour)
    return [str(finding) for finding in report.findings]


def _strip_sohoa_xmp(pdf: pikepdf.Pdf) -> None:
    root = etree.fromstring(pdf.Root.Metadata.read_bytes(), etree.XMLParser(resolve_entities=False, no_network=True))
    custom = {xmp.DOCUMENT_NAMESPACE, xmp.PDFA_EXTENSION}
    for description in list(root.iter(f"{{{xmp.RDF}}}Description")):
        if any(isinstance(child.tag, str) and etree.QName(child).namespace in custom for child in description):
            description.getparent().remove(description)
    pdf.Root.Metadata.write(etree.tostring(root.getroottree(), encoding="utf-8"))
