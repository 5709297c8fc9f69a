"""Separator and cover sheets: printed pages with a QR code that start a new document in a batch.

The QR code carries a short, versioned, ASCII text::

    sohoa:sheet?v=1&kind=cover&id=3f9a1c2b&profile=vanbang&type=VB&operator=Nguy%E1%BB%85n...&pages=5

Only a QR code whose text starts with ``sohoa:sheet?`` and whose fields are
all valid makes a page a sheet, so a QR code printed on a document (a
conversion mark, a tax code, a link) never splits a batch. Values are
percent-encoded UTF-8, which keeps the QR text ASCII for every decoder.

A sheet is printed on one side. When a duplex scanner reads it, the back
comes right after it: :func:`is_blank_page` decides whether that page is the
blank back (set aside) or the first page of the document (kept). It uses the
page clean-up's conservative measure, so a page with a word or a signature is
kept.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import secrets
import unicodedata
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import cv2
import numpy
import qrcode
from fpdf import FPDF
from PIL import Image

from sohoa import fields as fieldlib
from sohoa.errors import ConfigError, PdfError
from sohoa.fsutil import write_atomic
from sohoa.i18n import N_, _, ngettext

log = logging.getLogger(__name__)

PAYLOAD_PREFIX = "sohoa:sheet?"
PAYLOAD_VERSION = "1"
SHEET_KINDS = ("separator", "cover")
# The DocCode abbreviations a sheet may declare: those whose document type the recognizer names.
SHEET_TYPE_CODES = tuple(dict.fromkeys(code for _name, code in fieldlib.DOCUMENT_TYPES))
PROFILE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
SHEET_ID_PATTERN = re.compile(r"^[0-9a-f]{8}$")
MAX_OPERATOR_LENGTH = 80
MAX_EXPECTED_PAGES = 10_000

# Detection: the page is reduced so that its longer side has at most this many
# pixels before the QR code is searched. An A4 page becomes about 100 dpi,
# where a 70 mm sheet code with short settings has about 5 pixels per module.
DETECT_MAX_SIDE_PX = 1200


SHEET_FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoSerif-Regular.ttf")
SHEET_BOLD_FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoSerif-Bold.ttf")
SHEET_FONT_FAMILY = "NotoSerif"
# Sizes in millimetres on an A4 page.
SHEET_QR_SIZE_MM = 70.0
SHEET_MARGIN_MM = 20.0


@dataclass(frozen=True)
class Sheet:
    """The settings a separator or cover sheet carries; None means "not set on the sheet"."""

    kind: str
    sheet_id: str
    profile: str | None = None
    type_code: str | None = None
    operator: str | None = None
    expected_pages: int | None = None

    def __post_init__(self) -> None:
        problem = _sheet_problem(self)
        if problem is not None:
            raise ValueError(problem)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Sheet:
        names = ("kind", "sheet_id", "profile", "type_code", "operator", "expected_pages")
        return cls(**{name: data.get(name) for name in names})


def _sheet_problem(sheet: Sheet) -> str | None:
    """Return why ``sheet`` is invalid, or None."""
    if sheet.kind not in SHEET_KINDS:
        return f"sheet kind {sheet.kind!r} is not one of {', '.join(SHEET_KINDS)}"
    if not isinstance(sheet.sheet_id, str) or not SHEET_ID_PATTERN.match(sheet.sheet_id):
        return f"sheet id {sheet.sheet_id!r} is not 8 lower-case hex digits"
    if sheet.profile is not None and not PROFILE_NAME_PATTERN.match(sheet.profile):
        return f"profile name {sheet.profile!r} is not 1-40 letters, digits, '_', '.' or '-'"
    if sheet.type_code is not None and sheet.type_code not in SHEET_TYPE_CODES:
        return f"document type {sheet.type_code!r} is not one of {', '.join(SHEET_TYPE_CODES)}"
    if sheet.operator is not None and not (0 < len(sheet.operator) <= MAX_OPERATOR_LENGTH and sheet.operator.isprintable()):
        return f"operator name must be 1-{MAX_OPERATOR_LENGTH} printable characters"
    if sheet.expected_pages is not None and not (
        isinstance(sheet.expected_pages, int) and 0 < sheet.expected_pages <= MAX_EXPECTED_PAGES
    ):
        return f"expected page count {sheet.expected_pages!r} is not between 1 and {MAX_EXPECTED_PAGES}"
    return None


def new_sheet_id() -> str:
    """Return a random sheet id: 8 hex digits, printed on the sheet so staff can name it."""
    return secrets.token_hex(4)


# The QR text


def encode_sheet(sheet: Sheet) -> str:
    """Return the QR text of ``sheet``: the fixed prefix, the version, then its set fields."""
    values = {
        "v": PAYLOAD_VERSION,
        "kind": sheet.kind,
        "id": sheet.sheet_id,
        "profile": sheet.profile,
        "type": sheet.type_code,
        "operator": unicodedata.normalize("NFC", sheet.operator) if sheet.operator else None,
        "pages": sheet.expected_pages,
    }
    return PAYLOAD_PREFIX + urlencode({key: value for key, value in values.items() if value is not None})


def parse_sheet(text: str) -> Sheet | None:
    """Return the sheet whose QR text is ``text``, or None when it is not a valid sohoa sheet.

    A text with the sohoa prefix but an unknown version or an invalid field is
    logged at WARNING and returns None, so the page stays a page of the document.
    """
    if not text.startswith(PAYLOAD_PREFIX):
        return None
    try:
        values = dict(parse_qsl(text[len(PAYLOAD_PREFIX) :], keep_blank_values=True, strict_parsing=True, errors="strict"))
        if values.get("v") != PAYLOAD_VERSION:
            raise ValueError(f"version {values.get('v')!r} is not {PAYLOAD_VERSION}")
        pages = values.get("pages")
        if pages is not None and not pages.isdigit():
            raise ValueError(f"expected page count {pages!r} is not a number")
        operator = values.get("operator")
        return Sheet(
            kind=values.get("kind", ""),
            sheet_id=values.get("id", ""),
            profile=values.get("profile"),
            type_code=unicodedata.normalize("NFC", values["type"]) if "type" in values else None,
            operator=unicodedata.normalize("NFC", operator) if operator is not None else None,
            expected_pages=int(pages) if pages is not None else None,
        )
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("A page has a sohoa sheet QR code that is invalid (%s); the page is kept as a page: %r", exc, text[:200])
        return None


# Reading a scanned page


def _grey_array(image: Image.Image, max_side: int) -> numpy.ndarray:
    """Return ``image`` as an 8-bit grey array whose longer side is at most ``max_side`` pixels."""
    grey = image.convert("L")
    factor = math.ceil(max(grey.size) / max_side)
    if factor > 1:
        grey = grey.reduce(factor)
    return numpy.asarray(grey)


def _decode_qr(pixels: numpy.ndarray) -> tuple[str, bool]:
    """Return the decoded text of the QR code in ``pixels`` ("" if none) and whether one was located."""
    # The ArUco-based detector (OpenCV 4.8 and later) decoded every printed sheet
    # in tests/benchmarks/separator_detection.py, while the classic one missed
    # some large codes at 150-300 dpi.
    detector = cv2.QRCodeDetectorAruco() if hasattr(cv2, "QRCodeDetectorAruco") else cv2.QRCodeDetector()
    try:
        text, points, _straight = detector.detectAndDecode(pixels)
    except cv2.error as exc:
        log.debug("The QR code detector failed on a page: %s", exc)
        return "", False
    return text or "", points is not None


def detect_sheet(image: Image.Image) -> Sheet | None:
    """Return the sohoa sheet shown on the scanned ``image``, or None for a page of a document.

    The page is first searched at about 100 dpi. When a QR code is located
    there but cannot be decoded, the search is repeated at the full
    resolution. An unreadable code, or a code that is not a sohoa sheet,
    returns None.
    """
    reduced = _grey_array(image, DETECT_MAX_SIDE_PX)
    text, located = _decode_qr(reduced)
    if not text and located and max(image.size) > DETECT_MAX_SIDE_PX:
        text, _located = _decode_qr(numpy.asarray(image.convert("L")))
    if not text:
        return None
    return parse_sheet(text)


def is_blank_page(image: Image.Image, dpi: float) -> bool:
    """Return whether ``image`` is blank by the page clean-up's conservative ink measure.

    The measure is :func:`sohoa.cleanup.is_blank`: a single word, a page
    number or a signature keeps the page.
    """
    from sohoa.cleanup import is_blank

    pixels = numpy.asarray(image.convert("L") if image.mode in ("1", "P", "LA", "RGBA") else image)
    return is_blank(pixels, dpi).blank


# Printing sheets


def _sheet_title(sheet: Sheet) -> str:
    return _("DOCUMENT SEPARATOR SHEET") if sheet.kind == "separator" else _("DOCUMENT COVER SHEET")


def sheet_lines(sheet: Sheet, profile_label: str | None = None) -> list[str]:
    """Return the lines of settings printed under the QR code, in the selected language."""
    if sheet.profile is None:
        profile = _("default settings of the box")
    elif profile_label:
        profile = f"{sheet.profile} ({profile_label})"
    else:
        profile = sheet.profile
    type_name = next((name.capitalize() for name, code in fieldlib.DOCUMENT_TYPES if code == sheet.type_code), None)
    lines = [
        _("Capture profile: {profile}").format(profile=profile),
        _("Document type: {type}").format(
            type=f"{sheet.type_code} ({type_name})" if sheet.type_code else _("read from the document text")
        ),
        _("Operator: {operator}").format(operator=sheet.operator or _("the box's operator")),
        _("Expected pages: {pages}").format(pages=sheet.expected_pages or _("not checked")),
        _("Sheet ID: {sheet_id}").format(sheet_id=sheet.sheet_id),
    ]
    return [unicodedata.normalize("NFC", line) for line in lines]


def _instructions(sheet: Sheet) -> list[str]:
    lines = [
        _("Insert this sheet before the document, face up like its pages."),
        _("The box starts a new document at this sheet and does not include the sheet in it."),
        _("Print on one side only and leave the back blank."),
    ]
    if sheet.expected_pages:
        lines.append(_("The box checks that it scans exactly the expected number of pages."))
    return [unicodedata.normalize("NFC", line) for line in lines]


def _qr_image(text: str) -> Image.Image:
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4, box_size=10)
    code.add_data(text.encode("ascii"))
    code.make(fit=True)
    return code.make_image(fill_color="black", back_color="white").get_image().convert("L")


def _draw_sheet(pdf: FPDF, sheet: Sheet, profile_label: str | None) -> None:
    pdf.add_page()
    width = pdf.w - 2 * SHEET_MARGIN_MM
    pdf.set_text_color(0)

    pdf.set_xy(SHEET_MARGIN_MM, SHEET_MARGIN_MM)
    pdf.set_font(SHEET_FONT_FAMILY, style="B", size=22)
    pdf.multi_cell(width, 11, _sheet_title(sheet), align="C", new_x="LMARGIN", new_y="NEXT")

    qr_top = pdf.get_y() + 8
    pdf.image(_qr_image(encode_sheet(sheet)), x=(pdf.w - SHEET_QR_SIZE_MM) / 2, y=qr_top, w=SHEET_QR_SIZE_MM, h=SHEET_QR_SIZE_MM)

    pdf.set_xy(SHEET_MARGIN_MM, qr_top + SHEET_QR_SIZE_MM + 10)
    pdf.set_font(SHEET_FONT_FAMILY, size=14)
    for line in sheet_lines(sheet, profile_label):
        pdf.multi_cell(width, 8, line, align="L", new_x="LMARGIN", new_y="NEXT")

    pdf.ln(8)
    pdf.set_font(SHEET_FONT_FAMILY, style="B", size=13)
    for line in _instructions(sheet):
        pdf.multi_cell(width, 7, line, align="L", new_x="LMARGIN", new_y="NEXT")


def render_sheets(sheets: list[Sheet], output: Path, *, profile_labels: dict[str, str] | None = None) -> None:
    """Write ``sheets`` as an A4 PDF, one sheet per page, durably to ``output``.

    Raises PdfError when the font is missing or the file cannot be written.
    """
    if not sheets:
        raise ValueError("render_sheets needs at least one sheet")
    labels = profile_labels or {}
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_margins(SHEET_MARGIN_MM, SHEET_MARGIN_MM)
    pdf.set_title(_sheet_title(sheets[0]))
    pdf.set_creator("sohoa")
    try:
        pdf.add_font(SHEET_FONT_FAMILY, fname=str(SHEET_FONT_PATH))
        pdf.add_font(SHEET_FONT_FAMILY, style="B", fname=str(SHEET_BOLD_FONT_PATH))
        for sheet in sheets:
            _draw_sheet(pdf, sheet, labels.get(sheet.profile or ""))
        data = bytes(pdf.output())
        write_atomic(Path(output), data)
    except (OSError, RuntimeError) as exc:
        raise PdfError(N_("Cannot write the sheets to {path}: {detail}"), path=output, detail=exc) from exc
    log.info("Wrote %d %s sheets to %s", len(sheets), sheets[0].kind, output)


# The ``sohoa sheets`` command


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("sheets", help=_("print separator or cover sheets that start a new document in a batch"))
    parser.add_argument("--kind", choices=SHEET_KINDS, default="separator", help=_("kind of sheet (default: separator)"))
    parser.add_argument("--profile", help=_("capture profile, a [profiles.NAME] key of the configuration"))
    parser.add_argument("--type", dest="type_code", choices=SHEET_TYPE_CODES, help=_("document type abbreviation, used when the text does not show the type"))
    parser.add_argument("--operator", help=_("full name of the person who scans, shown in the conversion mark"))
    parser.add_argument("--pages", type=int, help=_("number of paper pages in the document, checked after the scan"))
    parser.add_argument("--count", type=int, default=1, help=_("number of sheets to print, each with its own ID (default: 1)"))
    parser.add_argument("-o", "--output", required=True, help=_("PDF file to write"))
    parser.set_defaults(func=run)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _configured_profiles(args: argparse.Namespace) -> dict[str, str] | None:
    """Return the configured profiles' labels by name, or None when no configuration is given or installed."""
    from sohoa.cli import DEFAULT_CONFIG, _load

    if not (args.config or os.environ.get("SOHOA_CONFIG") or DEFAULT_CONFIG.exists()):
        return None
    config = _load(args)
    return {name: profile.label for name, profile in config.profiles.items()}


def build_sheets(args: argparse.Namespace) -> list[Sheet]:
    """Return ``args.count`` sheets with the command's settings, raising ConfigError for an invalid one."""
    if not 1 <= args.count <= 500:
        raise ConfigError(N_("--count must be between 1 and 500, not {count}."), count=args.count)
    # The options are checked here with translated messages, because Sheet's own reasons are in English.
    if args.pages is not None and not 0 < args.pages <= MAX_EXPECTED_PAGES:
        raise ConfigError(N_("--pages must be between 1 and {maximum}, not {pages}."), maximum=MAX_EXPECTED_PAGES, pages=args.pages)
    operator = args.operator.strip() if args.operator else None
    if operator is not None and not (len(operator) <= MAX_OPERATOR_LENGTH and operator.isprintable()):
        raise ConfigError(N_("--operator must be a name of at most {maximum} characters on one line."), maximum=MAX_OPERATOR_LENGTH)
    if args.profile is not None and not PROFILE_NAME_PATTERN.match(args.profile):
        raise ConfigError(
            N_("--profile {profile} is not a profile name: use 1 to 40 letters without accents, digits, '_', '.' or '-'."),
            profile=args.profile,
        )
    try:
        template = Sheet(
            kind=args.kind,
            sheet_id=new_sheet_id(),
            profile=args.profile,
            type_code=args.type_code,
            operator=operator or None,
            expected_pages=args.pages,
        )
    except ValueError as exc:
        raise ConfigError(N_("The sheet settings are invalid: {detail}. Correct the option and run the command again."), detail=exc) from exc
    return [template] + [replace(template, sheet_id=new_sheet_id()) for _index in range(args.count - 1)]


def run(args: argparse.Namespace) -> int:
    sheets = build_sheets(args)
    labels = _configured_profiles(args)
    if args.profile is not None and labels is not None and args.profile not in labels:
        if not labels:
            raise ConfigError(
                N_("Capture profile {profile} is not configured: the configuration has no [profiles.NAME] section. Add one, or leave out --profile."),
                profile=args.profile,
            )
        raise ConfigError(
            N_("Capture profile {profile} is not configured; use one of: {profiles}."),
            profile=args.profile,
            profiles=", ".join(sorted(labels)),
        )
    output = Path(args.output)
    render_sheets(sheets, output, profile_labels=labels)
    # The atomic write creates the file private (0600); sheets are meant to be printed, so other users may read them.
    output.chmod(0o644 & ~_current_umask())
    print(ngettext("Wrote {count} sheet to {path}. Print it on one side only.", "Wrote {count} sheets to {path}. Print them on one side only.", len(sheets)).format(count=len(sheets), path=args.output))
    return 0
