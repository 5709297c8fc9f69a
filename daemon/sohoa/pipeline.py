"""The steps that turn one scanned batch into an archived document.

Each step takes a job from the journal, writes its output into the job's own
spool folder durably, then records the new state. A step can be run again
after a crash: it redoes only what the journal does not show as done.

    acquire -> recognize -> build -> sign -> upload
"""

from __future__ import annotations

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
    ConfigError,
    FeederEmptyError,
    ImageError,
    PdfError,
    ScanCancelledError,
    SignatureInvalidError,
    UploadConflictError,
)
from sohoa.fsutil import fsync_dir, sha256_file, write_atomic
from sohoa.i18n import N_
from sohoa.journal import Job, Journal
from sohoa.search import index_document

if TYPE_CHECKING:
    from sohoa.ocr import OcrEngine, PageText
    from sohoa.scanner import ScannedPage, Scanner
    from sohoa.signing import TokenSigner
    from sohoa.upload import ArchiveClient, Receipt

log = logging.getLogger(__name__)


# What can start a scan; stored with the job.
ORIGINS = ("button", "scanner_button", "feeder", "mqtt", "signal", "hot_folder")


@dataclass(frozen=True)
class CaptureRequest:
    """One request to scan: the capture profile (a ``[profiles.NAME]`` key, or None) and what asked."""

    profile: str | None = None
    origin: str = "button"


@dataclass(frozen=True)
class ScanResult:
    """Result of one button press: the job, and the scanner error that stopped it, if any."""

    job: Job | None
    pages_scanned: int
    error: Exception | None


def _slug(text: str) -> str:
    """Return an ASCII, lower-case, dash-separated form of ``text`` for file names."""
    decomposed = unicodedata.normalize("NFD", text.replace("Đ", "D").replace("đ", "d"))
    ascii_text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    words = "".join(ch.lower() if ch.isalnum() else " " for ch in ascii_text).split()
    return "-".join(words[:6]) or "tai-lieu"


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
            self.journal.set_state(job.id, "scanning", error_code=None, error_message=None)
            log.info("Job %s: continuing the %s scan after page %d", job.id, job.state, job.page_count)

        offset = job.page_count
        batch_dir = self.job_dir(job.id) / f"batch-{self._next_batch_number(job.id):02d}"

        def record(page: ScannedPage) -> None:
            self.journal.add_page(
                job.id, offset + page.index, page.path, sha256_file(page.path), page.width, page.height, page.dpi
            )
            log.info("Job %s: page %d captured (%s)", job.id, offset + page.index, page.path.name)

        try:
            outcome = self.scanner.scan_batch(batch_dir, on_page=record, profile=profile, cancel=cancel)
        except FeederEmptyError as exc:
            if open_job is not None:
                return ScanResult(self.journal.set_state(job.id, "collecting"), 0, exc)
            if resuming:
                job = self.journal.set_state(job.id, "captured")
                return ScanResult(job, 0, None)
            self._discard_empty_job(job.id)
            return ScanResult(None, 0, exc)
        except Exception as exc:
            job = self.journal.get_job(job.id)
            self._interrupt(job, exc, collecting=collecting)
            raise

        job = self.journal.get_job(job.id)
        if isinstance(outcome.error, ScanCancelledError):
            return ScanResult(self.cancel_job(job, outcome.error), len(outcome.pages), outcome.error)
        if outcome.error is not None:
            job = self._interrupt(job, outcome.error, collecting=collecting)
            return ScanResult(job, len(outcome.pages), outcome.error)
        job = self.journal.set_state(job.id, "collecting" if collecting else "captured")
        if collecting:
            log.info("Job %s: flatbed document open with %d pages", job.id, job.page_count)
        return ScanResult(job, len(outcome.pages), None)

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
        job = self.journal.set_state(job.id, "captured", error_code=None, error_message=None)
        log.info("Job %s: flatbed document finished with %d pages", job.id, job.page_count)
        return job

    def cancel_job(self, job: Job, error: Exception | None = None) -> Job | None:
        """End ``job`` as ``cancelled``, keeping its page files; discard it instead when it has no page.

        Returns the cancelled job, or None when it was discarded.
        """
        if job.page_count == 0 and job.state in ("scanning", "collecting"):
            self._discard_empty_job(job.id)
            return None
        code = getattr(error, "code", "scan_cancelled")
        message = str(error) if error is not None else "Cancelled with a long press."
        job = self.journal.set_state(job.id, "cancelled", error_code=code, error_message=message)
        log.warning("Job %s cancelled with %d pages; its page files stay in %s", job.id, job.page_count, self.job_dir(job.id))
        return job

    def _next_batch_number(self, job_id: str) -> int:
        folder = self.job_dir(job_id)
        return len(list(folder.glob("batch-*"))) + 1 if folder.exists() else 1

    def _interrupt(self, job: Job, error: Exception, *, collecting: bool = False) -> Job:
        """Keep the pages of a failed batch: a flatbed job stays open, any other job becomes ``interrupted``."""
        code = getattr(error, "code", "scanner_failed")
        if job.page_count == 0:
            self._discard_empty_job(job.id)
            return job
        state = "collecting" if collecting else "interrupted"
        return self.journal.set_state(job.id, state, error_code=code, error_message=str(error))

    def _discard_empty_job(self, job_id: str) -> None:
        with self.journal.transaction() as db:
            db.execute("delete from jobs where id = ? and page_count = 0", [job_id])
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        log.info("Job %s discarded: no page was scanned", job_id)

    # recognize

    def recognize(self, job: Job) -> Job:
        from sohoa.ocr import PageText

        texts: list[PageText] = []
        ocr_dir = self.job_dir(job.id) / "ocr"
        for page in self.journal.pages(job.id):
            if page.state == "recognized" and page.ocr_path and Path(page.ocr_path).exists():
                texts.append(PageText.from_dict(json.loads(Path(page.ocr_path).read_text(encoding="utf-8"))))
                continue
            image = self._open_page(Path(page.path))
            page_text = self.ocr.recognize(image)
            ocr_path = ocr_dir / f"page-{page.seq:04d}.json"
            write_atomic(ocr_path, json.dumps(page_text.to_dict(), ensure_ascii=False).encode("utf-8"))
            self.journal.set_page_recognized(job.id, page.seq, ocr_path)
            texts.append(page_text)
            log.info("Job %s: page %d recognized, %d lines", job.id, page.seq, len(page_text.lines))

        full_text = "\n".join(text.text for text in texts)
        confidences = [line.confidence for text in texts for line in text.lines]
        fields = fieldlib.fields_to_json(fieldlib.extract_fields(full_text, confidences))
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

    @staticmethod
    def _open_page(path: Path) -> Image.Image:
        try:
            image = Image.open(path)
            image.load()
        except (OSError, Image.DecompressionBombError) as exc:
            raise ImageError(N_("Page image {path} cannot be read: {detail}"), path=path, detail=exc) from exc
        return image

    def page_texts(self, job: Job) -> list[PageText]:
        from sohoa.ocr import PageText

        return [
            PageText.from_dict(json.loads(Path(page.ocr_path).read_text(encoding="utf-8")))
            for page in self.journal.pages(job.id)
        ]

    # build

    def assign_doc_code(self, job: Job) -> Job:
        if job.doc_code:
            return job
        agency = self.config.box.agency_code
        type_code = fieldlib.type_code(fieldlib.fields_from_json(job.fields))
        sequence = self.journal.next_sequence(f"doc_code:{agency}")
        doc_code = f"{agency}_{type_code}_{sequence:06d}_V1"
        return self.journal.update_job(job.id, doc_code=doc_code)

    def document_filename(self, job: Job, suffix: str = ".pdf") -> str:
        """Return ``DOCCODE_YYYYMMDD_DESCRIPTION.pdf``, the archive's file naming rule."""
        scanned = datetime.fromisoformat(job.created_at).strftime("%Y%m%d")
        type_name = job.fields.get("TypeName", {}).get("value") or "tai lieu"
        return f"{job.doc_code}_{scanned}_{_slug(type_name)}{suffix}"

    def pages_sha256(self, job: Job) -> str:
        """Return one SHA-256 over the page images' SHA-256 values, in page order."""
        import hashlib

        digest = hashlib.sha256()
        for page in self.journal.pages(job.id):
            digest.update(bytes.fromhex(page.sha256))
        return digest.hexdigest()

    def build(self, job: Job) -> Job:
        from sohoa.pdf import ConversionMark, PageInput, build_pdf

        job = self.assign_doc_code(job)
        texts = self.page_texts(job)
        pages = [
            PageInput(image=Path(page.path), text=text, dpi=page.dpi)
            for page, text in zip(self.journal.pages(job.id), texts, strict=True)
        ]
        mark = ConversionMark(
            converted_at=datetime.fromisoformat(job.created_at).astimezone(),
            operator=self.config.box.operator,
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
        build_pdf(pages, out, mark=mark, metadata=metadata, title=self._title(job))
        return self.journal.set_state(job.id, "built", pdf_path=str(out), error_code=None, error_message=None)

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
        metadata: dict[str, object] = {"DocCode": job.doc_code or "", "Language": "vi", "PageAmount": job.page_count}
        confidence: dict[str, str] = {}
        for name in ("TypeName", "CodeNumber", "CodeNotation", "IssuedDate", "OrganName", "Subject", "Position", "FullName"):
            field = job.fields.get(name) or {}
            if field.get("value") and field.get("sure"):
                metadata[name] = field["value"]
                confidence[name] = "extracted"
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
        self._mark_timestamp_pending(job, timestamp_pending)
        return self.journal.set_state(
            job.id, "signed", signed_path=str(signed), sha256=sha256_file(signed), error_code=None, error_message=None
        )

    def timestamp_marker(self, job: Job) -> Path:
        """Return the file whose presence means the signed PDF still needs a document timestamp.

        NOTE: the journal has no column for this yet, so the mark is a file in
        the job's spool folder, written atomically like every other job file.
        """
        return self.job_dir(job.id) / "timestamp-pending"

    def _mark_timestamp_pending(self, job: Job, pending: bool) -> None:
        marker = self.timestamp_marker(job)
        if pending:
            write_atomic(marker, f"{self.config.signing.tsa_url}\n".encode())
            log.warning("Job %s: signed without a timestamp (PAdES B-B); a document timestamp is added before upload", job.id)
        else:
            marker.unlink(missing_ok=True)

    def add_pending_timestamp(self, job: Job) -> Job:
        """Add the document timestamp a B-B signed job is waiting for, if the authority now responds.

        Returns the job unchanged when nothing is pending. When the authority
        still does not respond, logs a warning and returns the job unchanged,
        so the document is uploaded as PAdES B-B rather than held back.
        """
        from sohoa.errors import TimestampUnavailableError
        from sohoa.signing import add_document_timestamp, make_timestamper, verify_pdf

        marker = self.timestamp_marker(job)
        timestamper = make_timestamper(self.config.signing)
        if not marker.exists() or timestamper is None or not job.signed_path:
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
        stamped.replace(signed)
        fsync_dir(signed.parent)
        marker.unlink(missing_ok=True)
        log.info("Job %s: document timestamp added (%s)", job.id, result.summary)
        return self.journal.update_job(job.id, sha256=sha256_file(signed))

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
                "operator": self.config.box.operator,
                "scanned_at": job.created_at,
                "x_unit": self.config.box.unit,
                "x_job_id": job.id,
                "x_field_scores": {name: value.get("confidence", 0.0) for name, value in job.fields.items()},
            }
        )
        if job.duplicate_of:
            original = self.journal.get_job(job.duplicate_of)
            metadata["x_duplicate_of"] = {"DocCode": original.doc_code, "job_id": original.id, "reason": job.duplicate_reason}
        return metadata

    def upload(self, job: Job) -> Receipt:
        job = self.add_pending_timestamp(job)
        try:
            receipt = self.archive.upload(job.doc_code, Path(job.signed_path), self.upload_metadata(job))
        except UploadConflictError as exc:
            self.journal.set_state(job.id, "failed", error_code=exc.code, error_message=str(exc))
            raise
        self.journal.set_state(job.id, "uploaded", receipt=receipt.raw, error_code=None, error_message=None)
        return receipt
