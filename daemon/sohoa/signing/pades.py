"""PAdES signing of a PDF with pyHanko, the raw signature computed on the token.

The signature is a CAdES detached CMS (subfilter ETSI.CAdES.detached) in an
incremental update, with a visible field on page 1. The operator's field sits
at the top left and shows the signer's name and the signing time. The
converting unit's field sits at the top right, without an image or border,
and shows the copy form, the unit's name and the signing time (ISO 8601, with
seconds and time zone) in a 10 pt serif font.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from PIL import ImageFont

from asn1crypto import x509
from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory
from pyhanko.pdf_utils.generic import IndirectObject
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.writer import DeveloperExtension
from pyhanko.pdf_utils.layout import AxisAlignment, LayoutError, Margins, SimpleBoxLayoutRule
from pyhanko.pdf_utils.misc import PdfError as PyHankoPdfError
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError as PyHankoSigningError
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko.stamp import TextStampStyle
from pyhanko_certvalidator.registry import SimpleCertificateStore

from sohoa.errors import PdfError, SigningError, TimestampUnavailableError
from sohoa.fsutil import write_atomic_with
from sohoa.i18n import N_, _
from sohoa.signing.mechanisms import select_operation
from sohoa.signing.token import TokenSession

log = logging.getLogger(__name__)

# Noto Serif has 1000 units per em. pyHanko 0.38 stamps render fonts with 2048
# units per em (Liberation Serif, DejaVu) with wrong glyph widths: Liberation
# Serif, which has Times New Roman's metrics, comes out with its glyphs spread
# about twice as far apart, running out of the field. Both fields therefore
# use Noto Serif, the closest serif that renders right.
STAMP_FONT = Path("/usr/share/fonts/truetype/noto/NotoSerif-Regular.ttf")
FIELD_MARGIN = 18  # distance from the page's visible edges, in PDF points (1/72 inch)
FIELD_PADDING = 4  # margin between the field's edge and its text, in points
FIELD_NAME_PREFIX = "SohoaSignature"
PDFA_MAX_VERSION = (1, 7)  # PDF/A-2 is based on ISO 32000-1, PDF 1.7
DIGEST_ALGORITHM = "sha256"


@dataclass(frozen=True)
class StampLayout:
    """Placement of a visible signature field on page 1 and the settings of its text."""

    corner: Literal["top-left", "top-right"]
    font_size: float  # points
    leading: float  # line distance in points; Vietnamese stacked diacritics need more than the font size
    border_width: int
    min_width: int  # points; the field grows to fit its longest line up to half the page width


OPERATOR_STAMP = StampLayout(corner="top-left", font_size=8, leading=11, border_width=1, min_width=220)
# The unit's signature on an electronic copy: no image, black text, 10 pt.
UNIT_STAMP = StampLayout(corner="top-right", font_size=10, leading=13, border_width=0, min_width=200)


class TokenCmsSigner(signers.Signer):
    """pyHanko signer whose raw signature comes from a key on a PKCS#11 token through PyKCS11."""

    def __init__(
        self,
        token: TokenSession,
        key_handle: int,
        signing_cert: x509.Certificate,
        other_certs: list[x509.Certificate],
        *,
        prefer_pss: bool = False,
    ) -> None:
        super().__init__(
            prefer_pss=prefer_pss,
            signing_cert=signing_cert,
            cert_registry=SimpleCertificateStore.from_certs([signing_cert, *other_certs]),
        )
        self._token = token
        self._key_handle = key_handle

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        """Sign ``data`` on the token, or with ``dry_run`` return a placeholder no shorter than a real signature."""
        if dry_run:
            return bytes(self._max_signature_size())
        operation = select_operation(self.get_signature_mechanism_for_digest(digest_algorithm), digest_algorithm)
        # C_Sign is one short blocking call and this event loop belongs to this signing run alone.
        return self._token.sign(self._key_handle, operation, data)

    def _max_signature_size(self) -> int:
        public_key = self.signing_cert.public_key
        key_bytes = (public_key.bit_size + 7) // 8
        if public_key.algorithm == "ec":
            # DER SEQUENCE of two INTEGERs, each up to one byte longer than the curve order.
            return 2 * (key_bytes + 3) + 3
        return key_bytes


def sign_document(
    signer: TokenCmsSigner,
    src: Path,
    dst: Path,
    *,
    signer_name: str,
    signed_at: datetime,
    reason: str | None,
    location: str | None,
    stamp_text: str,
    layout: StampLayout = OPERATOR_STAMP,
    timestamper: TimeStamper | None = None,
) -> None:
    """Write ``src`` signed by ``signer`` to ``dst`` atomically, with ``stamp_text`` in a field on page 1.

    With ``timestamper`` the signature carries an RFC 3161 timestamp token
    (PAdES B-T); TimestampUnavailableError means the authority did not respond.
    """
    try:
        with open(src, "rb") as source:
            writer = MetadataKeepingWriter(source, strict=False)
            field_spec = fields.SigFieldSpec(
                sig_field_name=_free_field_name(writer),
                on_page=0,
                box=_field_box(writer, layout, stamp_text),
            )
            metadata = signers.PdfSignatureMetadata(
                field_name=field_spec.sig_field_name,
                md_algorithm=DIGEST_ALGORITHM,
                subfilter=fields.SigSeedSubFilter.PADES,
                name=signer_name,
                reason=reason,
                location=location,
            )
            pdf_signer = _DatedPdfSigner(
                metadata,
                signer,
                signed_at=signed_at,
                stamp_style=_stamp_style(layout),
                new_field_spec=field_spec,
                timestamper=timestamper,
            )
            appearance = {"text": stamp_text}

            def write_signed(path: Path) -> None:
                with open(path, "w+b") as output:
                    pdf_signer.sign_pdf(writer, output=output, appearance_text_params=appearance)

            write_atomic_with(dst, write_signed, suffix=".pdf")
    except TimestampRequestError as exc:  # an OSError subclass, so it is caught first
        raise TimestampUnavailableError(
            N_("The time-stamping authority {url} did not respond: {detail}; the timestamp is added once it responds."),
            url=getattr(timestamper, "url", "?"),
            detail=exc,
        ) from exc
    except OSError as exc:
        raise PdfError(N_("Cannot read {src} or write {dst}: {detail}"), src=src, dst=dst, detail=exc) from exc
    except PyHankoPdfError as exc:
        raise PdfError(N_("Cannot sign {src}, it is not a readable PDF: {detail}"), src=src, detail=exc) from exc
    except LayoutError as exc:
        raise SigningError(
            N_("Cannot lay out the visible signature of {src}: {detail}"), src=src, detail=exc
        ) from exc
    except PyHankoSigningError as exc:
        raise SigningError(N_("pyHanko failed to sign {src}: {detail}"), src=src, detail=exc) from exc


class MetadataKeepingWriter(IncrementalPdfFileWriter):
    """Incremental writer that keeps the file PDF/A-2: version 1.7 at most, XMP and Info as the build wrote them.

    For ECDSA keys pyHanko 0.38 raises the catalog's /Version to 2.0 and
    declares the ISO 32002 extension, but PDF/A-2 requires a 1.x version.
    PDF 1.7 already allows ECDSA in CMS signatures (ISO 32000-1, 12.8.3.3), so
    the version stays at 1.7 and the PDF 2.0 extensions are not declared. The
    ETSI extension for PAdES (/ESIC, base version 1.7) is still declared.

    pyHanko 0.38 rewrites the XMP packet in every incremental update
    (``BasePdfFileWriter._update_meta``): it moves every property into one
    ``rdf:Description`` as attributes, renames the ``sohoadoc`` prefix that
    the PDF/A extension schema declares to ``ns0``, and sets ``pdf:Producer``
    to pyHanko. Keeping both untouched keeps them in step with each other, as
    PDF/A requires; the signing time is in the signature itself.
    ``sohoa.pdf.conformance.check_pdfa`` on the signed file catches a pyHanko
    version that no longer calls this hook.
    """

    def _update_meta(self) -> None:
        return None

    def ensure_output_version(self, version: tuple[int, int]) -> None:
        super().ensure_output_version(min(version, PDFA_MAX_VERSION))

    def register_extension(self, ext: DeveloperExtension) -> None:
        if str(ext.base_version).lstrip("/") > "1.7":
            log.debug("Not declaring PDF extension %s level %s: PDF/A-2 stays at PDF 1.7", ext.prefix_name, ext.extension_level)
            return
        super().register_extension(ext)


class _DatedPdfSigner(signers.PdfSigner):
    """PdfSigner that uses a given signing time instead of the clock."""

    def __init__(self, *args, signed_at: datetime, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._signed_at = signed_at

    def init_signing_session(self, pdf_out, existing_fields_only=False):
        session = super().init_signing_session(pdf_out, existing_fields_only=existing_fields_only)
        session.system_time = self._signed_at
        return session


def operator_stamp_text(signer_name: str, signed_at: datetime) -> str:
    """Return the operator's field text: the signer's name and the signing time."""
    time_text = signed_at.isoformat(timespec="seconds")
    return "\n".join([_("Signed by: {name}").format(name=signer_name), _("Time: {time}").format(time=time_text)])


def unit_stamp_text(unit_name: str, signed_at: datetime) -> str:
    """Return the unit's field text: the copy form, the unit's name and the ISO 8601 signing time."""
    return "\n".join([_("Copy converted from paper"), unit_name, signed_at.isoformat(timespec="seconds")])


def _stamp_style(layout: StampLayout) -> TextStampStyle:
    font = GlyphAccumulatorFactory(font_file=str(_stamp_font()), font_size=layout.font_size)
    # The whole text is one parameter, so '%' in a translation cannot break the template.
    return TextStampStyle(
        stamp_text="%(text)s",
        text_box_style=TextBoxStyle(
            font=font,
            font_size=layout.font_size,
            leading=layout.leading,
            box_layout_rule=SimpleBoxLayoutRule(
                x_align=AxisAlignment.ALIGN_MIN, y_align=AxisAlignment.ALIGN_MID, margins=Margins.uniform(FIELD_PADDING)
            ),
        ),
        border_width=layout.border_width,
        background=None,
    )


def _stamp_font() -> Path:
    if not STAMP_FONT.is_file():
        raise SigningError(
            N_("Font {path} for the visible signature is missing; install the fonts-noto-core package."), path=STAMP_FONT
        )
    return STAMP_FONT


def _text_size(text: str, layout: StampLayout) -> tuple[float, float]:
    """Return the width and height in points of ``text`` set in the stamp font at the layout's size."""
    # Measured at 1000 px per em, so the width is exact to a thousandth of an em.
    font = ImageFont.truetype(str(_stamp_font()), 1000)
    lines = text.split("\n")
    width = max(font.getlength(line) for line in lines) * layout.font_size / 1000
    height = layout.font_size + (len(lines) - 1) * layout.leading
    return width, height


def _free_field_name(writer: IncrementalPdfFileWriter) -> str:
    existing = {name for name, _value, _ref in fields.enumerate_sig_fields(writer.prev)}
    number = 1
    while f"{FIELD_NAME_PREFIX}{number}" in existing:
        number += 1
    return f"{FIELD_NAME_PREFIX}{number}"


def _field_box(writer: IncrementalPdfFileWriter, layout: StampLayout, text: str) -> tuple[int, int, int, int]:
    """Return the field rectangle (x1, y1, x2, y2) in the layout's corner of page 1's visible area.

    The field is wide and tall enough for ``text`` at the layout's font size,
    so pyHanko does not shrink the text. Text wider than half the page is
    shrunk to fit.

    NOTE: the box is placed in the page's unrotated coordinates; on a page
    with /Rotate it appears at another corner.
    """
    page_ref, _resources = writer.find_page_for_modification(0)
    left, bottom, right, top = _visible_area(page_ref)
    text_width, text_height = _text_size(text, layout)
    max_width = max((right - left) / 2 - FIELD_MARGIN, layout.min_width)
    width = min(max(text_width + 2 * FIELD_PADDING, layout.min_width), max_width)
    # One leading of slack: pyHanko sets the first baseline a full leading below the top.
    height = text_height + (layout.leading - layout.font_size) + 2 * FIELD_PADDING + 2 * layout.border_width
    y2 = top - FIELD_MARGIN
    if layout.corner == "top-left":
        x1 = left + FIELD_MARGIN
        x2 = min(x1 + width, right)
    else:
        x2 = right - FIELD_MARGIN
        x1 = max(x2 - width, left)
    return int(x1), int(y2 - height), int(round(x2)), int(y2)


def _visible_area(page_ref: IndirectObject) -> tuple[float, float, float, float]:
    node = page_ref.get_object()
    for _depth in range(64):  # /Parent chains are short; the bound guards against a cyclic file
        for key in ("/CropBox", "/MediaBox"):
            if key in node:
                x1, y1, x2, y2 = (float(value) for value in node[key])
                return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)
        if "/Parent" not in node:
            break
        node = node["/Parent"].get_object()
    raise PdfError(N_("Page 1 of the document has no /MediaBox; the PDF is damaged."))
