"""Start-up recovery: bring the journal and the spool back to a state the steps can resume from.

The daemon can die at any instant (power cut, SIGKILL, watchdog). Files are
written durably before the journal row that points to them, so after a crash
the spool can hold more than the journal records, never less, unless the card
itself lost data. :func:`open_journal` runs before any thread starts and:

1. checks the SQLite file with ``PRAGMA quick_check``. A journal that fails the
   check or cannot be opened is moved aside and rebuilt from the per-job
   ``manifest.json`` files in the spool;
2. removes the ``.part`` temporary files of interrupted writes;
3. turns a job left in ``scanning`` into ``interrupted`` (or discards it when
   it has neither a page nor a sheet), adopting a page file whose journal row
   was never committed, and finishing a split at a separator or cover sheet;
4. checks that the files each job's state promises exist and match, and steps
   a job back to the last state whose files are intact. A signed job whose
   signed PDF matches its SHA-256 is never built or signed again. A signed
   job's legacy ``timestamp-pending`` marker file becomes the journal's
   ``timestamp_pending`` column;
5. moves spool folders that no job owns out of the spool.

Each repair is logged and listed in the returned :class:`RecoveryReport`.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from sohoa.config import Config
from sohoa.errors import JobFinding, JournalError
from sohoa.fsutil import sha256_file
from sohoa.i18n import N_
from sohoa.journal import JOB_STATES, MANIFEST_NAME, Job, Journal, error_columns, utc_now
from sohoa.pipeline import adopt_legacy_timestamp_marker
from sohoa.search import rebuild_index
from sohoa.splitting import FIRST_BATCH_NAME, BatchSplitter, PageFile, latest_batch

log = logging.getLogger(__name__)

ORPHANS_DIR_NAME = "orphans"
# The journal counter that numbers MQTT sessions, as Daemon.start names it.
MQTT_SESSION_COUNTER = "mqtt_session"


@dataclass
class RecoveryReport:
    """Findings and changes of one start-up recovery."""

    rebuilt: bool = False
    corrupt_copy: Path | None = None
    jobs_restored: int = 0
    repairs: list[str] = field(default_factory=list)

    def note(self, message: str, *args: object) -> None:
        text = message % args if args else message
        self.repairs.append(text)
        log.warning("Recovery: %s", text)


def open_journal(config: Config) -> tuple[Journal, RecoveryReport]:
    """Open the journal with manifests enabled, rebuilding and repairing it as needed.

    Call it before any thread touches the journal or the spool.
    """
    report = RecoveryReport()
    spool = config.spool_dir
    spool.mkdir(parents=True, exist_ok=True)
    remove_temporary_files(config.box.data_dir, report)

    problem = check_database(config.journal_path)
    if problem is not None:
        report.corrupt_copy = move_aside(config.journal_path)
        report.rebuilt = True
        log.error("Journal %s is corrupt (%s); moved to %s, rebuilding from the manifests", config.journal_path, problem, report.corrupt_copy)
    elif not config.journal_path.exists() and any(spool.glob(f"*/{MANIFEST_NAME}")):
        report.rebuilt = True
        log.error("Journal %s is missing but the spool contains job manifests; rebuilding it from them", config.journal_path)

    journal = Journal(config.journal_path, manifests_dir=spool)
    if report.rebuilt:
        rebuild_from_manifests(journal, spool, report)
        indexed = rebuild_index(journal)
        report.note("rebuilt the search index with %d documents", indexed.documents)
    repair_jobs(journal, config, report)
    remove_orphan_folders(journal, config, report)
    if report.repairs:
        log.warning("Start-up recovery made %d repairs", len(report.repairs))
    return journal, report


# 1. the SQLite file


def check_database(path: Path) -> str | None:
    """Return None if the journal at ``path`` is absent or passes ``PRAGMA quick_check``, else the problem.

    Raises JournalError when the file cannot be checked at all (no permission,
    locked, an I/O error), because moving a healthy journal aside for such a
    cause would be worse than not starting.
    """
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        raise JournalError(N_("Cannot check the journal {path}: {detail}"), path=path, detail=exc) from exc
    except sqlite3.DatabaseError as exc:
        # SQLITE_NOTADB and SQLITE_CORRUPT: the file is damaged.
        return str(exc)
    results = [row[0] for row in rows]
    if results != ["ok"]:
        return "; ".join(str(result) for result in results[:5])
    return None


def move_aside(path: Path) -> Path:
    """Rename the journal and its WAL and shared-memory files to ``<name>.corrupt-<UTC time>``; return the new name."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.replace(target.with_name(target.name + suffix))
    return target


# 2. temporary files


def remove_temporary_files(data_dir: Path, report: RecoveryReport) -> None:
    """Delete the ``.NAME.XXXX.part`` files that :mod:`sohoa.fsutil` leaves when a write is cut short."""
    if not data_dir.exists():
        return
    for path in sorted(data_dir.rglob(".*.part")):
        if path.is_file():
            path.unlink()
            report.note("removed the unfinished temporary file %s", path)


# 3. rebuilding from manifests


def rebuild_from_manifests(journal: Journal, spool: Path, report: RecoveryReport) -> None:
    """Insert a job row and its page rows for every readable manifest, and restore the DocCode counters."""
    sequences: dict[str, int] = {}
    for manifest_path in sorted(spool.glob(f"*/{MANIFEST_NAME}")):
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            restore_job(journal, manifest_path.parent, manifest)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            report.note("manifest %s cannot be read (%s); its folder is kept for a person to check", manifest_path, exc)
            continue
        report.jobs_restored += 1
        agency, sequence = split_doc_code(manifest.get("doc_code"))
        if agency is not None:
            sequences[agency] = max(sequences.get(agency, 0), sequence)

    with journal.transaction() as db:
        for agency, sequence in sequences.items():
            db["counters"].upsert({"name": f"doc_code:{agency}", "value": sequence}, pk="name")
        # The MQTT session number must keep growing across the rebuild. The
        # current Unix time exceeds any count of connections the box has made.
        db["counters"].upsert({"name": MQTT_SESSION_COUNTER, "value": int(time.time())}, pk="name")
    report.note("rebuilt %d jobs from the manifests in %s", report.jobs_restored, spool)


def restore_job(journal: Journal, folder: Path, manifest: dict) -> None:
    """Insert one job and its pages from ``manifest``; file names in it are relative to ``folder``."""

    def absolute(name: str | None) -> str | None:
        return None if name is None else str(folder / name)

    pages = manifest["pages"]
    with journal.transaction() as db:
        db["jobs"].insert(
            {
                "id": manifest["job_id"],
                "created_at": manifest["created_at"],
                "updated_at": manifest.get("updated_at") or utc_now(),
                "state": manifest["state"],
                "doc_code": manifest.get("doc_code"),
                "page_count": len(pages),
                "error_code": manifest.get("error_code"),
                "pdf_path": absolute(manifest.get("pdf")),
                "signed_path": absolute(manifest.get("signed_pdf")),
                "sha256": manifest.get("sha256"),
                "fields": json.dumps(manifest.get("fields") or {}, ensure_ascii=False),
                "receipt": json.dumps(manifest["receipt"], ensure_ascii=False) if manifest.get("receipt") else None,
                "duplicate_of": manifest.get("duplicate_of"),
                "duplicate_reason": manifest.get("duplicate_reason"),
                "purged_at": manifest.get("purged_at"),
                "profile": manifest.get("profile"),
                "origin": manifest.get("origin"),
                "declared": json.dumps(manifest["declared"], ensure_ascii=False) if manifest.get("declared") else None,
                "source_batch": str(folder.parent / manifest["source_batch"]) if manifest.get("source_batch") else None,
                "timestamp_pending": manifest.get("timestamp_pending"),
                "upload_rejections": manifest.get("upload_rejections") or 0,
            }
        )
        for page in pages:
            # The recognize step names OCR results by page; repair_jobs checks that they are readable.
            ocr_path = folder / "ocr" / f"page-{page['seq']:04d}.json"
            clean_path = absolute(page.get("clean_file"))
            if clean_path is not None and not Path(clean_path).exists():
                clean_path = None
            # OCR of an image that is gone refers to a page that must be cleaned and read again.
            recognized = ocr_path.exists() and (clean_path is not None or page.get("clean_file") is None)
            db["pages"].insert(
                {
                    "job_id": manifest["job_id"],
                    "seq": page["seq"],
                    "path": absolute(page["file"]),
                    "sha256": page["sha256"],
                    "width": page["width"],
                    "height": page["height"],
                    "dpi": page["dpi"],
                    "state": "recognized" if recognized else "captured",
                    "ocr_path": str(ocr_path) if recognized else None,
                    "clean_path": clean_path,
                    "dropped": 1 if page.get("dropped") else 0,
                    "drop_reason": page.get("drop_reason"),
                    "created_at": manifest["created_at"],
                }
            )


def split_doc_code(doc_code: str | None) -> tuple[str | None, int]:
    """Return the agency code and the sequence number of ``AGENCY_TYPE_000123_V1``, or (None, 0)."""
    if not doc_code:
        return None, 0
    parts = doc_code.rsplit("_", 3)
    if len(parts) != 4 or not parts[2].isdigit():
        return None, 0
    return parts[0], int(parts[2])


# 4. job repairs


def repair_jobs(journal: Journal, config: Config, report: RecoveryReport) -> None:
    """Bring every job to a state whose files exist and match."""
    for job in journal.jobs_in("scanning"):
        end_cut_scan(journal, config, job, report)
    for job in journal.jobs_in("interrupted", "collecting", "captured", "recognized", "built", "signed"):
        check_job_files(journal, job, report)
    for job in journal.jobs_in("signed"):
        if adopt_legacy_timestamp_marker(journal, job, config.spool_dir / job.id) != job:
            report.note("job %s: moved the pending document timestamp from the marker file into the journal", job.id)
    for job in journal.jobs_in("uploaded"):
        if job.purged_at is None and job.signed_path and not Path(job.signed_path).exists():
            report.note("job %s: the uploaded PDF %s is missing; the archive holds the document", job.id, job.signed_path)


def end_cut_scan(journal: Journal, config: Config, job: Job, report: RecoveryReport) -> None:
    """Finish a scan the daemon died in: keep its pages as an interrupted job, or discard an empty job.

    A job opened by a separator or cover sheet is kept even without a page,
    so that the next press continues it with the sheet's settings.
    """
    splitter = adopt_unrecorded_pages(journal, config, job, report)
    for closed in splitter.closed:
        report.note("job %s: a sheet found at the cut ends this document; captured with %d pages", closed.id, closed.page_count)
    job = journal.get_job(splitter.current.id)
    if job.page_count == 0 and not job.declared:
        with journal.transaction() as db:
            db.execute("delete from jobs where id = ? and page_count = 0", [job.id])
        shutil.rmtree(config.spool_dir / job.id, ignore_errors=True)
        report.note("job %s: the daemon stopped during a scan before any page; job discarded", job.id)
        return
    journal.set_state(
        job.id, "interrupted", **error_columns(JobFinding("scan_cut_short", N_("The daemon stopped during the scan.")))
    )
    report.note("job %s: the daemon stopped during a scan; %d pages kept, the next press continues", job.id, job.page_count)


def unrecorded_page_files(journal: Journal, folder: Path | None) -> list[Path]:
    """Return the page files of ``folder`` that no page row of any job records, in name order."""
    if folder is None or not folder.is_dir():
        return []
    with journal.transaction() as db:
        recorded = {Path(row["path"]) for row in db.query("select path from pages where path like ?", [f"{folder}/%"])}
    return [path for path in sorted(folder.glob("page-*.png")) if path not in recorded]


def adopt_unrecorded_pages(journal: Journal, config: Config, job: Job, report: RecoveryReport) -> BatchSplitter:
    """Record the page files of the cut batch whose journal row was never committed, and return the splitter used.

    A page file is complete once it has its final name, because it was renamed
    from a ``.part`` file after fsync. Its paper has already left the feeder,
    so the page is kept rather than scanned again. The files go through a
    :class:`BatchSplitter` like the pages of a running scan, so a sheet or a
    page not yet moved into its job's folder ends where the scan would have
    put it. A job split from another job's batch also takes the unrecorded
    files left in that batch folder.
    """
    job_dir = config.spool_dir / job.id
    own_batch = latest_batch(job_dir)
    candidates = unrecorded_page_files(journal, own_batch)
    batch = own_batch
    if job.source_batch and (own_batch is None or own_batch.name == FIRST_BATCH_NAME):
        batch = own_batch or job_dir / FIRST_BATCH_NAME
        candidates = unrecorded_page_files(journal, Path(job.source_batch)) + candidates

    splitter = BatchSplitter(
        journal,
        config.spool_dir,
        job,
        batch or job_dir / FIRST_BATCH_NAME,
        origin=job.origin,
        profiles=config.profiles,
        detect_sheets=config.capture.separator_sheets,
    )
    for path in candidates:
        try:
            with Image.open(path) as image:
                width, height = image.size
                dpi = int(round(image.info.get("dpi", (300, 300))[0]))
        except (OSError, Image.DecompressionBombError, ValueError) as exc:
            report.note("job %s: page file %s cannot be read (%s); not adopted", splitter.current.id, path, exc)
            break
        before = splitter.current.page_count
        splitter.record(PageFile(path, width, height, dpi))
        if splitter.current.page_count > before:
            report.note(
                "job %s: adopted page file %s as page %d; its journal row was never committed",
                splitter.current.id,
                path,
                splitter.current.page_count,
            )
        else:
            report.note("job %s: set aside %s as a separator or cover sheet, or its blank back", splitter.current.id, path)
    return splitter


def check_job_files(journal: Journal, job: Job, report: RecoveryReport) -> None:
    """Step ``job`` back to the last state whose files are intact."""
    if job.state == "signed" and signed_pdf_intact(job):
        return
    if job.state == "signed" and not journal.pages(job.id):
        # A signed PDF imported from the hot folder as it is has no page images to build it again from.
        journal.set_state(
            job.id,
            "failed",
            **error_columns(
                JobFinding(
                    "import_lost",
                    N_(
                        "The imported signed PDF {path} is missing or changed. Put the original from the hot folder's "
                        "done/ folder back into the hot folder."
                    ),
                    path=job.signed_path,
                )
            ),
        )
        report.note("job %s: the imported signed PDF %s is missing or changed; job marked failed", job.id, job.signed_path)
        return
    if job.state == "signed":
        report.note("job %s: the signed PDF %s is missing or changed", job.id, job.signed_path)
        journal.update_job(job.id, state="built", signed_path=None, sha256=None, timestamp_pending=None)
        job = journal.get_job(job.id)

    bad_pages = [page.seq for page in journal.pages(job.id) if not file_matches(Path(page.path), page.sha256)]
    if bad_pages:
        journal.set_state(
            job.id,
            "failed",
            **error_columns(
                JobFinding("page_lost", N_("Page files {pages} are missing or changed on disk. Scan these pages again."), pages=bad_pages)
            ),
        )
        report.note("job %s: page files %s are missing or changed; job marked failed", job.id, bad_pages)
        return

    if job.state == "built" and not pdf_opens(job.pdf_path):
        report.note("job %s: the unsigned PDF %s is missing or cannot be opened; building again", job.id, job.pdf_path)
        journal.update_job(job.id, state="recognized", pdf_path=None)
        job = journal.get_job(job.id)
    # A built job with an intact PDF needs no OCR result, because signing reads only the PDF.
    if job.state == "recognized" and not ocr_results_intact(journal, job, report):
        journal.update_job(job.id, state="captured", pdf_path=None)
        report.note("job %s: OCR results are missing; recognizing the missing pages again", job.id)


def signed_pdf_intact(job: Job) -> bool:
    return bool(job.signed_path and job.sha256) and file_matches(Path(job.signed_path), job.sha256)


def file_matches(path: Path, sha256: str | None) -> bool:
    try:
        return sha256 is not None and sha256_file(path) == sha256
    except OSError:
        return False


def pdf_opens(path: str | None) -> bool:
    import pikepdf

    if not path:
        return False
    try:
        with pikepdf.open(path) as pdf:
            return len(pdf.pages) > 0
    except (OSError, pikepdf.PdfError):
        return False


def ocr_results_intact(journal: Journal, job: Job, report: RecoveryReport) -> bool:
    """Return True if every page kept has a readable OCR result and its image; mark the others for recognition again.

    A blank page dropped by clean-up has no OCR result. A page whose cleaned
    image is gone is cleaned again, because its OCR result refers to that image.
    """
    intact = True
    for page in journal.pages(job.id):
        if page.dropped:
            continue
        if page.clean_path and not Path(page.clean_path).exists():
            intact = False
            with journal.transaction() as db:
                db["pages"].update((job.id, page.seq), {"state": "captured", "ocr_path": None, "clean_path": None})
            report.note("job %s: the cleaned image %s of page %d is missing", job.id, page.clean_path, page.seq)
            continue
        try:
            json.loads(Path(page.ocr_path).read_text(encoding="utf-8"))
            continue
        except (OSError, TypeError, ValueError):
            intact = False
        with journal.transaction() as db:
            db["pages"].update((job.id, page.seq), {"state": "captured", "ocr_path": None})
        report.note("job %s: the OCR result of page %d is missing or unreadable", job.id, page.seq)
    return intact


# 5. folders no job owns


def remove_orphan_folders(journal: Journal, config: Config, report: RecoveryReport) -> None:
    """Delete empty spool folders without a job and move the others to ``<data_dir>/orphans``.

    A folder can lose its job when the daemon dies while discarding an empty
    scan. Any file left in it is moved, never deleted, so a person can check it.
    """
    known = {job.id for job in journal.jobs_in(*JOB_STATES)}
    for folder in sorted(path for path in config.spool_dir.iterdir() if path.is_dir()):
        if folder.name in known:
            continue
        files = [path for path in folder.rglob("*") if path.is_file() and path.name != MANIFEST_NAME]
        if not files:
            shutil.rmtree(folder)
            report.note("removed the spool folder %s, which no job owns and which holds no page", folder)
            continue
        target = config.box.data_dir / ORPHANS_DIR_NAME / folder.name
        target.parent.mkdir(parents=True, exist_ok=True)
        folder.replace(target)
        report.note("moved the spool folder %s, which no job owns, to %s", folder, target)
