"""Splitting one scanned batch into documents at separator and cover sheets.

The scanner writes every page of a batch into the batch folder of the job
the press started (``spool/<job>/batch-NN``). :class:`BatchSplitter` is the
scanner's per-page callback. It looks at each page before it is journalled:

* a page that is a sohoa sheet (:func:`sohoa.separator.detect_sheet`) ends the
  current document and starts a new job with the sheet's settings. The sheet
  image is moved to the new job's ``sheets/`` folder and listed in the job's
  ``declared`` column, not as a page;
* the page right after a sheet is the sheet's back when a duplex scanner read
  it. It is set aside in ``sheets/`` too, but only when it is blank by
  :func:`sohoa.separator.is_blank_page`; any other page is kept;
* any other page is moved into the current job's own batch folder (rename,
  then fsync of both folders) and journalled there, so the retention purge
  of one job never removes another job's pages.

Crash safety: the old job's state change and the new job's row commit in one
transaction, and a page is moved before its row is committed. After a crash,
:func:`sohoa.recovery.end_cut_scan` feeds the page files that no row records
to a splitter again, which finishes whatever step was cut short.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from sohoa import fields as fieldlib
from sohoa.errors import PageCountMismatchError
from sohoa.fsutil import fsync_dir, sha256_file
from sohoa.i18n import N_
from sohoa.journal import Job, Journal
from sohoa.separator import Sheet, detect_sheet, is_blank_page

if TYPE_CHECKING:
    from sohoa.config import ProfileConfig

log = logging.getLogger(__name__)

SHEETS_DIR_NAME = "sheets"
FIRST_BATCH_NAME = "batch-01"


@dataclass(frozen=True)
class PageFile:
    """A page image the scanner wrote durably, as :class:`sohoa.scanner.ScannedPage` describes it."""

    path: Path
    width: int
    height: int
    dpi: int


# Declared fields


def sheet_declaration(sheet: Sheet) -> dict:
    """Return the ``declared`` value of a job opened by ``sheet``: its settings and, later, its files."""
    return {**sheet.to_dict(), "sheet_files": []}


def declared_sheet(job: Job) -> Sheet | None:
    """Return the sheet that opened ``job``, or None."""
    # A job without a sheet can still hold the check of its capture profile's type.
    if not job.declared or not job.declared.get("kind"):
        return None
    return Sheet.from_dict(job.declared)


def declared_operator(job: Job) -> str | None:
    return (job.declared or {}).get("operator") or None


def page_count_error(job: Job) -> PageCountMismatchError | None:
    """Return the error describing ``job``'s page-count mismatch, or None when the count matched or was not set."""
    check = (job.declared or {}).get("page_check")
    if not check or check["match"]:
        return None
    return PageCountMismatchError(
        N_(
            "The document after sheet {sheet_id} has {scanned} scanned pages, but the sheet declares {expected}. "
            "Count the paper pages: if a page is missing or extra, scan the document again. "
            "The scanned copy is still signed and uploaded, marked with the difference."
        ),
        sheet_id=job.declared.get("sheet_id"),
        scanned=check["scanned"],
        expected=check["expected"],
    )


def close_document(journal: Journal, job: Job) -> Job:
    """Mark ``job`` captured and record the check of its page count against the sheet's, if it declares one."""
    declared = job.declared
    expected = (declared or {}).get("expected_pages")
    if not expected:
        return journal.set_state(job.id, "captured")

    check = {"expected": expected, "scanned": job.page_count, "match": job.page_count == expected}
    job = journal.set_state(job.id, "captured", declared={**declared, "page_check": check})
    if check["match"]:
        log.info("Job %s: %d pages scanned, as sheet %s declares", job.id, job.page_count, declared.get("sheet_id"))
    else:
        log.warning(
            "Job %s: %d pages scanned but sheet %s declares %d; the job is flagged page_count_mismatch",
            job.id,
            job.page_count,
            declared.get("sheet_id"),
            expected,
        )
    return job


# Moving files between job folders


def move_durably(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` in the same file system and fsync both folders.

    Raises FileExistsError rather than replace a file already at ``target``.
    """
    if target.exists():
        raise FileExistsError(f"cannot move {source} to {target}: the target exists")
    created = not target.parent.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    if created:
        fsync_dir(target.parent.parent)
    os.rename(source, target)
    fsync_dir(target.parent)
    fsync_dir(source.parent)


def latest_batch(job_dir: Path) -> Path | None:
    batches = sorted(job_dir.glob("batch-*"))
    return batches[-1] if batches else None


class BatchSplitter:
    """Route the pages of one batch to their documents; each sheet starts a new job.

    ``job`` is the job the batch starts in and ``batch_dir`` the folder where
    that job's pages of this batch are kept. ``record`` takes the pages in
    feed order. :attr:`current` is the job the next page belongs to, and
    :attr:`closed` lists the jobs a sheet ended, already ``captured``.
    """

    def __init__(
        self,
        journal: Journal,
        spool_dir: Path,
        job: Job,
        batch_dir: Path,
        *,
        origin: str | None,
        profiles: Mapping[str, ProfileConfig],
        detect_sheets: bool,
    ) -> None:
        self.journal = journal
        self.spool_dir = spool_dir
        self.current = job
        self.current_batch = batch_dir
        self.origin = origin
        self.profiles = profiles
        self.detect_sheets = detect_sheets
        self.closed: list[Job] = []
        self.next_seq = job.page_count + 1
        # A job still without pages whose last file is its sheet may see the sheet's back next.
        files = (job.declared or {}).get("sheet_files") or []
        self.back_pending = job.page_count == 0 and bool(files) and files[-1]["role"] == "sheet"

    def record(self, page: PageFile) -> None:
        """Set ``page`` aside as a sheet or a sheet's back, or journal it as the next page of the current job."""
        if self.detect_sheets:
            image = self._open(page.path)
            sheet = detect_sheet(image) if image is not None else None
            if sheet is not None:
                self._start_document(page.path, sheet)
                return
            if self.back_pending and image is not None and is_blank_page(image, page.dpi):
                self.back_pending = False
                self._set_aside(page.path, "back", None)
                log.info("Job %s: blank back of the sheet set aside (%s)", self.current.id, page.path.name)
                return
        self.back_pending = False

        path = self._move_into_current(page.path)
        self.journal.add_page(self.current.id, self.next_seq, path, sha256_file(path), page.width, page.height, page.dpi)
        log.info("Job %s: page %d captured (%s)", self.current.id, self.next_seq, path.name)
        self.next_seq += 1
        self.current = self.journal.get_job(self.current.id)

    @staticmethod
    def _open(path: Path) -> Image.Image | None:
        """Return the page image, or None when it cannot be read; such a page is kept as a page."""
        try:
            image = Image.open(path)
            image.load()
        except (OSError, Image.DecompressionBombError, ValueError) as exc:
            log.warning("Page file %s cannot be read to look for a sheet (%s); it is kept as a page", path, exc)
            return None
        return image

    def _profile_of(self, sheet: Sheet) -> str | None:
        """Return the sheet's profile if it is configured, else the current job's profile."""
        if sheet.profile is None:
            return self.current.profile
        if sheet.profile in self.profiles:
            return sheet.profile
        log.warning(
            "Sheet %s names the capture profile %s, which is not configured; the job keeps profile %s",
            sheet.sheet_id,
            sheet.profile,
            self.current.profile or "default",
        )
        return self.current.profile

    def _start_document(self, path: Path, sheet: Sheet) -> None:
        declared = sheet_declaration(sheet)
        profile = self._profile_of(sheet)
        self.current = self.journal.get_job(self.current.id)

        if self.current.page_count == 0:
            # A sheet before any page (the cover on top of the feeder) describes the job already open.
            earlier = declared_sheet(self.current)
            if earlier is not None and earlier.sheet_id != sheet.sheet_id:
                log.warning("Job %s: sheet %s replaces sheet %s, which no page followed", self.current.id, sheet.sheet_id, earlier.sheet_id)
            declared["sheet_files"] = (self.current.declared or {}).get("sheet_files", [])
            self.current = self.journal.update_job(self.current.id, declared=declared, profile=profile)
        else:
            # The old job's new state and the new job's row commit together.
            with self.journal.transaction():
                closed = close_document(self.journal, self.current)
                created = self.journal.create_job(profile=profile, origin=self.origin, declared=declared, source_batch=path.parent)
            self.journal.write_manifest(closed.id)
            self.journal.write_manifest(created.id)
            self.closed.append(closed)
            log.info("Job %s: %s sheet %s ends job %s after %d pages", created.id, sheet.kind, sheet.sheet_id, closed.id, closed.page_count)
            self.current = created
            self.current_batch = self.spool_dir / created.id / FIRST_BATCH_NAME
            self.next_seq = 1

        self._set_aside(path, "sheet", sheet.sheet_id)
        self.back_pending = True

    def _set_aside(self, path: Path, role: str, sheet_id: str | None) -> None:
        """Move a sheet or a sheet's back into the current job's ``sheets/`` folder and list it in ``declared``."""
        job_dir = self.spool_dir / self.current.id
        target = job_dir / SHEETS_DIR_NAME / f"{path.parent.name}-{path.name}"
        move_durably(path, target)
        declared = dict(self.current.declared or {})
        entry = {"file": str(target.relative_to(job_dir)), "sha256": sha256_file(target), "role": role}
        if sheet_id is not None:
            entry["sheet_id"] = sheet_id
        declared["sheet_files"] = [*declared.get("sheet_files", []), entry]
        self.current = self.journal.update_job(self.current.id, declared=declared)

    def _move_into_current(self, path: Path) -> Path:
        if path.parent == self.current_batch:
            return path
        target = self.current_batch / path.name
        move_durably(path, target)
        return target


def _type_name(code: str) -> str | None:
    """Return the document type name the recognizer uses for ``code``, e.g. "Quyết định" for QĐ."""
    return next((name.capitalize() for name, type_code in fieldlib.DOCUMENT_TYPES if type_code == code), None)


def apply_declared_type(declared: dict | None, fields: dict[str, dict]) -> tuple[dict[str, dict], dict | None]:
    """Fill TypeName from a sheet's or capture profile's type code when the recognizer is unsure of it.

    Returns the fields and the check to store in ``declared["type_check"]``:
    ``result`` is "declared" when the sheet's type filled the field, "match"
    when a sure recognized type agrees, and "conflict" when it differs. On a
    conflict the recognized value is kept and the conflict is logged.
    """
    code = (declared or {}).get("type_code")
    name = _type_name(code) if code else None
    if name is None:
        return fields, None

    recognized = fields.get("TypeName") or {}
    recognized_code = fieldlib.type_code(fieldlib.fields_from_json({"TypeName": recognized})) if recognized.get("value") else None
    if recognized.get("value") and recognized.get("sure"):
        result = "match" if recognized_code == code else "conflict"
        if result == "conflict":
            log.warning("The sheet or capture profile declares document type %s but the recognized text shows %s; the recognized type is kept", code, recognized_code)
        return fields, {"declared": code, "recognized": recognized_code, "result": result}

    fields = {**fields, "TypeName": {"value": name, "confidence": 1.0, "sure": True}}
    return fields, {"declared": code, "recognized": recognized_code, "result": "declared"}


def declared_metadata(job: Job) -> dict[str, object]:
    """Return the upload metadata extensions of a job opened by a sheet (``x_sheet``, ``x_page_check``) or typed by its profile (``x_type_check``)."""
    declared = job.declared
    if not declared:
        return {}
    if not declared.get("kind"):
        # No sheet: only the check of the capture profile's document type.
        return {"x_type_check": declared["type_check"]} if declared.get("type_check") else {}
    sheet = {name: declared.get(name) for name in ("kind", "sheet_id", "profile", "type_code", "operator", "expected_pages")}
    if declared.get("type_check"):
        sheet["type_check"] = declared["type_check"]
    metadata: dict[str, object] = {"x_sheet": sheet}
    if declared.get("page_check"):
        metadata["x_page_check"] = declared["page_check"]
    return metadata
