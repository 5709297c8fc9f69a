"""PAdES signing of a PDF with pyHanko, the raw signature computed on the token.

The signature is a CAdES detached CMS (subfilter ETSI.CAdES.detached) in an
incremental update, with a visible field at the top left of page 1 that shows
the signer's name and the signing time in the user language.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from asn1crypto import x509
from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory
from pyhanko.pdf_utils.generic import IndirectObject
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.layout import LayoutError
from pyhanko.pdf_utils.misc import PdfError as PyHankoPdfError
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError as PyHankoSigningError
from pyhanko.stamp import TextStampStyle
from pyhanko_certvalidator.registry import SimpleCertificateStore

from sohoa.errors import PdfError, SigningError
from sohoa.fsutil import write_atomic_with
from sohoa.i18n import N_, _
from sohoa.signing.mechanisms import select_operation
from sohoa.signing.token import TokenSession

log = logging.getLogger(__name__)

# Noto Serif has 1000 units per em; pyHanko 0.38 stamps render fonts with 2048
# units per em (Liberation, DejaVu) with wrong glyph widths.
STAMP_FONT = Path("/usr/share/fonts/truetype/noto/NotoSerif-Regular.ttf")
STAMP_FONT_SIZE = 8
STAMP_LEADING = 11  # line distance in points; Vietnamese stacked diacritics need more than the font size
# Field geometry in PDF points (1/72 inch), measured from the page's top left corner.
FIELD_WIDTH = 220
FIELD_HEIGHT = 44
FIELD_MARGIN = 18
FIELD_NAME_PREFIX = "SohoaSignature"
DIGEST_ALGORITHM = "sha256"


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
) -> None:
    """Write ``src`` signed by ``signer`` to ``dst`` atomically, with the visible field on page 1."""
    try:
        with open(src, "rb") as source:
            writer = IncrementalPdfFileWriter(source, strict=False)
            field_spec = fields.SigFieldSpec(
                sig_field_name=_free_field_name(writer),
                on_page=0,
                box=_top_left_box(writer),
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
                metadata, signer, signed_at=signed_at, stamp_style=_stamp_style(), new_field_spec=field_spec
            )
            appearance = {"text": _appearance_text(signer_name, signed_at)}

            def write_signed(path: Path) -> None:
                with open(path, "w+b") as output:
                    pdf_signer.sign_pdf(writer, output=output, appearance_text_params=appearance)

            write_atomic_with(dst, write_signed, suffix=".pdf")
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


class _DatedPdfSigner(signers.PdfSigner):
    """PdfSigner that uses a given signing time instead of the clock."""

    def __init__(self, *args, signed_at: datetime, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._signed_at = signed_at

    def init_signing_session(self, pdf_out, existing_fields_only=False):
        session = super().init_signing_session(pdf_out, existing_fields_only=existing_fields_only)
        session.system_time = self._signed_at
        return session


def _appearance_text(signer_name: str, signed_at: datetime) -> str:
    time_text = signed_at.isoformat(timespec="seconds")
    return "\n".join([_("Signed by: {name}").format(name=signer_name), _("Time: {time}").format(time=time_text)])


def _stamp_style() -> TextStampStyle:
    if not STAMP_FONT.is_file():
        raise SigningError(
            N_("Font {path} for the visible signature is missing; install the fonts-noto-core package."), path=STAMP_FONT
        )
    font = GlyphAccumulatorFactory(font_file=str(STAMP_FONT), font_size=STAMP_FONT_SIZE)
    # The whole text is one parameter, so '%' in a translation cannot break the template.
    return TextStampStyle(
        stamp_text="%(text)s",
        text_box_style=TextBoxStyle(font=font, font_size=STAMP_FONT_SIZE, leading=STAMP_LEADING),
        border_width=1,
        background=None,
    )


def _free_field_name(writer: IncrementalPdfFileWriter) -> str:
    existing = {name for name, _value, _ref in fields.enumerate_sig_fields(writer.prev)}
    number = 1
    while f"{FIELD_NAME_PREFIX}{number}" in existing:
        number += 1
    return f"{FIELD_NAME_PREFIX}{number}"


def _top_left_box(writer: IncrementalPdfFileWriter) -> tuple[int, int, int, int]:
    """Return the field rectangle (x1, y1, x2, y2) at the top left of page 1's visible area.

    NOTE: the box is placed in the page's unrotated coordinates; on a page
    with /Rotate it appears at another corner.
    """
    page_ref, _resources = writer.find_page_for_modification(0)
    left, bottom, right, top = _visible_area(page_ref)
    x1 = int(left + FIELD_MARGIN)
    y2 = int(top - FIELD_MARGIN)
    return x1, y2 - FIELD_HEIGHT, min(x1 + FIELD_WIDTH, int(right)), y2


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
