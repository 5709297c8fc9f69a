"""``sohoa verify FILE.pdf``: check a converted document as the archive receives it.

Reports each signature and document timestamp (validity, signer, time,
timestamp, trust, changes after signing), the PDF/A identification and
validator result, the conversion mark on page 1 with its QR code, and the
document fields in XMP and, in a PDF/A-3 file, in the ``fields.json``
attachment. Exits with status 0 only when every check passes.

The mark is read with ``pdftotext`` and the QR code from a ``pdftoppm``
render (both from poppler-utils) decoded by OpenCV; without poppler-utils
the mark is reported as not checked, and the command fails.
"""

from __future__ import annotations

import argparse
import gettext as gettext_module
import json
import logging
import shutil
import subprocess
import tempfile
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from sohoa.errors import PdfError
from sohoa.i18n import DOMAIN, LOCALE_DIR, N_, _

log = logging.getLogger(__name__)

MARK_HEADLINE = "Electronic copy converted from a paper original"  # the msgid that sohoa.pdf.mark draws
RENDER_DPI = 200
TOOL_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class MarkReport:
    """The conversion mark found on page 1: its text lines and the QR payload, if decodable."""

    checked: bool
    found: bool
    lines: tuple[str, ...] = ()
    qr_payload: str | None = None
    problem: str = ""


@dataclass(frozen=True)
class DocumentReport:
    """Everything ``sohoa verify`` checks in one file."""

    path: Path
    verification: object  # sohoa.signing.VerificationResult
    pdfa: object  # sohoa.pdf.conformance.PdfaReport
    mark: MarkReport
    fields: dict[str, str] = field(default_factory=dict)
    attachments: tuple[str, ...] = ()  # names of the embedded files
    attached_fields: dict[str, object] | None = None  # the content of fields.json, when attached
    attachment_problem: str = ""  # why fields.json could not be read

    @property
    def signatures_ok(self) -> bool:
        statuses = self.verification.signatures
        return bool(statuses) and all(status.ok for status in statuses)

    @property
    def ok(self) -> bool:
        return self.signatures_ok and self.pdfa.passed and self.mark.found and not self.attachment_problem


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("verify", help=_("check the signatures, PDF/A conformance, mark and fields of a PDF"))
    parser.add_argument("pdf", help=_("signed PDF file"))
    parser.add_argument(
        "--trust-root",
        action="append",
        default=[],
        help=_("CA certificate to trust (PEM or DER), repeatable; added to signing.trust_roots when --config is given"),
    )
    parser.add_argument("--format", choices=["text", "json"], default="text", help=_("output format (default: text)"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    roots = [Path(path) for path in args.trust_root]
    if args.config:
        from sohoa.cli import _load

        roots = [*_load(args).signing.trust_roots, *roots]
    report = verify_document(Path(args.pdf), roots)
    if args.format == "json":
        print(json.dumps(report_to_json(report), ensure_ascii=False, indent=2))
    else:
        print_report(report)
    return 0 if report.ok else 1


def verify_document(path: Path, trust_roots: list[Path]) -> DocumentReport:
    """Run every check on ``path``; raises PdfError when it is not a readable PDF."""
    from sohoa.pdf import metadata as xmp
    from sohoa.pdf.conformance import check_pdfa
    from sohoa.signing import verify_pdf

    if not path.is_file():
        raise PdfError(N_("File {path} does not exist; give the path of a signed PDF."), path=path)
    verification = verify_pdf(path, trust_roots)
    pdfa = check_pdfa(path)
    attachments, attached_fields, problem = _read_attachments(path)
    return DocumentReport(
        path, verification, pdfa, find_mark(path), _read_fields(path, xmp), attachments, attached_fields, problem
    )


def _read_fields(path: Path, xmp) -> dict[str, str]:
    import pikepdf

    with pikepdf.open(path) as pdf:
        if "/Metadata" not in pdf.Root:
            return {}
        return xmp.read_document_fields(pdf.Root.Metadata.read_bytes())


def _read_attachments(path: Path) -> tuple[tuple[str, ...], dict[str, object] | None, str]:
    """Return the names of the embedded files, the fields in ``fields.json`` if attached, and a problem reading it."""
    import pikepdf

    from sohoa.pdf.attachments import FIELDS_ATTACHMENT_NAME, read_attachments

    with pikepdf.open(path) as pdf:
        files = read_attachments(pdf)
    names = tuple(sorted(files))
    if FIELDS_ATTACHMENT_NAME not in files:
        return names, None, ""
    try:
        fields = json.loads(files[FIELDS_ATTACHMENT_NAME].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return names, None, f"{FIELDS_ATTACHMENT_NAME} is not UTF-8 JSON: {exc}"
    if not isinstance(fields, dict):
        return names, None, f"{FIELDS_ATTACHMENT_NAME} is not a JSON object"
    return names, fields, ""


def find_mark(path: Path) -> MarkReport:
    """Find the conversion mark's lines in page 1's text and decode its QR code."""
    if shutil.which("pdftotext") is None or shutil.which("pdftoppm") is None:
        return MarkReport(False, False, problem="pdftotext or pdftoppm not found; install poppler-utils")
    try:
        text = subprocess.run(
            ["pdftotext", "-enc", "UTF-8", "-f", "1", "-l", "1", str(path), "-"],
            capture_output=True,
            check=True,
            timeout=TOOL_TIMEOUT_SECONDS,
        ).stdout.decode("utf-8", errors="replace")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        return MarkReport(False, False, problem=f"pdftotext failed: {exc}")
    lines = [unicodedata.normalize("NFC", line.strip()) for line in text.splitlines() if line.strip()]
    headlines = _headline_variants()
    start = next((index for index, line in enumerate(lines) if any(headline in line for headline in headlines)), None)
    mark_lines = tuple(lines[start : start + 4]) if start is not None else ()
    return MarkReport(True, start is not None, mark_lines, _decode_qr(path))


def _headline_variants() -> set[str]:
    """Return the mark's headline in every language the box can stamp it in."""
    vietnamese = gettext_module.translation(DOMAIN, localedir=LOCALE_DIR, languages=["vi"], fallback=True)
    return {MARK_HEADLINE, unicodedata.normalize("NFC", vietnamese.gettext(MARK_HEADLINE))}


def _decode_qr(path: Path) -> str | None:
    import cv2

    with tempfile.TemporaryDirectory(prefix="sohoa-verify-") as work:
        prefix = Path(work) / "page"
        try:
            subprocess.run(
                ["pdftoppm", "-gray", "-r", str(RENDER_DPI), "-f", "1", "-l", "1", "-singlefile", str(path), str(prefix)],
                capture_output=True,
                check=True,
                timeout=TOOL_TIMEOUT_SECONDS,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log.warning("Rendering page 1 of %s for the QR code failed: %s", path, exc)
            return None
        image = cv2.imread(str(prefix.with_suffix(".pgm")), cv2.IMREAD_GRAYSCALE)
    if image is None:
        return None
    payload, _points, _straight = cv2.QRCodeDetector().detectAndDecode(image)
    return payload or None


def _yes_no(value: bool) -> str:
    return _("yes") if value else _("no")


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else _("none")


def print_report(report: DocumentReport) -> None:
    print(_("File: {path}").format(path=report.path))
    statuses = report.verification.signatures
    if not statuses:
        print(_("No signature found."))
    for number, status in enumerate(statuses, start=1):
        _print_signature(number, status)

    pdfa = report.pdfa
    identification = f"PDF/A-{pdfa.part}{pdfa.conformance.lower()}" if pdfa.part else _("none")
    print(_("PDF/A identification: {identification}").format(identification=identification))
    print(_("PDF/A check: {verdict}").format(verdict=_("passed") if pdfa.passed else _("FAILED")))
    for finding in pdfa.findings:
        print(f"  - {finding}")

    mark = report.mark
    if not mark.checked:
        print(_("Conversion mark: not checked ({problem})").format(problem=mark.problem))
    else:
        print(_("Conversion mark: {found}").format(found=_("found") if mark.found else _("NOT FOUND")))
        for line in mark.lines:
            print(f"  {line}")
        print(_("QR code: {payload}").format(payload=mark.qr_payload or _("not decodable")))

    print(_("Fields:"))
    for name, value in report.fields.items():
        print(f"  {name}: {value}")
    _print_attachments(report)
    print(_("Result: all checks passed") if report.ok else _("Result: FAILED"))


def _print_attachments(report: DocumentReport) -> None:
    if not report.attachments:
        return
    print(_("Attachments: {names}").format(names=", ".join(report.attachments)))
    if report.attachment_problem:
        print("  " + _("Cannot read the fields attachment: {problem}").format(problem=report.attachment_problem))
    if report.attached_fields is None:
        return
    print(_("Fields in the attachment:"))
    for name, value in report.attached_fields.items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        print(f"  {name}: {shown}")


def _print_signature(number: int, status) -> None:
    verdict = _("valid") if status.ok else _("INVALID")
    if status.kind == "document_timestamp":
        print(_("Document timestamp {number} ({field}): {verdict}").format(number=number, field=status.field_name, verdict=verdict))
        print("  " + _("Timestamp: {time}").format(time=_time(status.timestamp)))
        print("  " + _("Time stamping authority: {signer}").format(signer=status.signer))
        return
    print(_("Signature {number} ({field}): {verdict}").format(number=number, field=status.field_name, verdict=verdict))
    print("  " + _("Signer: {signer}").format(signer=status.signer))
    print("  " + _("Signing time: {time}").format(time=_time(status.signing_time)))
    if status.timestamp is None:
        print("  " + _("Timestamp: none"))
    else:
        stamp_verdict = _("valid") if status.timestamp_valid else _("INVALID")
        print("  " + _("Timestamp: {time} ({verdict})").format(time=_time(status.timestamp), verdict=stamp_verdict))
    print("  " + _("Cryptographically valid: {answer}").format(answer=_yes_no(status.valid)))
    print("  " + _("Certificate trusted: {answer}").format(answer=_yes_no(status.trusted)))
    print("  " + _("Document changed after signing: {answer}").format(answer=_change_text(status)))


def _change_text(status) -> str:
    if not status.intact:
        return _("yes, in a way the signature does not permit")
    if status.covers_whole_file:
        return _("no")
    return _("only permitted additions ({level})").format(level=status.modification)


def report_to_json(report: DocumentReport) -> dict[str, object]:
    def signature_json(status) -> dict[str, object]:
        data = asdict(status)
        data["ok"] = status.ok
        for key in ("signing_time", "timestamp"):
            data[key] = data[key].isoformat() if data[key] is not None else None
        return data

    return {
        "file": str(report.path),
        "ok": report.ok,
        "signatures": [signature_json(status) for status in report.verification.signatures],
        "pdfa": {
            "part": report.pdfa.part,
            "conformance": report.pdfa.conformance,
            "passed": report.pdfa.passed,
            "findings": list(report.pdfa.findings),
        },
        "mark": {
            "checked": report.mark.checked,
            "found": report.mark.found,
            "lines": list(report.mark.lines),
            "qr_payload": report.mark.qr_payload,
            "problem": report.mark.problem,
        },
        "fields": report.fields,
        "attachments": list(report.attachments),
        "attached_fields": report.attached_fields,
        "attachment_problem": report.attachment_problem,
    }
