"""The steps that turn one scanned batch into an archived document.

Each step takes a job from the journal, writes its output into the job's own
spool folder durably, then records the new state. A step can be run again
after a crash: it redoes only what the journal does not show as done.

    acquire -> recognize -> build -> sign -> upload
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from sohoa import fields as fieldlib
from sohoa.config import Config, ProfileConfig
from sohoa.duplicates import find_duplicate
from sohoa.errors import (
    AllPagesBlankError,
    ConfigError,
    FeederEmptyError,
    ImageError,
    JobFinding,
    PdfError,
    ScanCancelledError,
    SignatureInvalidError,
    UploadConflictError,
    UploadRejectedError,
    UploadSettingsError,
)
from sohoa.fsutil import fsync_dir, sha256_file, write_atomic, write_atomic_with
from sohoa.i18n import N_
from sohoa.journal import Job, Journal, Page, error_columns
from sohoa.search import index_document
from sohoa.splitting import (
    BatchSplitter,
    PageFile,
    apply_declared_type,
    close_document,
    declared_metadata,
    declared_operator,
)

if TYPE_CHECKING:
    from sohoa.ocr import OcrEngine, PageText
    from sohoa.pdf import Attachment
    from sohoa.scanner import ScannedPage, Scanner
    from sohoa.signing import TokenSigner
    from sohoa.upload import ArchiveClient, Receipt

log = logging.getLogger(__name__)

# A file in the job's spool folder, written by versions before the journal's
# timestamp_pending column, that marks a signed PDF still owed a document
# timestamp. It contains the authority's URL and a newline.
LEGACY_TIMESTAMP_MARKER = "timestamp-pending"


# The "Format" metadata of a signed PDF imported from the hot folder and
# archived unchanged: an electronic document with a digital signature, not a
# copy this box converted from paper.
SIGNED_IMPORT_FORMAT = "Bản điện tử có chữ ký số"

# The sources that can start a scan, stored with the job as its origin.
ORIGINS = ("button", "scanner_button", "feeder", "mqtt", "signal", "hot_folder")


@dataclass(frozen=True)
class CaptureRequest:
    """One request to scan: the capture profile (a ``[profiles.NAME]`` key, or None) and what asked."""

    profile: str | None = None
    origin: str = "button"


@dataclass(frozen=True)
class ScanResult:
    """Result of one button press: the last job, and the scanner error that stopped it, if any.

    ``documents`` lists the jobs the press captured, in feed order: more than
    one when separator or cover sheets split the batch.
    """

    job: Job | None
    pages_scanned: int
    error: Exception | None
    documents: tuple[Job, ...] = ()


def _slug(text: str) -> str:
    """Return an ASCII, lower-case, dash-separated form of ``text`` for file names."""
    decomposed = unicodedata.normalize("NFD", text.replace("Đ", "D").replace("đ", "d"))
    ascii_text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    words = "".join(ch.lower() if ch.isalnum() else " " for ch in ascii_text).split()
    return "-".join(words[:6]) or "tai-lieu"


def adopt_legacy_timestamp_marker(journal: Journal, job: Job, job_dir: Path) -> Job:
    """Move a legacy ``timestamp-pending`` marker file of a signed job into the journal column.

    The column is committed before the file is removed, so a crash in between
    leaves a harmless stale file that the next call removes.
    """
    marker = job_dir / LEGACY_TIMESTAMP_MARKER
    if job.state != "signed" or not marker.exists():
        return job
    if job.timestamp_pending is None:
        try:
            url = marker.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("Job %s: the timestamp marker %s cannot be read (%s), so the timestamp is treated as pending", job.id, marker, exc)
            url = ""
        job = journal.update_job(job.id, timestamp_pending=url or "unknown")
        log.info("Job %s: moved the pending timestamp from %s into the journal", job.id, marker)
    marker.unlink(missing_ok=True)
    return job


class Pipeline:
    def __init__(
        self,
        config: Config,
        journal: Journal,
        *,
        scanner: Scanner,
        ocr: Callable[[], OcrEngine],
        signer: TokenSigner,
        archive: ArchiveClient,
    ) -> None:
        self.config = config
        self.journal = journal
        self.scanner = scanner
        self._ocr_factory = ocr
        self._ocr: OcrEngine | None = None
        self.signer = signer
        self._unit_signer: TokenSigner | None = None  # created on the first document the unit signs
        self.archive = archive

    def job_dir(self, job_id: str) -> Path:
        return self.config.spool_dir / job_id

    @property
    def ocr(self) -> OcrEngine:
        if self._ocr is None:
            self._ocr = self._ocr_factory()
        return self._ocr

    # acquire

    def profile(self, name: str | None) -> ProfileConfig | None:
        """Return the capture profile called ``name``, or None for the default settings."""
        if name is None:
            return None
        try:
            return self.config.profiles[name]
        except KeyError:
            raise ConfigError(
                N_("Capture profile {profile} is not configured; add a [profiles.{profile}] section or use another profile."),
                profile=name,
            ) from None

    def acquire(self, request: CaptureRequest | None = None, *, cancel: threading.Event | None = None) -> ScanResult:
        """Scan one batch: into the open flatbed job or the interrupted job if there is one, else into a new job.

        Each page is journalled as soon as its file is durable. A batch that
        stops on a jam, an open cover or an I/O error leaves the job
        ``interrupted`` with its pages, and the next press continues it. A press
        on an empty feeder finishes an interrupted job with the pages it has.
        With ``capture.separator_sheets``, each separator or cover sheet ends
        the current job and starts a new one (see :mod:`sohoa.splitting`).

        A flatbed profile scans one page per press into a job that stays
        ``collecting`` until :meth:`finish_flatbed`. A request for any other
        profile finishes the open flatbed job first, so that job goes on to
        recognition and the request starts its own job. Setting ``cancel``
        stops the scan, and the job ends ``cancelled`` with the pages read
        before it (a job without pages is discarded).
        """
        request = request or CaptureRequest()
        open_job = self._open_flatbed_job_for(request)
        job = open_job or self.journal.latest_interrupted()
        resuming = job is not None
        # A continued job keeps the profile it was started with.
        profile = self.profile(job.profile if resuming else request.profile)
        collecting = profile is not None and profile.flatbed
        if job is None:
            job = self.journal.create_job(profile=request.profile, origin=request.origin)
        else:
            self.journal.set_state(job.id, "scanning", **error_columns(None))
            log.info("Job %s: continuing the %s scan after page %d", job.id, job.state, job.page_count)

        batch_dir = self.job_dir(job.id) / f"batch-{self._next_batch_number(job.id):02d}"
        splitter = BatchSplitter(
            self.journal,
            self.config.spool_dir,
            job,
            batch_dir,
            origin=request.origin,
            profiles=self.config.profiles,
            detect_sheets=self.config.capture.separator_sheets,
        )

        def record(page: ScannedPage) -> None:
            splitter.record(PageFile(page.path, page.width, page.height, page.dpi))

        try:
            outcome = self.scanner.scan_batch(batch_dir, on_page=record, profile=profile, cancel=cancel)
        except FeederEmptyError as exc:
            if open_job is not None:
                return ScanResult(self.journal.set_state(job.id, "collecting"), 0, exc)
            if resuming and job.page_count > 0:
                job = close_document(self.journal, job)
                return ScanResult(job, 0, None, (job,))
            self._discard_empty_job(job.id)
            return ScanResult(None, 0, exc)
        except Exception as exc:
            self._interrupt(self.journal.get_job(splitter.current.id), exc, collecting=collecting)
            raise

        return self._finish_batch(splitter, outcome, collecting=collecting)

    def _finish_batch(self, splitter: BatchSplitter, outcome, *, collecting: bool) -> ScanResult:
        """End the batch's last job (cancelled, interrupted, still collecting or captured) and list the documents the press captured."""
        job = self.journal.get_job(splitter.current.id)
        documents = list(splitter.closed)
        scanned = len(outcome.pages)
        if isinstance(outcome.error, ScanCancelledError):
            return ScanResult(self.cancel_job(job, outcome.error), scanned, outcome.error, tuple(documents))
        if outcome.error is not None:
            job = self._interrupt(job, outcome.error, collecting=collecting)
            return ScanResult(job, scanned, outcome.error, tuple(documents))
        if collecting:
            job = self.journal.set_state(job.id, "collecting")
            log.info("Job %s: flatbed document open with %d pages", job.id, job.page_count)
            return ScanResult(job, scanned, None, tuple(documents))
        if job.page_count == 0:
            # Only sheets followed the last document, so no new document was started.
            self._discard_empty_job(job.id)
            last = documents[-1] if documents else None
            return ScanResult(last, scanned, None, tuple(documents))
        job = close_document(self.journal, job)
        documents.append(job)
        return ScanResult(job, scanned, None, tuple(documents))

    def _open_flatbed_job_for(self, request: CaptureRequest) -> Job | None:
        """Return the open flatbed job if ``request`` adds a page to it; finish it when the request is for another profile."""
        job = self.journal.open_flatbed_job()
        if job is None or job.profile == request.profile:
            return job
        log.info("Job %s: flatbed document finished because a scan with profile %s was requested", job.id, request.profile or "default")
        self.finish_flatbed()
        return None

    def finish_flatbed(self) -> Job | None:
        """Close the open flatbed job so that it is recognized, built and signed; return it, or None if none is open."""
        job = self.journal.open_flatbed_job()
        if job is None:
            return None
        job = close_document(self.journal, self.journal.update_job(job.id, **error_columns(None)))
        log.info("Job %s: flatbed document finished with %d pages", job.id, job.page_count)
        return job

    def cancel_job(self, job: Job, error: Exception | None = None) -> Job | None:
        """End ``job`` as ``cancelled``, keeping its page files; discard it instead when it has no page.

        Returns the cancelled job, or None when it was discarded.
        """
        if job.page_count == 0 and job.state in ("scanning", "collecting"):
            self._discard_empty_job(job.id)
            return None
        if error is None:
            error = JobFinding("scan_cancelled", N_("Cancelled with a long press."))
        job = self.journal.set_state(job.id, "cancelled", **error_columns(error, "scan_cancelled"))
        log.warning("Job %s cancelled with %d pages; its page files stay in %s", job.id, job.page_count, self.job_dir(job.id))
        return job

    def _next_batch_number(self, job_id: str) -> int:
        folder = self.job_dir(job_id)
        return len(list(folder.glob("batch-*"))) + 1 if folder.exists() else 1

    def _interrupt(self, job: Job, error: Exception, *, collecting: bool = False) -> Job:
        """Keep the pages of a failed batch: a flatbed job stays open, any other job becomes ``interrupted``.

        A job with neither a page nor a sheet is discarded.
        """
        if job.page_count == 0 and not job.declared:
            self._discard_empty_job(job.id)
            return job
        state = "collecting" if collecting else "interrupted"
        return self.journal.set_state(job.id, state, **error_columns(error, "scanner_failed"))

    def _discard_empty_job(self, job_id: str) -> None:
        with self.journal.transaction() as db:
            db.execute("delete from jobs where id = ? and page_count = 0", [job_id])
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        log.info("Job %s discarded: no page was scanned", job_id)

    # clean

    def clean(self, job: Job) -> list[Page]:
        """Clean every page not yet cleaned, and return the pages that stay in the document.

        Each page is checked for blankness (with ``capture.remove_blank_pages``),
        cropped to the sheet (``capture.crop``) and deskewed (``capture.deskew``).
        A changed page is written to ``clean/page-NNNN.png`` and recorded as
        the page's ``clean_path``; an unchanged one records its scan. A blank
        page is recorded as dropped with its figures. The scanned files are
        never changed. A page with a ``clean_path`` or marked dropped is not
        cleaned again after a restart.

        Raises:
            AllPagesBlankError: when every page is blank; the pages are kept
                and the job is left for a person to check.
        """
        capture = self.config.capture
        for page in self.journal.pages(job.id):
            if page.dropped or (page.clean_path and Path(page.clean_path).exists()):
                continue
            if page.state == "recognized" and page.clean_path is None:
                # Read before clean-up existed, so its OCR result refers to the scan as it is.
                self.journal.set_page_cleaned(job.id, page.seq, Path(page.path))
                continue
            self._clean_page(job, page, remove_blank=capture.remove_blank_pages, crop=capture.crop, straighten=capture.deskew)

        pages = self.journal.pages(job.id)
        kept = [page for page in pages if not page.dropped]
        if not kept:
            raise AllPagesBlankError(
                N_(
                    "All {count} pages of job {job_id} were found blank, so no document was made. The scans are kept."
                    " Check which side of the paper the scanner reads, turn the pages over and scan them again."
                ),
                count=len(pages),
                job_id=job.id,
            )
        return kept

    def _clean_page(self, job: Job, page: Page, *, remove_blank: bool, crop: bool, straighten: bool) -> None:
        from sohoa.cleanup import clean_page

        with self._open_page(Path(page.path)) as scanned:
            result = clean_page(scanned, page.dpi, remove_blank=remove_blank, crop=crop, straighten=straighten)
            if result.dropped:
                reason = result.verdict.describe()
                self.journal.set_page_dropped(job.id, page.seq, f"blank: {reason}")
                log.info("Job %s: page %d dropped as blank (%s); its scan %s is kept", job.id, page.seq, reason, page.path)
                return
            clean_path = Path(page.path)
            if result.changed:
                clean_path = self._write_clean_image(job, page, result.image)
        self.journal.set_page_cleaned(job.id, page.seq, clean_path)
        log.info(
            "Job %s: page %d cleaned (%s, %s, %s)",
            job.id,
            page.seq,
            "kept: " + result.verdict.describe() if result.verdict else "blank check off",
            f"cropped to {result.sheet.box}" if result.sheet else "not cropped",
            f"deskewed by {result.skew.angle} degrees" if result.deskewed else "not deskewed",
        )

    def _write_clean_image(self, job: Job, page: Page, image: Image.Image) -> Path:
        """Write a cleaned page losslessly, with the scan's dpi, and return its path."""
        path = self.job_dir(job.id) / "clean" / f"page-{page.seq:04d}.png"
        # On a sample page, level 3 wrote a file 6% larger than Pillow's default level 6 in two thirds of the time.
        write_atomic_with(
            path, lambda tmp: image.save(tmp, format="PNG", dpi=(page.dpi, page.dpi), compress_level=3), suffix=".png"
        )
        return path

    # recognize

    def recognize(self, job: Job) -> Job:
        """Clean the pages, then read the text of every page kept, turning each page image upright.

        When the OCR engine finds a page sideways or upside down, the cleaned
        image is rewritten upright before its text is recorded, so the PDF
        page, its text layer and the mark all use the upright page.
        """
        from sohoa.ocr import PageText

        texts: list[PageText] = []
        ocr_dir = self.job_dir(job.id) / "ocr"
        for page in self.clean(job):
            if page.state == "recognized" and page.ocr_path and Path(page.ocr_path).exists():
                texts.append(PageText.from_dict(json.loads(Path(page.ocr_path).read_text(encoding="utf-8"))))
                continue
            with self._open_page(Path(page.image_path)) as image:
                page_text = self.ocr.recognize(image)
                if page_text.rotation:
                    self._write_upright(job, page, page_text.upright(image))
                    page_text = dataclasses.replace(page_text, rotation=0)
            ocr_path = ocr_dir / f"page-{page.seq:04d}.json"
            write_atomic(ocr_path, json.dumps(page_text.to_dict(), ensure_ascii=False).encode("utf-8"))
            self.journal.set_page_recognized(job.id, page.seq, ocr_path)
            texts.append(page_text)
            log.info("Job %s: page %d recognized, %d lines", job.id, page.seq, len(page_text.lines))

        full_text = "\n".join(text.text for text in texts)
        confidences = [line.confidence for text in texts for line in text.lines]
        fields = fieldlib.fields_to_json(fieldlib.extract_fields(full_text, confidences))
        if (job.declared or {}).get("type_code"):
            fields, type_check = apply_declared_type(job.declared, fields)
            declared_changes = {"declared": {**job.declared, "type_check": type_check}} if type_check else {}
        else:
            fields, type_check = self._apply_profile_type(job, fields)
            declared_changes = {"declared": {**(job.declared or {}), "type_check": type_check}} if type_check else {}
        # The search row, the duplicate mark and the state change commit together.
        with self.journal.transaction() as db:
            duplicate = find_duplicate(db, job.id, fields, full_text)
            index_document(db, job.id, fields, full_text)
            job = self.journal.set_state(
                job.id,
                "recognized",
                fields=fields,
                duplicate_of=duplicate.job_id if duplicate else None,
                duplicate_reason=duplicate.reason if duplicate else None,
                **declared_changes,
            )
        if duplicate is not None:
            log.warning(
                "Job %s is a probable duplicate of job %s (%s, text similarity %s); both are kept",
                job.id,
                duplicate.job_id,
                duplicate.reason,
                "n/a" if duplicate.similarity is None else f"{duplicate.similarity:.2f}",
            )
        return job

    def _write_upright(self, job: Job, page: Page, upright: Image.Image) -> None:
        """Replace the page's cleaned image by its upright form; the scan itself is never rewritten."""
        path = self._write_clean_image(job, page, upright)
        if page.clean_path != str(path):
            self.journal.set_page_cleaned(job.id, page.seq, path)
        log.info("Job %s: page %d turned upright", job.id, page.seq)

    def _apply_profile_type(self, job: Job, fields: dict[str, dict]) -> tuple[dict[str, dict], dict | None]:
        """Fill TypeName from the type code of the job's capture profile when the recognizer is unsure of it.

        Staff chose the profile, so a type filled this way counts as confirmed
        in the metadata, as a sheet's does. A sure recognized type is kept.
        Returns the fields and the check to store in ``declared["type_check"]``,
        with ``source`` "profile", or None when the profile sets no type.
        """
        profile_name = (job.declared or {}).get("profile") or job.profile
        profile = self.config.profiles.get(profile_name) if profile_name else None
        if profile is None or profile.type_code is None:
            return fields, None
        fields, check = apply_declared_type({"type_code": profile.type_code}, fields)
        if check is None:
            return fields, None
        log.info("Job %s: document type %s of capture profile %s: %s", job.id, profile.type_code, profile_name, check["result"])
        return fields, {**check, "source": "profile"}

    @staticmethod
    def _open_page(path: Path) -> Image.Image:
        try:
            image = Image.open(path)
            image.load()
        except (OSError, Image.DecompressionBombError) as exc:
            raise ImageError(N_("Page image {path} cannot be read: {detail}"), path=path, detail=exc) from exc
        return image

    def kept_pages(self, job: Job) -> list[Page]:
        """Return the job's pages that are in its document: all but the blank pages dropped."""
        return [page for page in self.journal.pages(job.id) if not page.dropped]

    def page_texts(self, job: Job) -> list[PageText]:
        from sohoa.ocr import PageText

        return [
            PageText.from_dict(json.loads(Path(page.ocr_path).read_text(encoding="utf-8")))
            for page in self.kept_pages(job)
        ]

    # build

    def assign_doc_code(self, job: Job) -> Job:
        if job.doc_code:
            return job
        type_code = fieldlib.type_code(fieldlib.fields_from_json(job.fields))
        return self.journal.update_job(job.id, doc_code=self.next_doc_code(type_code))

    def next_doc_code(self, type_code: str) -> str:
        """Return a new DocCode ``AGENCY_TYPE_SEQUENCE_V1``, taking the next number of the agency's counter."""
        agency = self.config.box.agency_code
        sequence = self.journal.next_sequence(f"doc_code:{agency}")
        return f"{agency}_{type_code}_{sequence:06d}_V1"

    def document_filename(self, job: Job, suffix: str = ".pdf") -> str:
        """Return ``DOCCODE_YYYYMMDD_DESCRIPTION.pdf``, the archive's file naming rule."""
        scanned = datetime.fromisoformat(job.created_at).strftime("%Y%m%d")
        type_name = job.fields.get("TypeName", {}).get("value") or "tai lieu"
        return f"{job.doc_code}_{scanned}_{_slug(type_name)}{suffix}"

    def pages_sha256(self, job: Job) -> str:
        """Return one SHA-256 over the scanned page files' SHA-256 values, in page order, for the pages in the document."""
        import hashlib

        digest = hashlib.sha256()
        for page in self.kept_pages(job):
            digest.update(bytes.fromhex(page.sha256))
        return digest.hexdigest()

    def build(self, job: Job) -> Job:
        """Build the unsigned PDF/A: PDF/A-2b, or PDF/A-3b with ``fields.json`` when ``pdf.attach_fields`` is on."""
        from sohoa.pdf import ConversionMark, PageInput, build_pdf

        job = self.assign_doc_code(job)
        texts = self.page_texts(job)
        pages = [
            PageInput(image=Path(page.image_path), text=text, dpi=page.dpi)
            for page, text in zip(self.kept_pages(job), texts, strict=True)
        ]
        mark = ConversionMark(
            converted_at=datetime.fromisoformat(job.created_at).astimezone(),
            operator=self.operator_of(job),
            unit=self.config.box.unit,
            doc_code=job.doc_code,
            pages_sha256=self.pages_sha256(job),
        )
        out = self.job_dir(job.id) / self.document_filename(job, ".unsigned.pdf")
        document = self.document_metadata(job)
        metadata = {name: str(value) for name, value in document.items() if not isinstance(value, dict)}
        # XMP properties here are plain text, so the unsure fields go in as one comma-separated list.
        unsure = [name for name, level in document["FieldConfidence"].items() if level == "unsure"]
        metadata["UnsureFields"] = ",".join(unsure)
        attachments = [self.fields_attachment(document, mark.converted_at)] if self.config.pdf.attach_fields else []
        build_pdf(pages, out, mark=mark, metadata=metadata, title=self._title(job), attachments=attachments)
        return self.journal.set_state(job.id, "built", pdf_path=str(out), **error_columns(None))

    def operator_of(self, job: Job) -> str:
        """Return the person who scanned ``job``: the operator its sheet names, else ``box.operator``."""
        return declared_operator(job) or self.config.box.operator

    @staticmethod
    def fields_attachment(document: dict[str, object], converted_at: datetime) -> Attachment:
        """Return the document's metadata (see :meth:`document_metadata`) as the ``fields.json`` attachment."""
        from sohoa.pdf import Attachment
        from sohoa.pdf.attachments import FIELDS_ATTACHMENT_NAME

        data = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")
        return Attachment(
            name=FIELDS_ATTACHMENT_NAME,
            data=data,
            mime_type="application/json",
            description="Document metadata: the national minimum set for digitized documents",
            relationship="Data",
            created_at=converted_at,
        )

    def _title(self, job: Job) -> str:
        subject = job.fields.get("Subject", {}).get("value")
        type_name = job.fields.get("TypeName", {}).get("value")
        return " - ".join(part for part in (type_name, subject) if part) or job.doc_code

    def document_metadata(self, job: Job) -> dict[str, object]:
        """Return the document's metadata, named as the national standard names them.

        A field the recognizer is not sure of is left empty and marked
        ``unsure`` in ``FieldConfidence``, so that a person completes it. No
        value is guessed.
        """
        # A signed PDF imported as it is has a page count but no page rows, so dropped pages are subtracted.
        dropped = sum(1 for page in self.journal.pages(job.id) if page.dropped)
        metadata: dict[str, object] = {"DocCode": job.doc_code or "", "Language": "vi", "PageAmount": job.page_count - dropped}
        confidence: dict[str, str] = {}
        type_declared = ((job.declared or {}).get("type_check") or {}).get("result") == "declared"
        for name in ("TypeName", "CodeNumber", "CodeNotation", "IssuedDate", "OrganName", "Subject", "Position", "FullName"):
            field = job.fields.get(name) or {}
            if field.get("value") and field.get("sure"):
                metadata[name] = field["value"]
                # A type taken from the staff's sheet or capture profile counts as confirmed by a person.
                confidence[name] = "confirmed" if name == "TypeName" and type_declared else "extracted"
            else:
                metadata[name] = ""
                confidence[name] = "unsure"
        metadata["FieldConfidence"] = confidence
        metadata["Format"] = "Bản chuyển đổi từ bản giấy"
        return metadata

    # sign

    def sign(self, job: Job) -> Job:
        """Sign the built PDF as the operator, then as the unit when the document type needs it.

        The unit signs licences, certificates and diplomas (the type codes in
        ``signing.unit_sign_types``) when ``signing.unit_key_id`` is set. A
        missing token or key raises a SigningError and leaves the job
        ``built`` to be retried. A signed file that does not verify or is no
        longer PDF/A is deleted.
        """
        from sohoa.pdf.conformance import check_pdfa
        from sohoa.signing import verify_pdf

        if not job.pdf_path:
            raise ValueError(f"job {job.id} has no built PDF")
        signed = self.job_dir(job.id) / self.document_filename(job)
        unit_signs = self.needs_unit_signature(job)
        operator_signed = signed.with_name(signed.name.removesuffix(".pdf") + ".operator.pdf") if unit_signs else signed
        outcome = self.signer.sign_pdf(
            Path(job.pdf_path), operator_signed, signer_name=self.config.box.operator, location=self.config.box.unit
        )
        timestamp_pending = outcome.timestamp_pending
        if unit_signs:
            try:
                unit_outcome = self.unit_signer().sign_pdf(
                    operator_signed, signed, signer_name=self.unit_name, location=self.config.box.unit
                )
            finally:
                operator_signed.unlink(missing_ok=True)
            timestamp_pending = timestamp_pending or unit_outcome.timestamp_pending

        result = verify_pdf(signed, self.config.signing.trust_roots)
        expected = 2 if unit_signs else 1
        if not (result.valid and result.intact and (result.trusted or not self.config.signing.trust_roots)) or len(
            result.signatures
        ) != expected:
            signed.unlink(missing_ok=True)
            raise SignatureInvalidError(
                N_("The signature made on {doc_code} did not verify: {summary}"), doc_code=job.doc_code, summary=result.summary
            )
        conformance = check_pdfa(signed)
        if not conformance.passed:
            signed.unlink(missing_ok=True)
            raise PdfError(
                N_("The signed PDF of {doc_code} no longer conforms to PDF/A: {findings}"),
                doc_code=job.doc_code,
                findings="; ".join(conformance.findings[:8]),
            )
        log.info("Job %s: signed and verified, PDF/A-%s (%s)", job.id, conformance.flavour, result.summary)
        pending_url = self.config.signing.tsa_url if timestamp_pending else None
        if pending_url:
            log.warning("Job %s: signed without a timestamp (PAdES B-B); a document timestamp is added before upload", job.id)
        # One journal update records the signed file and the owed timestamp, so a crash cannot separate them.
        job = self.journal.set_state(
            job.id,
            "signed",
            signed_path=str(signed),
            sha256=sha256_file(signed),
            timestamp_pending=pending_url,
            **error_columns(None),
        )
        self.legacy_timestamp_marker(job).unlink(missing_ok=True)
        return job

    def legacy_timestamp_marker(self, job: Job) -> Path:
        """Return the file that marked a pending timestamp before the journal had a column for it."""
        return self.job_dir(job.id) / LEGACY_TIMESTAMP_MARKER

    def add_pending_timestamp(self, job: Job) -> Job:
        """Add the document timestamp a B-B signed job is waiting for, if the authority now responds.

        Returns the job unchanged when nothing is pending. When the authority
        still does not respond, logs a warning and returns the job unchanged,
        so the document is uploaded as PAdES B-B rather than held back. A job
        spooled with the legacy marker file is moved to the journal column first.
        """
        from sohoa.errors import TimestampUnavailableError
        from sohoa.signing import add_document_timestamp, make_timestamper, verify_pdf

        job = adopt_legacy_timestamp_marker(self.journal, job, self.job_dir(job.id))
        if not job.timestamp_pending or not job.signed_path:
            return job
        timestamper = make_timestamper(self.config.signing)
        if timestamper is None:
            log.warning(
                "Job %s: a document timestamp from %s is pending but signing.tsa_url is unset; uploading as PAdES B-B",
                job.id,
                job.timestamp_pending,
            )
            return job
        signed = Path(job.signed_path)
        stamped = signed.with_name(signed.name.removesuffix(".pdf") + ".timestamped.pdf")
        try:
            add_document_timestamp(signed, stamped, timestamper)
        except TimestampUnavailableError as exc:
            log.warning("Job %s: still no timestamp, uploading as PAdES B-B: %s", job.id, exc)
            return job

        result = verify_pdf(stamped, self.config.signing.trust_roots)
        if not (result.valid and result.intact):
            stamped.unlink(missing_ok=True)
            log.error("Job %s: the document timestamp did not verify, keeping the B-B file: %s", job.id, result.summary)
            return job
        # NOTE: a crash between this rename and the journal update leaves a
        # file whose SHA-256 the journal does not know, so start-up recovery
        # signs the job again from its unsigned PDF.
        stamped.replace(signed)
        fsync_dir(signed.parent)
        log.info("Job %s: document timestamp added (%s)", job.id, result.summary)
        return self.journal.update_job(job.id, sha256=sha256_file(signed), timestamp_pending=None)

    def needs_unit_signature(self, job: Job) -> bool:
        """Return whether the converting unit signs this job's document as well as the operator."""
        signing = self.config.signing
        if not signing.unit_signing_enabled:
            return False
        return fieldlib.type_code(fieldlib.fields_from_json(job.fields)) in signing.unit_sign_types

    @property
    def unit_name(self) -> str:
        return self.config.signing.unit_signer_name or self.config.box.unit

    def unit_signer(self) -> TokenSigner:
        """Return the unit's signer, created on first use from ``config.signing``."""
        from sohoa.signing import TokenSigner

        if self._unit_signer is None:
            self._unit_signer = TokenSigner.for_unit(self.config.signing)
        return self._unit_signer

    # upload

    def upload_metadata(self, job: Job) -> dict[str, object]:
        """Return the metadata of the upload contract: the document's fields plus the box's."""
        metadata = self.document_metadata(job)
        metadata.update(
            {
                "site": self.config.box.site,
                "device": self.config.box.device,
                "operator": self.operator_of(job),
                "scanned_at": job.created_at,
                "x_unit": self.config.box.unit,
                "x_job_id": job.id,
                "x_field_scores": {name: value.get("confidence", 0.0) for name, value in job.fields.items()},
            }
        )
        metadata.update(declared_metadata(job))
        if job.origin == "hot_folder":
            self._add_import_metadata(job, metadata)
        if job.duplicate_of:
            original = self.journal.get_job(job.duplicate_of)
            metadata["x_duplicate_of"] = {"DocCode": original.doc_code, "job_id": original.id, "reason": job.duplicate_reason}
        return metadata

    def _add_import_metadata(self, job: Job, metadata: dict[str, object]) -> None:
        """Describe the hot folder file the job came from; a signed PDF archived as it is was not converted here."""
        from sohoa.hotfolder.ledger import KIND_SIGNED_PDF, find_by_job

        record = find_by_job(self.journal, job.id)
        if record is None:
            return
        metadata["x_import"] = record.upload_metadata()
        if record.kind == KIND_SIGNED_PDF:
            metadata["Format"] = SIGNED_IMPORT_FORMAT

    def upload(self, job: Job) -> Receipt:
        """Send the signed PDF once; record the receipt, or the rejection that stops the job.

        A conflict fails the job at once. Any other rejection of the document
        fails it at the ``upload.max_rejections``-th time and otherwise leaves
        it ``signed`` for the next round. A rejected token or address
        (UploadSettingsError) leaves it ``signed`` without counting.
        """
        job = self.add_pending_timestamp(job)
        try:
            receipt = self.archive.upload(job.doc_code, Path(job.signed_path), self.upload_metadata(job))
        except UploadConflictError as exc:
            self.journal.set_state(job.id, "failed", **error_columns(exc))
            raise
        except UploadSettingsError as exc:
            self.journal.update_job(job.id, **error_columns(exc))
            raise
        except UploadRejectedError as exc:
            self._record_rejection(job, exc)
            raise
        self.journal.set_state(job.id, "uploaded", receipt=receipt.raw, **error_columns(None))
        return receipt

    def _record_rejection(self, job: Job, error: UploadRejectedError) -> Job:
        rejections = job.upload_rejections + 1
        limit = self.config.upload.max_rejections
        if rejections >= limit:
            log.error("Job %s: the archive rejected %s %d times, so the job failed: %s", job.id, job.doc_code, rejections, error)
            return self.journal.set_state(
                job.id, "failed", upload_rejections=rejections, **error_columns(error)
            )
        log.warning(
            "Job %s: the archive rejected %s (%d of %d rejections before the job fails); sending it again next round: %s",
            job.id, job.doc_code, rejections, limit, error,
        )  # fmt: skip
        return self.journal.update_job(job.id, upload_rejections=rejections, **error_columns(error))
