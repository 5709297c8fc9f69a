"""The daemon: the button starts a job; worker threads carry jobs to the archive.

Threads:
- gpiozero's thread calls :meth:`Daemon.request_scan` on a press; it only sets
  a flag and wakes the worker.
- the worker scans, imports one complete file from the hot folder, then runs
  the on-box steps (recognize, build, sign) for every job that needs them, one
  job at a time so that OCR memory stays bounded;
- with ``capture.hot_folder`` set, watchdog's observer and the hot folder
  watcher (:mod:`sohoa.hotfolder.watcher`) queue complete files for the worker;
- the uploader sends signed documents whenever the archive responds, with
  exponential backoff while it does not;
- the main thread publishes the heartbeat and pings the systemd watchdog.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from sohoa import __version__
from sohoa.config import Config
from sohoa.errors import (
    ArchiveUnreachableError,
    DiskFullError,
    HardwareError,
    HotFolderError,
    ScanCancelledError,
    SigningError,
    SohoaError,
    UploadError,
)
from sohoa.i18n import N_, gettext as _
from sohoa.journal import PENDING_STATES, Journal, error_columns
from sohoa.mqtt_commands import Command, CommandReply
from sohoa.pipeline import CaptureRequest, Pipeline
from sohoa.splitting import page_count_error
from sohoa.sysinfo import DeviceProbe, cpu_temperature_c, digitized_counts, disk_free_mb, model_versions
from sohoa.triggers import ScannerTriggers

log = logging.getLogger(__name__)

# Stages shown to users; the values are English msgids translated when published.
STAGE_MESSAGES = {
    "idle": N_("Ready: load the paper and press the button."),
    "scanning": N_("Scanning."),
    "recognizing": N_("Recognizing text."),
    "building": N_("Building the PDF document."),
    "signing": N_("Signing the document."),
    "importing": N_("Importing a file from the hot folder."),
}
# Log descriptions of a long press's effect, by the action that request_cancel returns.
LONG_PRESS_ACTIONS = {
    "scan": "cancelling the scan",
    "finish_flatbed": "finishing the flatbed document",
    "job": "cancelling the job being processed",
    "nothing": "nothing to cancel",
}
# Shown while a flatbed document is open and the worker is idle.
FLATBED_OPEN_MESSAGE = N_(
    "Flatbed document open, pages scanned: {pages}. Place the next page and press the button, or hold the button to finish the document."
)
# How often the uploader thread looks for confirmed documents past box.retention_days.
PURGE_INTERVAL_SECONDS = 3600.0
# How often the uploader thread rebuilds the progress summary that it publishes on MQTT.
SUMMARY_INTERVAL_SECONDS = 900.0
# Alerts whose cause a person must fix before the queue moves again.
ATTENTION_CODES = {"token_missing", "key_not_found", "token_pin_invalid", "paper_jam", "cover_open", "disk_full"}
# Alerts that only a plugged-in token or a corrected PIN clears; the red LED blinks for them.
TOKEN_WAIT_CODES = {"token_missing", "key_not_found", "token_pin_invalid"}


@dataclass(frozen=True)
class Alert:
    code: str
    message: str
    at: str


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        pipeline: Pipeline,
        journal: Journal,
        reporter=None,
        panel_factory: Callable[..., object] | None = None,
        notifier=None,
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.journal = journal
        self.reporter = reporter
        self._panel_factory = panel_factory
        self.panel = None
        self.notifier = notifier

        self._stop = threading.Event()
        self._work = threading.Event()
        self._upload_wake = threading.Event()
        self._lock = threading.Lock()
        self._scan_requested: CaptureRequest | None = None
        self._scanning = False
        # A long press: stops the running scan (the scanner checks this event every scan line),
        # cancels the job the worker is processing before its next step, or finishes the open flatbed document.
        self._cancel_scan = threading.Event()
        self._processing_job_id: str | None = None
        self._cancel_job_id: str | None = None
        self._finish_flatbed_requested = False
        self._triggers = ScannerTriggers(config, self.request_scan) if ScannerTriggers.enabled_in(config.capture) else None
        self._stage = "idle"
        self._alerts: dict[str, Alert] = {}
        self._last_error: Alert | None = None
        self._archive_reachable: bool | None = None
        self._last_upload: str | None = None
        self._last_scan: str | None = None
        self._started_at = time.monotonic()
        self._device_probe = DeviceProbe(config.scanner.device, config.signing.pkcs11_module, config.signing.token_label)
        self._model_versions: dict[str, str] = {}
        self._threads: list[threading.Thread] = []
        self._sign_retry_at = 0.0
        self._unit_token_probe_at = 0.0
        self._startup_alerts: list[SohoaError] = []
        # Watchdog health: when the worker last moved, and what the journal looked like then.
        self._progress_at = time.monotonic()
        self._progress_marker: tuple | None = None
        self._stalled = False
        self._next_purge_at = 0.0
        self._next_summary_at = 0.0
        self._publish_lock = threading.RLock()
        # The state most recently shown on the panel and sent over MQTT.
        self.last_state: dict | None = None
        self.on_state: Callable[[dict], None] | None = None
        # Complete hot folder files waiting for the worker, and their paths, so that a repeat is queued once.
        self._imports: deque = deque()
        self._queued_imports: set = set()
        self._hot_folder = None
        self._importer = None

    # lifecycle

    def start(self) -> None:
        from sohoa.upload import Backoff

        self._backoff = Backoff(self.config.upload.retry_min_seconds, self.config.upload.retry_max_seconds)
        self._model_versions = model_versions(self.config.ocr.models_dir)
        if self.reporter is not None:
            self.reporter.set_session_counter(lambda: self.journal.next_sequence("mqtt_session"))
            self.reporter.set_command_handler(self.handle_command)
            self.reporter.start()
        if self._panel_factory is not None:
            self.panel = self._panel_factory(self.config.gpio, self.request_scan, on_long_press=self.request_cancel)
        # Before the worker starts, so the probe cannot overlap a signature and the first state shows its alert.
        self._probe_unit_token()
        for name, target in (("worker", self._worker_loop), ("uploader", self._upload_loop)):
            thread = threading.Thread(target=target, name=f"sohoa-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._work.set()
        self._start_hot_folder()
        for error in self._startup_alerts:
            self._raise_alert("startup", error)
            self._event(error.code, {"code": error.code, "message": error.user_message()})
        self._publish()
        self._notify("READY=1")
        log.info("sohoa %s started on %s/%s", __version__, self.config.box.site, self.config.box.device)

    def stop(self) -> None:
        log.info("Stopping")
        self._notify("STOPPING=1")
        if self._hot_folder is not None:
            self._hot_folder.stop()
        self._stop.set()
        self._work.set()
        self._upload_wake.set()
        for thread in self._threads:
            thread.join(timeout=60)
            if thread.is_alive():
                log.warning("Thread %s did not stop within 60 s", thread.name)
        if self.panel is not None:
            self.panel.close()
        if self.reporter is not None:
            self.reporter.stop()
        self.journal.close()

    def run_forever(self) -> None:
        """Run until SIGTERM or SIGINT, publishing the heartbeat and pinging the watchdog.

        SIGUSR1 is the same as pressing the button, for service scripts and
        tests that have no panel or broker (``kill -USR1 <pid>``).
        """
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        signal.signal(signal.SIGUSR1, lambda *_: self.request_scan(origin="signal"))
        self.start()
        try:
            while not self._stop.wait(self.config.mqtt.heartbeat_seconds):
                self.heartbeat()
        finally:
            self.stop()

    def heartbeat(self) -> bool:
        """Publish the state, and ping the systemd watchdog only if the daemon is healthy; return whether it pinged.

        Healthy means every thread is alive and the worker made progress within
        ``box.worker_stall_seconds``: it went round its loop, changed stage,
        or the journal changed (a page captured or recognized, a job's state).
        A SANE call that never returns therefore stops the pings, and systemd
        restarts the daemon after ``WatchdogSec``.
        """
        self._publish()
        problem = self._health_problem()
        if problem is None:
            if self._stalled:
                log.warning("The worker is making progress again")
            self._stalled = False
            self._notify("WATCHDOG=1")
            return True
        if not self._stalled:
            log.error("%s; watchdog pings stop, so systemd restarts the daemon", problem)
        self._stalled = True
        return False

    def _health_problem(self) -> str | None:
        dead = [thread.name for thread in self._threads if not thread.is_alive()]
        if self._hot_folder is not None and not self._hot_folder.is_alive:
            dead.append("sohoa-hotfolder")
        if dead:
            return f"Thread {', '.join(dead)} died"
        marker = self.journal.progress_marker()
        if marker != self._progress_marker:
            self._progress_marker = marker
            self._mark_progress()
        stalled_for = time.monotonic() - self._progress_at
        if stalled_for > self.config.box.worker_stall_seconds:
            return f"The worker made no progress for {stalled_for:.0f} s in stage {self._stage}"
        return None

    def _mark_progress(self) -> None:
        self._progress_at = time.monotonic()

    def _start_hot_folder(self) -> None:
        """Start watching ``capture.hot_folder`` if it is set; a folder that cannot be used is an alert, not a stop."""
        from sohoa.hotfolder.importer import HotFolderImporter, prepare_hot_folder
        from sohoa.hotfolder.watcher import HotFolderWatcher

        capture = self.config.capture
        if capture.hot_folder is None:
            return
        try:
            prepare_hot_folder(capture.hot_folder)
            self._importer = HotFolderImporter(self.config, self.journal, self.pipeline)
            watcher = HotFolderWatcher(
                capture.hot_folder,
                profiles=self.config.profiles.keys(),
                default_profile=capture.hot_folder_profile,
                settle_seconds=capture.hot_folder_settle_seconds,
                on_complete=self.queue_import,
            )
            watcher.start()
        except HotFolderError as exc:
            self._raise_alert("hot_folder", exc)
            self._event(exc.code, {"code": exc.code, "message": exc.user_message(), "path": str(capture.hot_folder)})
            return
        except OSError as exc:
            # inotify limits (ENOSPC, EMFILE) and permissions surface here when the observer starts.
            error = HotFolderError(
                N_("Cannot watch the hot folder {path}: {detail}. Check the folder and the system's inotify limits, then restart the daemon."),
                path=capture.hot_folder,
                detail=exc.strerror or exc,
            )
            self._raise_alert("hot_folder", error)
            self._event(error.code, {"code": error.code, "message": error.user_message(), "path": str(capture.hot_folder)})
            return
        self._hot_folder = watcher

    def queue_import(self, complete) -> None:
        """Queue a complete hot folder file for the worker; called on the watcher's thread."""
        with self._lock:
            if complete.path in self._queued_imports:
                return
            self._queued_imports.add(complete.path)
            self._imports.append(complete)
        self._work.set()

    def raise_startup_alert(self, error: SohoaError) -> None:
        """Queue an alert found before start (a rebuilt journal); start() shows it on the LEDs and MQTT.

        The alert stays until the next scan that ends without error, because
        staff pressing the button again is the acknowledgement.
        """
        self._startup_alerts.append(error)

    def _notify(self, message: str) -> None:
        if self.notifier is not None:
            self.notifier.notify(message)

    # the button

    def request_scan(self, profile: str | None = None, origin: str = "button") -> None:
        """Ask for a scan with the capture ``profile``; called on other threads, so it only sets a flag."""
        with self._lock:
            if self._scanning or self._scan_requested is not None:
                log.info("Scan requested by %s while a scan is running: ignored", origin)
                return
            self._scan_requested = CaptureRequest(profile=profile, origin=origin)
            self._cancel_scan.clear()
        log.info("Scan requested by %s (profile %s)", origin, profile or "default")
        self._work.set()

    def request_cancel(self, origin: str = "button") -> str:
        """Act on a long press; called on other threads, so it only sets flags. Return what it asked for.

        The first that applies: a running or requested scan is cancelled
        ("scan"). An open flatbed document is finished ("finish_flatbed"). The
        job that the worker is recognizing or building is cancelled before
        its next step ("job"). Otherwise nothing happens ("nothing"). Reading
        the journal here is safe because the journal locks every access.
        """
        with self._lock:
            if self._scan_requested is not None and not self._scanning:
                self._scan_requested = None
                action = "scan"
            elif self._scanning:
                self._cancel_scan.set()
                action = "scan"
            elif self.journal.open_flatbed_job() is not None:
                self._finish_flatbed_requested = True
                action = "finish_flatbed"
            elif self._processing_job_id is not None:
                self._cancel_job_id = self._processing_job_id
                action = "job"
            else:
                action = "nothing"
        log.info("Long press from %s: %s", origin, LONG_PRESS_ACTIONS[action])
        self._signal_long_press(action)
        self._work.set()
        return action

    def _signal_long_press(self, action: str) -> None:
        if self.panel is None or action == "nothing":
            return
        try:
            if action == "finish_flatbed":
                self.panel.beep_done()
            else:
                self.panel.signal_cancelled()
        except HardwareError as exc:
            log.error("Cannot signal the long press on the panel: %s", exc)

    @property
    def busy(self) -> bool:
        return self._scanning or self._scan_requested is not None or self._stage != "idle"

    # worker

    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            self._mark_progress()
            self._work.wait(timeout=self._worker_wait_seconds())
            self._work.clear()
            if self._stop.is_set():
                break
            with self._lock:
                request = self._scan_requested
                self._scan_requested = None
                self._scanning = request is not None
                finish_flatbed = self._finish_flatbed_requested
                self._finish_flatbed_requested = False
            try:
                if finish_flatbed:
                    self._finish_flatbed()
                if request is not None:
                    self._run_scan(request)
                with self._lock:
                    self._scanning = False
                if self._import_next():
                    self._work.set()
                self._process_pending()
                # On this thread, so the probes never overlap a scan or a signature.
                if self._device_probe.refresh_if_due():
                    self._publish()
                self._probe_unit_token_if_due()
                # Also on this thread, because libsane is not thread-safe. A waiting scan goes first.
                if self._triggers is not None and self._scan_requested is None and not self._stop.is_set():
                    self._triggers.poll_if_due()
            except Exception:
                log.exception("Worker step failed unexpectedly")
            finally:
                with self._lock:
                    self._scanning = False
                self._set_stage("idle")

    def _worker_wait_seconds(self) -> float:
        """Return how long the idle worker sleeps: the signing retry interval, or the poll interval when polling."""
        if self._triggers is None:
            return self.config.signing.retry_seconds
        return min(self.config.signing.retry_seconds, self.config.capture.poll_seconds)

    def _finish_flatbed(self) -> None:
        job = self.pipeline.finish_flatbed()
        if job is not None:
            self._event("flatbed_finished", {"job_id": job.id, "pages": job.page_count, "profile": job.profile})
            self._publish()

    def _run_scan(self, request: CaptureRequest) -> None:
        try:
            self._check_disk()
        except DiskFullError as exc:
            self._end_scan()
            self._raise_alert("disk", exc)
            return
        self._clear_alert("disk")
        # A new press means staff have seen the last page-count warning.
        self._clear_alert("page_count")
        self._set_stage("scanning")
        try:
            result = self.pipeline.acquire(request, cancel=self._cancel_scan)
        except SohoaError as exc:
            self._end_scan()
            self._raise_alert("scanner", exc)
            self._event("job_failed", {"code": exc.code, "message": exc.user_message()})
            return
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            # The pipeline has already kept the pages written before the failed one as an interrupted job.
            self._end_scan()
            self._raise_alert(
                "disk",
                DiskFullError(
                    N_("The disk filled up during the scan ({detail}). The pages scanned so far are kept; free space, then press the button to continue."),
                    detail=exc.strerror,
                ),
            )
            return
        finally:
            self._end_scan()
        self._last_scan = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._check_page_counts(result.documents)
        if isinstance(result.error, ScanCancelledError):
            self._event("job_cancelled", self._cancelled_payload(result.job, result.pages_scanned, "scanning", request.origin))
            self._publish()
            return
        if result.error is not None:
            self._raise_alert("scanner", result.error)
            self._event(
                "scan_interrupted" if result.job else "scan_empty",
                {"job_id": result.job.id if result.job else None, "pages": result.pages_scanned, "code": result.error.code},
            )
            return
        self._clear_alert("scanner")
        self._clear_alert("startup")
        if result.job is None:
            log.info("The batch held only separator or cover sheets; no document was captured")
            return
        log.info("Job %s: %d pages captured", result.job.id, result.job.page_count)

    def _check_page_counts(self, documents) -> None:
        """Raise the page-count alert and event for each captured document whose count differs from its sheet's."""
        for job in documents:
            error = page_count_error(job)
            if error is None:
                continue
            check = job.declared["page_check"]
            self._raise_alert("page_count", error)
            self._event(
                "page_count_mismatch",
                {
                    "job_id": job.id,
                    "sheet_id": job.declared.get("sheet_id"),
                    "expected": check["expected"],
                    "scanned": check["scanned"],
                    "message": error.user_message(),
                },
            )

    def _end_scan(self) -> None:
        """Accept presses again; done before an alert is shown, so a press that responds to the alert counts."""
        with self._lock:
            self._scanning = False
            self._cancel_scan.clear()

    @staticmethod
    def _cancelled_payload(job, pages: int, stage: str, origin: str | None) -> dict:
        return {"job_id": job.id if job else None, "pages": job.page_count if job else pages, "stage": stage, "origin": origin}

    def _check_disk(self) -> None:
        data_dir = self.config.box.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        free_mb = shutil.disk_usage(data_dir).free // (1024 * 1024)
        if free_mb < self.config.box.min_free_mb:
            raise DiskFullError(
                N_("Only {free} MB free on {path}, below the {reserve} MB reserve: new scans are refused until space is freed."),
                free=free_mb,
                path=data_dir,
                reserve=self.config.box.min_free_mb,
            )

    def _probe_unit_token(self) -> None:
        """Log in to the unit's token, find its key and log out, then raise or clear the ``unit_token`` alert.

        Without this probe a missing or wrong unit token shows only when the
        first licence, certificate or diploma is signed. It does nothing when
        ``signing.unit_key_id`` is unset.
        """
        if not self.config.signing.unit_signing_enabled:
            return
        self._unit_token_probe_at = time.monotonic() + self.config.signing.retry_seconds
        try:
            self.pipeline.unit_signer().probe()
        except SohoaError as exc:
            current = self._alerts.get("unit_token")
            if current is None or current.code != exc.code:
                self._raise_alert("unit_token", exc)
            return
        if "unit_token" in self._alerts:
            log.info("The unit's signing token is ready again")
            self._clear_alert("unit_token")

    def _probe_unit_token_if_due(self) -> None:
        """Probe the unit's token again every ``signing.retry_seconds`` while its alert is raised.

        A rejected PIN is not tried again, because every wrong PIN counts
        towards locking the token. That alert clears when a unit signature
        succeeds, or at the next start.
        """
        alert = self._alerts.get("unit_token")
        if alert is None or alert.code == "token_pin_invalid" or time.monotonic() < self._unit_token_probe_at:
            return
        self._probe_unit_token()

    # hot folder

    def _import_next(self) -> bool:
        """Import the oldest queued hot folder file; return whether the queue should be looked at again soon.

        A full disk leaves the file queued and in the inbox, and the next
        round of the worker tries again.
        """
        with self._lock:
            if not self._imports:
                return False
            complete = self._imports.popleft()
        try:
            self._check_disk()
            self._set_stage("importing")
            self._event("import_started", {"file": complete.path.name, "path": str(complete.path), "profile": complete.profile})
            outcome = self._importer.import_file(complete)
        except DiskFullError as exc:
            with self._lock:
                self._imports.appendleft(complete)
            self._raise_alert("disk", exc)
            return False
        except Exception as exc:
            with self._lock:
                self._queued_imports.discard(complete.path)
            log.exception("Import of %s failed unexpectedly; the file stays in the hot folder", complete.path)
            self._raise_alert("import", exc)
            return bool(self._imports)
        with self._lock:
            self._queued_imports.discard(complete.path)
        self._clear_alert("disk")
        self._report_import(outcome)
        return bool(self._imports)

    def _report_import(self, outcome) -> None:
        from sohoa.hotfolder.importer import FINISHED, IMPORTED, REJECTED
        from sohoa.hotfolder.ledger import KIND_SIGNED_PDF

        if outcome.status == IMPORTED:
            self._clear_alert("import")
            job = outcome.job
            self._event(
                "job_imported",
                {
                    "job_id": job.id,
                    "file": outcome.path.name,
                    "sha256": outcome.record.sha256,
                    "signed_pdf": outcome.record.kind == KIND_SIGNED_PDF,
                    "state": job.state,
                    "doc_code": job.doc_code,
                    "pages": job.page_count,
                    "moved_to": str(outcome.moved_to),
                    # A file split at separator or cover sheets became several jobs; job_id is the first.
                    "job_ids": [each.id for each in outcome.jobs],
                },
            )
        elif outcome.status == REJECTED:
            error = outcome.error
            self._last_error = Alert(error.code, error.user_message(), datetime.now(timezone.utc).isoformat(timespec="seconds"))
            self._event(
                "import_rejected",
                {
                    "file": outcome.path.name,
                    "code": error.code,
                    "message": error.user_message(),
                    "moved_to": str(outcome.moved_to) if outcome.moved_to else None,
                },
            )
            self._publish()
        if outcome.status in (IMPORTED, FINISHED) and outcome.job is not None and outcome.job.state == "signed":
            self._upload_wake.set()

    def _process_pending(self) -> None:
        for job in self.journal.jobs_in(*PENDING_STATES):
            if self._stop.is_set():
                return
            if job.state == "built" and job.error_code and time.monotonic() < self._sign_retry_at:
                continue
            try:
                self._set_stage({"captured": "recognizing", "recognized": "building", "built": "signing"}[job.state])
                job = self._process_job(job)
            except SigningError as exc:
                self.journal.update_job(job.id, **error_columns(exc))
                self._raise_alert("signing", exc)
                self._sign_retry_at = time.monotonic() + self.config.signing.retry_seconds
                log.warning("Job %s waits, built but unsigned: %s", job.id, exc)
                continue
            except SohoaError as exc:
                self.journal.set_state(job.id, "failed", **error_columns(exc))
                self._raise_alert("job", exc)
                self._event("job_failed", {"job_id": job.id, "code": exc.code, "message": exc.user_message()})
                continue
            if job.state == "signed":
                self._clear_alert("signing")
                self._clear_alert("job")
                if self.pipeline.needs_unit_signature(job):
                    self._clear_alert("unit_token")
                dropped = sum(1 for page in self.journal.pages(job.id) if page.dropped)
                self._event(
                    "job_finished",
                    {"job_id": job.id, "doc_code": job.doc_code, "pages": job.page_count, "pages_dropped": dropped},
                )
                if self.panel is not None:
                    self.panel.beep_done()
                self._upload_wake.set()

    def _process_job(self, job):
        with self._lock:
            self._processing_job_id = job.id
            self._cancel_job_id = None
        try:
            if job.state == "captured":
                job = self.pipeline.recognize(job)
                self._set_stage("building")
            if job.state == "recognized" and not self._cancel_if_requested(job):
                job = self.pipeline.build(job)
                self._set_stage("signing")
                if job.duplicate_of:
                    self._signal_duplicate(job)
            # A long press during signing cancels nothing: the signed document goes on to the archive.
            if job.state == "built" and not self._cancel_if_requested(job, last_chance=True):
                job = self.pipeline.sign(job)
            return self.journal.get_job(job.id)
        finally:
            with self._lock:
                self._processing_job_id = None
                self._cancel_job_id = None

    def _cancel_if_requested(self, job, *, last_chance: bool = False) -> bool:
        """Cancel ``job`` if a long press asked for it while its previous step ran; return whether it was cancelled.

        With ``last_chance``, later long presses no longer target the job.
        """
        with self._lock:
            requested = self._cancel_job_id == job.id
            self._cancel_job_id = None
            if last_chance:
                self._processing_job_id = None
        if not requested:
            return False
        stage = self._stage
        self.pipeline.cancel_job(job)
        self._event("job_cancelled", self._cancelled_payload(job, job.page_count, stage, job.origin))
        return True

    def _signal_duplicate(self, job) -> None:
        """Tell staff and MQTT subscribers that a job probably duplicates an earlier one; both are kept."""
        original = self.journal.get_job(job.duplicate_of)
        self._event(
            "probable_duplicate",
            {
                "job_id": job.id,
                "doc_code": job.doc_code,
                "duplicate_of_job_id": original.id,
                "duplicate_of_doc_code": original.doc_code,
                "reason": job.duplicate_reason,
            },
        )
        if self.panel is not None:
            try:
                self.panel.signal_duplicate()
            except HardwareError as exc:
                log.error("Job %s: cannot signal the probable duplicate on the panel: %s", job.id, exc)

    # uploader

    def _upload_loop(self) -> None:
        while not self._stop.is_set():
            delay = self._upload_pending()
            self._purge_if_due()
            self._publish_summary_if_due()
            self._upload_wake.wait(timeout=delay)
            self._upload_wake.clear()

    def _purge_if_due(self) -> None:
        """Run the retention purge at most once per PURGE_INTERVAL_SECONDS, on the uploader thread."""
        from sohoa.retention import purge_cancelled, purge_uploaded

        now = time.monotonic()
        if now < self._next_purge_at:
            return
        self._next_purge_at = now + PURGE_INTERVAL_SECONDS
        try:
            purged = purge_uploaded(self.journal, self.config.spool_dir, self.config.box.retention_days)
            purged += purge_cancelled(self.journal, self.config.spool_dir, self.config.box.cancelled_retention_days)
        except (OSError, SohoaError) as exc:
            log.error("Retention purge failed, retrying in %d s: %s", PURGE_INTERVAL_SECONDS, exc)
            return
        if purged:
            log.info("Retention purge emptied %d job folders", len(purged))

    def _publish_summary_if_due(self) -> None:
        """Publish the box summary of the progress report at most once per SUMMARY_INTERVAL_SECONDS."""
        from sohoa.report import build_summary

        now = time.monotonic()
        if self.reporter is None or now < self._next_summary_at:
            return
        self._next_summary_at = now + SUMMARY_INTERVAL_SECONDS
        try:
            summary = build_summary(self.config, now=datetime.now(timezone.utc))
        except SohoaError as exc:
            log.error("Building the progress summary failed, retrying in %d s: %s", SUMMARY_INTERVAL_SECONDS, exc)
            return
        self.reporter.publish_report(summary.to_json())

    def _upload_pending(self) -> float:
        """Upload every signed document; return how long to wait before the next round."""
        for job in self.journal.jobs_in("signed"):
            if self._stop.is_set():
                return 0
            try:
                receipt = self.pipeline.upload(job)
            except ArchiveUnreachableError as exc:
                delay = self._backoff.next_delay()
                self.journal.update_job(
                    job.id, upload_attempts=job.upload_attempts + 1, **error_columns(exc)
                )
                self._archive_reachable = False
                self._raise_alert("upload", exc)
                log.warning("Upload of %s failed, next try in %.1f s: %s", job.doc_code, delay, exc)
                return delay
            except UploadError as exc:
                self._report_upload_error(job, exc)
                continue
            self._backoff.reset()
            self._archive_reachable = True
            self._last_upload = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self._clear_alert("upload")
            self._event("job_uploaded", {"job_id": job.id, "doc_code": job.doc_code, "sha256": receipt.sha256})
            log.info("Job %s: %s uploaded, archive id %s", job.id, job.doc_code, receipt.archive_id)
        self._publish()
        return self.config.upload.retry_max_seconds

    def _report_upload_error(self, job, error: UploadError) -> None:
        """Raise the alert for a failed upload: a ``job`` alert when the job failed for good, else an ``upload`` one."""
        self._event("upload_failed", {"job_id": job.id, "doc_code": job.doc_code, "code": error.code})
        if self.journal.get_job(job.id).state != "failed":
            self._raise_alert("upload", error)
            return
        self._raise_alert("job", error)
        self._event("job_failed", {"job_id": job.id, "doc_code": job.doc_code, "code": error.code, "message": error.user_message()})

    # status

    def _set_stage(self, stage: str) -> None:
        self._mark_progress()
        if stage != self._stage:
            self._stage = stage
            self._publish()

    def _raise_alert(self, subsystem: str, error: Exception) -> None:
        code = getattr(error, "code", "error")
        message = error.user_message() if isinstance(error, SohoaError) else str(error)
        alert = Alert(code, message, datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self._alerts[subsystem] = alert
        self._last_error = alert
        log.error("%s alert %s: %s", subsystem, code, error)
        if self.panel is not None and code in ATTENTION_CODES | {"scanner_io_error", "scanner_not_found"}:
            self.panel.beep_error()
        self._publish()

    def _clear_alert(self, subsystem: str) -> None:
        if self._alerts.pop(subsystem, None) is not None:
            self._publish()

    def handle_command(self, command: Command) -> CommandReply:
        """Run a remote command from MQTT; called on the reporter's network thread, so it only sets flags."""
        if command.name == "scan":
            if self._scanning or self._scan_requested is not None:
                return CommandReply(False, "busy", _("A scan is already running; no new scan was started."))
            self.request_scan(origin="mqtt")
            return CommandReply(True, "scan_requested", _("Scan requested."))
        if command.name == "cancel":
            # The same as a long press of the button, so the staff at the box see and hear it.
            action = self.request_cancel(origin="mqtt")
            if action == "nothing":
                return CommandReply(False, "nothing_to_cancel", _("Nothing to cancel: no scan or document is in progress."))
            if action == "finish_flatbed":
                return CommandReply(True, "flatbed_finished", _("The open flatbed document was finished."))
            return CommandReply(True, "cancel_requested", _("Cancelling the scan or the document in progress; its pages are kept."))
        if command.name == "flush-uploads":
            self._backoff.reset()
            self._upload_wake.set()
            return CommandReply(True, "upload_woken", _("Uploading the waiting documents now."))
        if command.name == "ping":
            return CommandReply(True, "pong", _("The box is running."))
        return CommandReply(False, "reload_unsupported", _("Reloading the configuration is not supported; restart the daemon."))

    def _event(self, name: str, payload: dict) -> None:
        if self.reporter is not None:
            self.reporter.publish_event(name, payload)

    def state(self) -> dict:
        """Return the status document published on MQTT."""
        counts = self.journal.state_counts()
        blocking = [alert for subsystem, alert in self._alerts.items() if subsystem != "upload"]
        if blocking:
            lifecycle = "alert"
        elif self.busy:
            lifecycle = "busy"
        else:
            lifecycle = "ready"
        open_flatbed = self.journal.open_flatbed_job()
        if blocking:
            message = blocking[-1].message
        elif open_flatbed is not None and self._stage == "idle":
            message = _(FLATBED_OPEN_MESSAGE).format(pages=open_flatbed.page_count)
        else:
            message = _(STAGE_MESSAGES.get(self._stage, STAGE_MESSAGES["idle"]))
        free_mb = disk_free_mb(self.config.box.data_dir)
        alert_code = blocking[-1].code if blocking else None
        return {
            "state": lifecycle,
            "stage": self._stage,
            "message": message,
            "alert_code": alert_code,
            "alerts": [alert.code for alert in self._alerts.values()],
            "queue": {
                "interrupted": counts["interrupted"],
                "to_recognize": counts["captured"],
                "to_build": counts["recognized"],
                "to_sign": counts["built"],
                "to_upload": counts["signed"],
                "failed": counts["failed"],
            },
            "open_document": None
            if open_flatbed is None
            else {"job_id": open_flatbed.id, "profile": open_flatbed.profile, "pages": open_flatbed.page_count},
            "last_error": None
            if self._last_error is None
            else {"code": self._last_error.code, "message": self._last_error.message, "at": self._last_error.at},
            "archive_reachable": self._archive_reachable,
            "last_scan": self._last_scan,
            "last_upload": self._last_upload,
            "totals": self.journal.totals(),
            "digitized": digitized_counts(self.journal, ZoneInfo(self.config.plan.timezone)),
            "disk_free_mb": free_mb,
            "cpu_temperature_c": cpu_temperature_c(),
            "token_present": self._device_probe.token_present,
            "scanner_present": self._device_probe.scanner_present,
            "version": __version__,
            "models": self._model_versions,
            "uptime_seconds": int(time.monotonic() - self._started_at),
            "heartbeat": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "heartbeat_seconds": self.config.mqtt.heartbeat_seconds,
            "pid": os.getpid(),
        }

    def _publish(self) -> None:
        # Serialised, so that the panel, MQTT and last_state always end on the newest state.
        with self._publish_lock:
            self._publish_locked()

    @staticmethod
    def _panel_status(state: dict) -> str:
        """Return the panel status that shows ``state`` on the LEDs."""
        if state["state"] == "alert":
            return "attention" if state["alert_code"] in TOKEN_WAIT_CODES else "error"
        if state["state"] == "busy":
            return "busy"
        return "idle"

    def _publish_locked(self) -> None:
        state = self.state()
        # systemctl status shows STATUS=; a newline would start another notify assignment.
        self._notify("STATUS=" + " ".join(state["message"].split()))
        if self.panel is not None:
            self.panel.show(self._panel_status(state))
        if self.reporter is not None:
            self.reporter.publish_state(state)
        self.last_state = state
        if self.on_state is not None:
            self.on_state(state)
