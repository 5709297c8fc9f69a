"""Import one complete file from the hot folder as a job, exactly once.

Steps, on the daemon's worker thread, one file at a time:

1. hash the file and look its SHA-256 up in the ``imports`` table: content
   imported before is a duplicate, unless all its jobs failed, and so
   is a signed PDF that this box produced (its SHA-256 is a job's);
2. copy the file into the job's spool folder durably, hashing it again, so
   a file that changed meanwhile is left for the watcher to report again;
3. recognize the type by content and produce the job's input: page images
   for a TIFF, JPEG, PNG or unsigned PDF; for a signed PDF, the copy itself.
   A file whose pages are all blank is rejected;
4. in one journal transaction, create the job (``captured``, or ``signed``
   for a signed PDF), its pages and the ``imports`` row. With
   ``capture.separator_sheets``, the pages go through the scanner's
   :class:`sohoa.splitting.BatchSplitter` inside that transaction, so each
   separator or cover sheet starts another job, and the import commits all
   of its jobs or none;
5. move the source file to ``done/``. A file that cannot be imported is moved
   to ``rejected/`` with a ``.reason.txt`` file beside it.

The source file is never deleted. It leaves the inbox only after the job
that holds its content is committed. A crash between steps 4 and 5 is
completed at the next start, when the file is found again and its row says
that it was imported but not yet moved.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from sohoa import fields as fieldlib
from sohoa.config import Config
from sohoa.errors import (
    BlankFileError,
    CorruptFileError,
    DiskFullError,
    DuplicateImportError,
    EmptyFileError,
    ImportRejectedError,
    ImportSignatureInvalidError,
    JournalError,
    PdfError,
    SohoaError,
)
from sohoa.fsutil import atomic_writer, fsync_dir, sha256_file, write_atomic
from sohoa.hotfolder import formats, ledger
from sohoa.hotfolder.names import DONE_DIR, REJECTED_DIR
from sohoa.hotfolder.watcher import CompleteFile
from sohoa.i18n import N_, gettext as _
from sohoa.journal import Job, Journal, new_job_id, utc_now
from sohoa.pipeline import Pipeline
from sohoa.scanner import PAGE_NAME_TEMPLATE
from sohoa.search import index_document
from sohoa.splitting import FIRST_BATCH_NAME, BatchSplitter, PageFile, close_document

log = logging.getLogger(__name__)

ORIGIN = "hot_folder"
REASON_SUFFIX = ".reason.txt"
COPY_CHUNK_BYTES = 1 << 20

IMPORTED, FINISHED, REJECTED, SKIPPED = "imported", "finished", "rejected", "skipped"


@dataclass(frozen=True)
class ImportOutcome:
    """What became of one file.

    ``status`` is ``imported`` (new jobs), ``finished`` (an earlier import whose
    move out of the inbox was cut short is completed), ``rejected`` (moved to
    ``rejected/``, ``error`` gives the reason) or ``skipped`` (the file vanished or
    changed while it was read; the watcher reports it again). ``job`` is the
    import's first job and ``jobs`` lists all of them: a file split at
    separator or cover sheets has several.
    """

    status: str
    path: Path
    job: Job | None = None
    record: ledger.ImportRecord | None = None
    error: SohoaError | None = None
    moved_to: Path | None = None
    jobs: tuple[Job, ...] = ()


class _SourceChanged(Exception):
    """The file's content changed between two readings."""


@dataclass(frozen=True)
class _Prepared:
    """The job's input, durable in its spool folder: page images, or a signed PDF and what was read from it."""

    pages: list[formats.PageImage]
    signed_pdf: Path | None = None
    page_count: int = 0
    fields: dict = dataclasses.field(default_factory=dict)
    text: str = ""
    verification: object | None = None
    # The capture profile's document type, used when the PDF's fields do not name one.
    type_code: str | None = None


class HotFolderImporter:
    def __init__(self, config: Config, journal: Journal, pipeline: Pipeline) -> None:
        if config.capture.hot_folder is None:
            raise ValueError("HotFolderImporter needs capture.hot_folder")
        self.config = config
        self.root = Path(config.capture.hot_folder)
        self.journal = journal
        self.pipeline = pipeline

    def import_file(self, complete: CompleteFile) -> ImportOutcome:
        """Import ``complete.path``; raise DiskFullError (the file stays in the inbox) when the spool's disk is full."""
        source = complete.path
        try:
            size = source.stat().st_size
            if size == 0:
                return self.reject(source, EmptyFileError(N_("{name} is empty (0 bytes)."), name=source.name))
            sha256 = sha256_file(source)
        except FileNotFoundError:
            log.info("Hot folder: %s is gone before its import", source)
            return ImportOutcome(SKIPPED, source)
        except OSError as exc:
            return self.reject(source, CorruptFileError(N_("{name} cannot be read: {detail}"), name=source.name, detail=exc.strerror))

        earlier = self._earlier_import(sha256)
        if earlier is not None and earlier.archived_to is None and earlier.file_name == source.name:
            log.warning("Hot folder: %s was imported as job %s but not moved out of the inbox; moving it now", source, earlier.job_id)
            moved = self._move_out(source, DONE_DIR)
            ledger.mark_archived(self.journal, sha256, str(moved))
            jobs = self._jobs_of(earlier)
            return ImportOutcome(FINISHED, source, jobs[0] if jobs else None, earlier, moved_to=moved, jobs=tuple(jobs))
        if earlier is not None:
            return self.reject(
                source,
                DuplicateImportError(
                    N_("{name} has the same content as {earlier}, already imported as job {job_id}; it is not archived twice."),
                    name=source.name,
                    earlier=earlier.file_name,
                    job_id=earlier.job_id,
                ),
            )
        signed_here = self._job_signed_as(sha256)
        if signed_here is not None:
            return self.reject(
                source,
                DuplicateImportError(
                    N_("{name} is the signed PDF that this box made for document {doc_code} (job {job_id}); it is already archived and is not archived twice."),
                    name=source.name,
                    doc_code=signed_here.doc_code,
                    job_id=signed_here.id,
                ),
            )
        return self._import_new(complete, size, sha256)

    def _earlier_import(self, sha256: str) -> ledger.ImportRecord | None:
        """Return the import of the same content that still counts; one whose jobs all failed or vanished does not."""
        earlier = ledger.find_by_sha256(self.journal, sha256)
        if earlier is None:
            return None
        if all(job.state == "failed" for job in self._jobs_of(earlier)):
            return None
        return earlier

    def _jobs_of(self, record: ledger.ImportRecord) -> list[Job]:
        """Return the jobs that ``record``'s import produced and that are still in the journal."""
        jobs = []
        for job_id in ledger.job_ids(self.journal, record):
            try:
                jobs.append(self.journal.get_job(job_id))
            except JournalError:
                continue
        return jobs

    def _job_signed_as(self, sha256: str) -> Job | None:
        """Return the job whose signed PDF has the SHA-256 ``sha256``, or None."""
        with self.journal.transaction() as db:
            rows = list(db.query("select id from jobs where sha256 = ? order by created_at limit 1", [sha256]))
        return self.journal.get_job(rows[0]["id"]) if rows else None

    def _import_new(self, complete: CompleteFile, size: int, sha256: str) -> ImportOutcome:
        source = complete.path
        job_id = new_job_id()
        job_dir = self.pipeline.job_dir(job_id)
        mtime = datetime.fromtimestamp(source.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
        try:
            copy = self._copy_source(source, job_dir / "source" / source.name, sha256)
            prepared = self._prepare(copy, job_dir, complete.profile)
            record = self._import_record(job_id, prepared, sha256, source.name, size, mtime)
            if prepared.signed_pdf is None and self.config.capture.separator_sheets:
                jobs = self._commit_split(job_id, complete.profile, prepared, record)
            else:
                jobs = [self._commit(job_id, complete.profile, prepared, record)]
        except _SourceChanged:
            shutil.rmtree(job_dir, ignore_errors=True)
            log.warning("Hot folder: %s changed while it was read; it is imported once it stops changing", source)
            return ImportOutcome(SKIPPED, source)
        except ImportRejectedError as exc:
            shutil.rmtree(job_dir, ignore_errors=True)
            return self.reject(source, exc)
        except OSError as exc:
            shutil.rmtree(job_dir, ignore_errors=True)
            if exc.errno == errno.ENOSPC:
                raise DiskFullError(
                    N_("The disk filled up while importing {name} ({detail}); the file stays in the hot folder and is imported once space is freed."),
                    name=source.name,
                    detail=exc.strerror,
                ) from exc
            raise
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise

        record = ledger.find_by_job(self.journal, job_id)
        moved = self._move_out(source, DONE_DIR)
        ledger.mark_archived(self.journal, sha256, str(moved))
        log.info(
            "Hot folder: %s imported as job %s (%s), moved to %s",
            source,
            ", ".join(job.id for job in jobs),
            record.kind,
            moved,
        )
        return ImportOutcome(IMPORTED, source, jobs[0], record, moved_to=moved, jobs=tuple(jobs))

    # copy and convert

    def _copy_source(self, source: Path, target: Path, sha256: str) -> Path:
        """Copy ``source`` to ``target`` durably; raise _SourceChanged unless the copy has the SHA-256 read before."""
        digest = hashlib.sha256()
        with open(source, "rb") as reader, atomic_writer(target) as writer:
            for chunk in iter(lambda: reader.read(COPY_CHUNK_BYTES), b""):
                digest.update(chunk)
                writer.write(chunk)
            if digest.hexdigest() != sha256:
                raise _SourceChanged(source)
        return target

    def _prepare(self, copy: Path, job_dir: Path, profile_name: str | None) -> _Prepared:
        profile = self.pipeline.profile(profile_name)
        dpi = (profile.resolution if profile else None) or self.config.scanner.resolution
        mode = (profile.mode if profile else None) or self.config.scanner.mode
        max_pages = self.config.scanner.max_pages
        kind = formats.sniff_type(copy)

        def page_path(number: int) -> Path:
            return job_dir / "batch-01" / PAGE_NAME_TEMPLATE.format(index=number)

        if kind != formats.PDF:
            pages = []
            for number, image in enumerate(formats.image_pages(copy, kind, max_pages), start=1):
                pages.append(formats.write_png(image, page_path(number), formats.image_dpi(image, dpi)))
            log.info("Hot folder: %s is a %s with %d pages", copy.name, kind.upper(), len(pages))
            reject_blank_file(copy.name, pages)
            return _Prepared(pages)

        info = formats.inspect_pdf(copy, max_pages)
        if info.signed:
            return self._prepare_signed(copy, info.page_count, profile.type_code if profile else None)
        log.info("Hot folder: %s is an unsigned PDF with %d pages; rendering them at %d dpi", copy.name, info.page_count, dpi)
        pages = list(formats.rasterize_pdf(copy, info.page_count, dpi, mode, page_path))
        reject_blank_file(copy.name, pages)
        return _Prepared(pages)

    def _prepare_signed(self, copy: Path, page_count: int, profile_type_code: str | None) -> _Prepared:
        """Verify a signed PDF and read its fields; the file itself is never changed."""
        from sohoa.signing import verify_pdf

        try:
            result = verify_pdf(copy, self.config.signing.trust_roots)
        except PdfError as exc:
            raise CorruptFileError(N_("{name} cannot be read as a PDF: {detail}"), name=copy.name, detail=exc) from exc
        if not all(status.valid and status.intact for status in result.signatures):
            # The summary names the copy's spool path, so it goes to the log only.
            log.warning("Hot folder: signature check of %s failed: %s", copy.name, result.summary)
            raise ImportSignatureInvalidError(
                N_("The signature in {name} is invalid or the document was changed after signing; it is not archived. Ask the sender for the original signed file."),
                name=copy.name,
            )
        if not _trusted(result):
            log.warning(
                "Hot folder: %s is signed by %s, who is not trusted by the configured trust roots (signing.trust_roots); "
                "it is archived as it is, marked not trusted",
                copy.name,
                result.signer or "an unnamed signer",
            )
        text = formats.pdf_text(copy)
        fields = signed_pdf_fields(formats.pdf_document_fields(copy), text)
        log.info(
            "Hot folder: %s is a signed PDF with %d pages by %s, archived as it is (valid=%s, intact=%s, trusted=%s)",
            copy.name,
            page_count,
            result.signer or "an unnamed signer",
            result.valid,
            result.intact,
            _trusted(result),
        )
        return _Prepared(
            [], signed_pdf=copy, page_count=page_count, fields=fields, text=text, verification=result, type_code=profile_type_code
        )

    # the journal

    @staticmethod
    def _import_record(job_id: str, prepared: _Prepared, sha256: str, name: str, size: int, mtime: str) -> ledger.ImportRecord:
        signed = prepared.signed_pdf is not None
        result = prepared.verification
        return ledger.ImportRecord(
            sha256=sha256,
            file_name=name,
            size=size,
            mtime=mtime,
            job_id=job_id,
            kind=ledger.KIND_SIGNED_PDF if signed else ledger.KIND_PAGES,
            imported_at=utc_now(),
            signature_valid=result.valid if signed else None,
            signature_trusted=_trusted(result) if signed else None,
            signature_summary=result.summary if signed else None,
            signature_intact=result.intact if signed else None,
            signature_signer=(result.signer or None) if signed else None,
        )

    def _commit(self, job_id: str, profile: str | None, prepared: _Prepared, record: ledger.ImportRecord) -> Job:
        """Create the job, its pages and the import row in one transaction, then write the job's manifest."""
        now = utc_now()
        signed = prepared.signed_pdf is not None
        with self.journal.transaction() as db:
            db["jobs"].insert(
                {
                    "id": job_id,
                    "created_at": now,
                    "updated_at": now,
                    "state": "captured",
                    "page_count": len(prepared.pages),
                    "fields": json.dumps(prepared.fields, ensure_ascii=False),
                    "profile": profile,
                    "origin": ORIGIN,
                }
            )
            for seq, page in enumerate(prepared.pages, start=1):
                db["pages"].insert(
                    {
                        "job_id": job_id,
                        "seq": seq,
                        "path": str(page.path),
                        "sha256": sha256_file(page.path),
                        "width": page.width,
                        "height": page.height,
                        "dpi": page.dpi,
                        "state": "captured",
                        "created_at": now,
                    }
                )
            if signed:
                self._commit_signed(db, job_id, prepared)
            ledger.insert(db, record)
        self.journal.write_manifest(job_id)
        return self.journal.get_job(job_id)

    def _commit_split(self, job_id: str, profile: str | None, prepared: _Prepared, record: ledger.ImportRecord) -> list[Job]:
        """Split the pages at separator and cover sheets into captured jobs, committing them and the import row together.

        The pages are those of ``job_id``'s first batch folder. Each sheet
        ends the current job and starts another with the sheet's settings,
        as on the box's scanner. A sheet after the last page starts no job.
        When anything fails, the transaction is rolled back and the spool
        folders of the jobs it created are removed, so the file is imported
        again from the start.
        """
        now = utc_now()
        splitter = None
        try:
            with self.journal.transaction() as db:
                # NOTE: sheet detection runs inside the transaction and keeps the journal's lock, so other threads
                # wait for the journal while a file with many pages is split. The splitter also writes job manifests
                # before the commit. After a crash, start-up recovery moves their folders to orphans/. A journal
                # rebuilt from manifests before that recovery would restore those uncommitted jobs.
                db["jobs"].insert(
                    {"id": job_id, "created_at": now, "updated_at": now, "state": "scanning", "page_count": 0, "profile": profile, "origin": ORIGIN}
                )
                splitter = BatchSplitter(
                    self.journal,
                    self.config.spool_dir,
                    self.journal.get_job(job_id),
                    self.pipeline.job_dir(job_id) / FIRST_BATCH_NAME,
                    origin=ORIGIN,
                    profiles=self.config.profiles,
                    detect_sheets=True,
                )
                for page in prepared.pages:
                    splitter.record(PageFile(page.path, page.width, page.height, page.dpi))
                jobs, trailing = self._close_split(splitter, record.file_name)
                if trailing is not None:
                    db.execute("delete from jobs where id = ?", [trailing.id])
                ledger.insert(db, record, [job.id for job in jobs])
        except BaseException:
            if splitter is not None:
                for created in [*splitter.closed, splitter.current]:
                    if created.id != job_id:
                        self._remove_job_files(created.id)
            self._remove_manifest(job_id)
            raise

        if trailing is not None:
            self._remove_job_files(trailing.id)
            log.info("Hot folder: %s ends with a sheet that no page follows; it starts no document", record.file_name)
        if len(jobs) > 1:
            log.info("Hot folder: %s split at separator or cover sheets into %d jobs", record.file_name, len(jobs))
        for job in jobs:
            self.journal.write_manifest(job.id)
        return [self.journal.get_job(job.id) for job in jobs]

    def _close_split(self, splitter: BatchSplitter, name: str) -> tuple[list[Job], Job | None]:
        """Close the last job of a split file; return the import's jobs and the empty job a final sheet opened, if any."""
        jobs = list(splitter.closed)
        last = self.journal.get_job(splitter.current.id)
        if last.page_count > 0:
            return [*jobs, close_document(self.journal, last)], None
        if not jobs:
            raise BlankFileError(
                N_("{name} contains only separator or cover sheets and no document page; there is nothing to archive. Add the document's pages after the sheet and save the file again."),
                name=name,
            )
        return jobs, last

    def _remove_job_files(self, job_id: str) -> None:
        shutil.rmtree(self.pipeline.job_dir(job_id), ignore_errors=True)
        self._remove_manifest(job_id)

    def _remove_manifest(self, job_id: str) -> None:
        if self.journal.manifests_dir is not None:
            shutil.rmtree(self.journal.manifests_dir / job_id, ignore_errors=True)

    def _commit_signed(self, db, job_id: str, prepared: _Prepared) -> None:
        """Give the signed PDF its DocCode and archive file name, index its text, and mark the job signed."""
        type_code = fieldlib.type_code(fieldlib.fields_from_json(prepared.fields))
        if type_code == fieldlib.UNKNOWN_TYPE_CODE and prepared.type_code:
            type_code = prepared.type_code
        doc_code = self.pipeline.next_doc_code(type_code)
        job = dataclasses.replace(self.journal.get_job(job_id), doc_code=doc_code)
        signed_path = prepared.signed_pdf.parent.parent / self.pipeline.document_filename(job)
        os.replace(prepared.signed_pdf, signed_path)
        fsync_dir(signed_path.parent)
        fsync_dir(prepared.signed_pdf.parent)
        index_document(db, job_id, prepared.fields, prepared.text)
        db["jobs"].update(
            job_id,
            {"state": "signed", "doc_code": doc_code, "signed_path": str(signed_path), "sha256": sha256_file(signed_path), "page_count": prepared.page_count},
        )

    # moving files out of the inbox

    def reject(self, source: Path, error: SohoaError) -> ImportOutcome:
        """Move ``source`` to ``rejected/`` and write the reason beside it; log when even that fails."""
        log.warning("Hot folder: %s rejected (%s): %s", source, error.code, error)
        try:
            moved = self._move_out(source, REJECTED_DIR)
            reason = moved.with_name(moved.name + REASON_SUFFIX)
            write_atomic(reason, self._reason_text(source, error).encode("utf-8"))
            # The daemon's umask would make the reason readable by sohoa alone; staff read it through the share.
            reason.chmod(moved.stat().st_mode & 0o666)
        except OSError as exc:
            log.error("Hot folder: cannot move the rejected file %s to %s/: %s; it stays in the inbox", source, REJECTED_DIR, exc)
            return ImportOutcome(REJECTED, source, error=error)
        return ImportOutcome(REJECTED, source, error=error, moved_to=moved)

    def _reason_text(self, source: Path, error: SohoaError) -> str:
        text = _("File: {name}\nRejected at: {time}\nReason: {reason}\nError code: {code}\n").format(
            name=source.name,
            time=datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
            reason=error.user_message(),
            code=error.code,
        )
        if str(error) != error.user_message():
            # The English text, for IT staff and support who search logs in English.
            text += f"Detail: {error}\n"
        return text

    def _move_out(self, source: Path, folder_name: str) -> Path:
        """Move ``source`` to the same relative place under ``folder_name``, renaming it if that name is taken."""
        relative = source.relative_to(self.root)
        folder = self.root / folder_name / relative.parent
        make_shared_folder(self.root, folder)
        target = folder / source.name
        counter = 1
        while target.exists() or target.with_name(target.name + REASON_SUFFIX).exists():
            counter += 1
            target = folder / f"{source.stem}-{counter}{source.suffix}"
        os.rename(source, target)
        fsync_dir(folder)
        fsync_dir(source.parent)
        return target


def reject_blank_file(name: str, pages: list[formats.PageImage]) -> None:
    """Raise BlankFileError when every page in ``pages`` is blank by :func:`sohoa.cleanup.is_blank`.

    A network scanner saves an empty page as a file of its own when its glass
    or feeder was empty. Such a file is rejected at import, so it does not
    fail later as a job with no page to build.
    """
    from sohoa.cleanup import is_blank

    for page in pages:
        with Image.open(page.path) as image:
            pixels = np.asarray(image.convert("L"))
        if not is_blank(pixels, page.dpi).blank:
            return
    raise BlankFileError(
        N_("Every page of {name} is blank ({count} pages), so it contains no document to archive. Check that the scanner saved the right file, then save it again."),
        name=name,
        count=len(pages),
    )


def _trusted(result) -> bool:
    return all(status.trusted and status.timestamp_valid is not False for status in result.signatures)


def signed_pdf_fields(xmp_fields: dict[str, str], text: str) -> dict[str, dict]:
    """Return the job fields of a signed PDF: sohoa's XMP fields where present, else those found in its text layer.

    An XMP field counts as sure unless the PDF's ``UnsureFields`` lists it. A
    field from the text layer keeps the confidence of the text extraction,
    which marks what it cannot find as unsure.
    """
    fields = fieldlib.fields_to_json(fieldlib.extract_fields(text)) if text.strip() else {}
    unsure = {name.strip() for name in xmp_fields.get("UnsureFields", "").split(",") if name.strip()}
    for name in ("TypeName", "CodeNumber", "CodeNotation", "IssuedDate", "OrganName", "Subject", "Position", "FullName"):
        value = (xmp_fields.get(name) or "").strip()
        if value and name not in unsure:
            fields[name] = {"value": value, "confidence": 1.0, "sure": True}
    return fields


def prepare_hot_folder(root: Path) -> None:
    """Check that ``root`` is a folder the daemon can write, and create ``done/`` and ``rejected/`` in it.

    Raises HotFolderError with what to fix.
    """
    from sohoa.errors import HotFolderError

    root = Path(root)
    if not root.is_dir():
        raise HotFolderError(
            N_("The hot folder {path} does not exist or is not a folder; create it (and share it with the scanners) or change capture.hot_folder."),
            path=root,
        )
    try:
        for name in (DONE_DIR, REJECTED_DIR):
            make_shared_folder(root, root / name)
        probe = root / f".sohoa-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise HotFolderError(
            N_("The daemon cannot write in the hot folder {path} ({detail}); give the sohoa user write access to it and to its done/ and rejected/ subfolders."),
            path=root,
            detail=exc.strerror or exc,
        ) from exc


def make_shared_folder(root: Path, folder: Path) -> None:
    """Create ``folder`` under ``root`` with the permissions of ``root``, so that share users can open it."""
    missing = []
    for parent in [folder, *folder.parents]:
        if parent == root or parent.exists():
            break
        missing.append(parent)
    folder.mkdir(parents=True, exist_ok=True)
    mode = root.stat().st_mode & 0o7777
    for created in missing:
        created.chmod(mode)
