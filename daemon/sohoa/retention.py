"""Retention purge: free the spool of documents the archive has confirmed, after ``box.retention_days``.

Jobs that staff cancelled with a long press keep their pages for
``box.cancelled_retention_days``, so a mistaken cancel can still be
recovered by IT, and are then emptied the same way.

A job's folder is emptied only when all of these hold:

- the job is ``uploaded`` and carries the archive's receipt;
- the receipt's SHA-256 equals the SHA-256 the journal recorded for the signed PDF;
- the job was marked uploaded more than ``retention_days`` ago.

The folder keeps its ``manifest.json``, updated with ``purged_at``, so that a
journal rebuilt from the manifests still contains every DocCode already
issued and never issues one twice. The journal row stays too, marked ``purged_at``.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sohoa.journal import MANIFEST_NAME, Job, Journal, utc_now

log = logging.getLogger(__name__)


def is_confirmed(job: Job) -> bool:
    """Return True if the archive's receipt confirms the exact signed PDF the journal recorded."""
    return (
        job.state == "uploaded"
        and job.receipt is not None
        and job.sha256 is not None
        and job.receipt.get("sha256") == job.sha256
    )


def purge_uploaded(journal: Journal, spool: Path, retention_days: float, now: datetime | None = None) -> list[str]:
    """Empty the spool folders of confirmed jobs uploaded more than ``retention_days`` ago; return their ids."""
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(days=retention_days)
    purged = []
    for job in journal.jobs_in("uploaded"):
        if job.purged_at is not None or not is_confirmed(job):
            continue
        if datetime.fromisoformat(job.updated_at) > cutoff:
            continue
        empty_job_folder(spool / job.id)
        journal.update_job(job.id, purged_at=utc_now())
        log.info("Job %s: %s purged from the spool; the archive confirmed SHA-256 %s", job.id, job.doc_code, job.sha256)
        purged.append(job.id)
    return purged


def purge_cancelled(journal: Journal, spool: Path, retention_days: float, now: datetime | None = None) -> list[str]:
    """Empty the spool folders of jobs cancelled more than ``retention_days`` ago; return their ids."""
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(days=retention_days)
    purged = []
    for job in journal.jobs_in("cancelled"):
        if job.purged_at is not None or datetime.fromisoformat(job.updated_at) > cutoff:
            continue
        empty_job_folder(spool / job.id)
        journal.update_job(job.id, purged_at=utc_now())
        log.info("Job %s: cancelled on %s, pages purged from the spool", job.id, job.updated_at)
        purged.append(job.id)
    return purged


def empty_job_folder(folder: Path) -> None:
    """Delete everything in ``folder`` except the manifest; a folder already emptied is left as it is."""
    if not folder.exists():
        return
    for path in folder.iterdir():
        if path.name == MANIFEST_NAME:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
