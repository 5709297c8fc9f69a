"""Fault injection against a real daemon process: kills at random times and an audit of the outcome.

:class:`DaemonProcess` runs ``python -m sohoa --config X run`` as a child with
its own ``NOTIFY_SOCKET``, so a test receives READY=1 and the watchdog pings
as systemd would. SIGUSR1 presses the button. :func:`kill_campaign` presses
and SIGKILLs the daemon at random moments many times; :func:`audit` then
checks the journal, the spool and the archive receiver for lost, duplicated
and corrupted documents and for leftover files.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sohoa.testbed.demo import REPO_DIR, Testbed, load_feeder, sample_pages, write_toml

# Start-up of a child (imports, recovery, MQTT connect) on a 2-core machine takes a few seconds.
START_TIMEOUT_SECONDS = 60.0
# One page document through OCR, PDF, signature and upload on a 2-core machine.
JOB_TIMEOUT_SECONDS = 240.0


class NotifyListener:
    """A datagram socket playing systemd's NOTIFY_SOCKET; collects every message in a background thread."""

    def __init__(self) -> None:
        self._folder = tempfile.mkdtemp(prefix="sohoa-notify-", dir="/tmp")
        self.path = os.path.join(self._folder, "notify")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.path)
        self._socket.settimeout(0.2)
        self._condition = threading.Condition()
        self.messages: list[tuple[float, str]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify-listener", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._socket.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._condition:
                self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))
                self._condition.notify_all()

    def mark(self) -> int:
        """Return the index of the next message, to wait only for messages after this point."""
        with self._condition:
            return len(self.messages)

    def wait_for(self, text: str, timeout: float, since: int = 0) -> bool:
        """Wait until a message equal to ``text`` arrives after index ``since``."""
        with self._condition:
            return self._condition.wait_for(
                lambda: any(message == text for _, message in self.messages[since:]), timeout=timeout
            )

    def last_status(self) -> str | None:
        with self._condition:
            statuses = [message for _, message in self.messages if message.startswith("STATUS=")]
        return statuses[-1].removeprefix("STATUS=") if statuses else None

    def times_of(self, text: str, since: int = 0) -> list[float]:
        with self._condition:
            return [at for at, message in self.messages[since:] if message == text]

    def close(self) -> None:
        self._closed.set()
        self._socket.close()
        self._thread.join(timeout=5)
        shutil.rmtree(self._folder, ignore_errors=True)


class DaemonProcess:
    """The daemon as a child process of the test, started and killed on demand."""

    def __init__(self, bed: Testbed, config_path: Path, notify: NotifyListener, log_path: Path) -> None:
        self.bed = bed
        self.config_path = config_path
        self.notify = notify
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self, *, wait_ready: bool = True) -> None:
        environment = {
            **os.environ,
            **self.bed.env,
            "NOTIFY_SOCKET": self.notify.path,
            "SOHOA_LANG": "en",
            "PYTHONPATH": str(REPO_DIR / "daemon"),
        }
        since = self.notify.mark()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sohoa", "--config", str(self.config_path), "run"],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        if wait_ready and not self.notify.wait_for("READY=1", START_TIMEOUT_SECONDS, since):
            raise RuntimeError(f"daemon did not report READY=1 within {START_TIMEOUT_SECONDS} s; see {self.log_path}")

    def press(self) -> None:
        """Press the button: SIGUSR1 makes the daemon request a scan."""
        self.process.send_signal(signal.SIGUSR1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> int | None:
        """Stop with SIGTERM as systemd does; return the exit status, or None if it was not running."""
        if self.process is None:
            return None
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait(timeout=30)
        self.process = None
        return status


def fault_config(bed: Testbed, folder: Path, **overrides: dict[str, object]) -> Path:
    """Write a copy of the testbed config with a fast heartbeat and the given section overrides."""
    sections = json.loads(json.dumps(bed.sections))
    sections["mqtt"]["heartbeat_seconds"] = 0.5
    sections["signing"]["retry_seconds"] = 1.0
    sections["upload"]["retry_min_seconds"] = 0.2
    sections["upload"]["retry_max_seconds"] = 2.0
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    path = folder / "faults.toml"
    write_toml(path, sections)
    return path


def read_journal(path: Path) -> tuple[list[dict], list[dict]]:
    """Return the jobs and pages rows, read-only, while the daemon may be running."""
    if not path.exists():
        return [], []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        jobs = [dict(row) for row in conn.execute("select * from jobs order by created_at, id")]
        pages = [dict(row) for row in conn.execute("select * from pages order by job_id, seq")]
    finally:
        conn.close()
    return jobs, pages


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    """Poll ``predicate`` (a read of files the child process writes) until it returns True or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while time.monotonic() < deadline:
        if predicate():
            return True
        pause.wait(interval)
    return predicate()


def all_uploaded(journal_path: Path) -> bool:
    jobs, _pages = read_journal(journal_path)
    return bool(jobs) and all(job["state"] in ("uploaded", "failed") for job in jobs)


@dataclass
class CampaignResult:
    kills: int = 0
    presses: int = 0
    kill_delays: list[float] = field(default_factory=list)
    # The daemon's last STATUS= message before each kill: the step it was killed in.
    stages_at_kill: dict[str, int] = field(default_factory=dict)
    journals_corrupted: int = 0


# Kill points: the STATUS= message the daemon sends when a step starts, and the
# range of the random delay after it. None means right after start-up, during recovery.
KILL_TARGETS: dict[str, tuple[str | None, float, float]] = {
    "start-up": (None, 0.0, 1.5),
    "scanning": ("STATUS=Scanning.", 0.0, 1.0),
    "recognizing": ("STATUS=Recognizing text.", 0.0, 3.0),
    "building": ("STATUS=Building the PDF document.", 0.0, 1.5),
    "signing": ("STATUS=Signing the document.", 0.0, 0.5),
    "uploading": ("STATUS=Signing the document.", 0.3, 2.5),
}
# How long to wait for a targeted step before killing anyway.
TARGET_TIMEOUT_SECONDS = 60.0


def kill_campaign(
    daemon: DaemonProcess,
    feeder_dir: Path,
    journal_path: Path,
    iterations: int,
    rng: random.Random,
    *,
    max_delay: float | None = None,
    documents: Sequence[str] = ("giay-phep", "ban-sao-bang"),
    corrupt_every: int = 0,
) -> CampaignResult:
    """Start, press and SIGKILL the daemon ``iterations`` times.

    With ``max_delay`` the kill comes a uniform random delay after the press.
    Without it, each kill picks a random step of :data:`KILL_TARGETS`, waits
    for the daemon to report that step and kills it a random moment later, so
    that every step boundary and the inside of the long steps are hit.

    Before each press the feeder is loaded with the next one-page sample,
    unless a job is interrupted: then the feeder is emptied, so the press
    finishes that job with the pages it has, as staff do after a jam. With
    ``corrupt_every`` = n, every n-th kill is followed by overwriting the
    journal with garbage, so the next start rebuilds it from the manifests.
    """
    result = CampaignResult()
    for iteration in range(iterations):
        target = None if max_delay is not None else rng.choice(sorted(KILL_TARGETS))
        daemon.start(wait_ready=target != "start-up")
        jobs, _pages = read_journal(journal_path)
        if any(job["state"] == "interrupted" for job in jobs):
            load_feeder(feeder_dir, [])
        else:
            load_feeder(feeder_dir, sample_pages(documents[iteration % len(documents)]))
        since = daemon.notify.mark()
        if target != "start-up":
            daemon.press()
            result.presses += 1

        label = wait_for_kill_point(daemon, target, since, rng, max_delay, result)
        daemon.kill()
        result.kills += 1
        result.stages_at_kill[label] = result.stages_at_kill.get(label, 0) + 1
        if corrupt_every and result.kills % corrupt_every == 0:
            corrupt_journal(journal_path)
            result.journals_corrupted += 1
    return result


def wait_for_kill_point(
    daemon: DaemonProcess, target: str | None, since: int, rng: random.Random, max_delay: float | None, result: CampaignResult
) -> str:
    """Wait until the moment to kill; return a label of where the kill lands."""
    pause = threading.Event()
    if target is None:
        delay = rng.uniform(0.0, max_delay)
        result.kill_delays.append(delay)
        # The random delay is the injected fault's timing, not a synchronisation.
        pause.wait(delay)
        return daemon.notify.last_status() or "before the first status"

    message, low, high = KILL_TARGETS[target]
    reached = message is None or daemon.notify.wait_for(message, TARGET_TIMEOUT_SECONDS, since)
    delay = rng.uniform(low, high)
    result.kill_delays.append(delay)
    pause.wait(delay)
    return target if reached else f"{target} (not reached in {TARGET_TIMEOUT_SECONDS:.0f} s)"


def corrupt_journal(journal_path: Path) -> None:
    """Replace the journal with bytes that are not a SQLite database, and drop its WAL."""
    for suffix in ("-wal", "-shm"):
        journal_path.with_name(journal_path.name + suffix).unlink(missing_ok=True)
    journal_path.write_bytes(b"not a database, as after a damaged SD card\n" * 256)


def finish_queue(daemon: DaemonProcess, feeder_dir: Path, journal_path: Path, timeout: float = JOB_TIMEOUT_SECONDS) -> bool:
    """Restart the daemon, finish an interrupted job with an empty feeder, and wait until every job is uploaded."""
    daemon.start()
    jobs, _pages = read_journal(journal_path)
    if any(job["state"] == "interrupted" for job in jobs):
        load_feeder(feeder_dir, [])
        daemon.press()
    return wait_until(lambda: all_uploaded(journal_path), timeout)


@dataclass
class AuditResult:
    """Outcome of one run; ``problems`` contains one line per defect found."""

    documents: int = 0
    pages: int = 0
    lost: int = 0
    duplicated: int = 0
    corrupted: int = 0
    orphans: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


def audit(journal_path: Path, spool: Path, receiver, trust_roots: Sequence[Path]) -> AuditResult:
    """Check the journal, the spool and the archive against each other.

    - lost: a job with pages that is not uploaded, or an uploaded job the
      archive does not hold with the same SHA-256;
    - duplicated: a job stored under two DocCodes, or a DocCode given to two jobs;
    - corrupted: a stored PDF that does not verify, or whose page count differs from the job's;
    - orphans: ``.part`` files, spool folders without a job, page files without a page row.
    """
    import pikepdf

    from sohoa.signing import verify_pdf

    result = AuditResult()
    jobs, pages = read_journal(journal_path)
    records = receiver.records()
    by_doc_code = {record["DocCode"]: record for record in records}
    stored_for_job: dict[str, list[str]] = {}
    for record in records:
        stored_for_job.setdefault(record["metadata"].get("x_job_id"), []).append(record["DocCode"])

    for job in jobs:
        if job["page_count"] == 0:
            continue
        result.pages += job["page_count"]
        if job["state"] != "uploaded":
            result.lost += 1
            result.problems.append(f"job {job['id']} ended {job['state']} ({job['error_code']}), not uploaded")
            continue
        result.documents += 1
        stored = stored_for_job.get(job["id"], [])
        if len(stored) > 1:
            result.duplicated += 1
            result.problems.append(f"job {job['id']} is stored under {len(stored)} DocCodes: {stored}")
        record = by_doc_code.get(job["doc_code"])
        if record is None or record["sha256"] != job["sha256"]:
            result.lost += 1
            result.problems.append(f"job {job['id']}: the archive does not hold {job['doc_code']} with the journal's SHA-256")
            continue
        stored_pdf = receiver.store.file_path(job["doc_code"])
        verdict = verify_pdf(stored_pdf, list(trust_roots))
        with pikepdf.open(stored_pdf) as pdf:
            page_count = len(pdf.pages)
        # Blank pages dropped by clean-up are scanned but not in the PDF.
        expected = job["page_count"] - sum(1 for page in pages if page["job_id"] == job["id"] and page.get("dropped"))
        if not (verdict.valid and verdict.intact and verdict.trusted) or page_count != expected:
            result.corrupted += 1
            result.problems.append(f"{job['doc_code']}: signature {verdict.summary}, {page_count} pages for {expected} expected")

    owners = [record["metadata"].get("x_job_id") for record in records]
    for job_id in {owner for owner in owners if owners.count(owner) > 1} - {job["id"] for job in jobs}:
        result.duplicated += 1
        result.problems.append(f"archive holds several documents of unknown job {job_id}")

    result.orphans = count_orphans(jobs, pages, spool, result.problems)
    return result


def count_orphans(jobs: list[dict], pages: list[dict], spool: Path, problems: list[str]) -> int:
    """Count ``.part`` files, spool folders without a job, and page images without a page row."""
    known_jobs = {job["id"] for job in jobs}
    recorded = {Path(page["path"]) for page in pages}
    orphans = 0
    for path in spool.rglob("*"):
        if path.name.endswith(".part"):
            orphans += 1
            problems.append(f"temporary file left: {path}")
        elif path.parent == spool and path.is_dir() and path.name not in known_jobs:
            orphans += 1
            problems.append(f"spool folder without a job: {path}")
        elif path.parent.name.startswith("batch-") and path.suffix == ".png" and path not in recorded:
            orphans += 1
            problems.append(f"page image without a page row: {path}")
    return orphans


class FaultyProxy:
    """A TCP proxy on 127.0.0.1 in front of the archive receiver that injects network faults.

    ``queue(fault, count)`` applies ``fault`` to the next ``count`` connections:

    - ``"reset_request"``: read part of the request body, then reset the connection;
    - ``"reset_response"``: forward the whole request, send the first bytes of the
      response, then reset (the archive has stored the document by then);
    - ``"slow"``: forward the request, hold the response ``slow_seconds``, then send it;
    - ``"pass"``: forward unchanged, to place a fault of the receiver itself in the sequence.

    Connections without a queued fault are forwarded unchanged. Until
    :meth:`start` is called nothing listens, so connections are refused.
    """

    def __init__(
        self, target_port: int, *, slow_seconds: float = 5.0, random_rate: float = 0.0, rng: random.Random | None = None
    ) -> None:
        self.target_port = target_port
        self.slow_seconds = slow_seconds
        # With random_rate > 0, a connection without a queued fault gets a random one at that probability.
        self.random_rate = random_rate
        self._rng = rng or random.Random(0)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._faults: list[str] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.connections = 0
        self.injected: dict[str, int] = {}
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queue(self, fault: str, count: int = 1) -> None:
        if fault not in ("reset_request", "reset_response", "slow", "pass"):
            raise ValueError(f"unknown fault {fault!r}")
        with self._lock:
            self._faults.extend([fault] * count)

    def start(self) -> None:
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept_loop, name=f"faulty-proxy-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _address = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                fault = self._faults.pop(0) if self._faults else None
                if fault is None and self._rng.random() < self.random_rate:
                    fault = self._rng.choice(("reset_request", "reset_response", "slow"))
                self.connections += 1
                if fault is not None:
                    self.injected[fault] = self.injected.get(fault, 0) + 1
            threading.Thread(target=self._serve, args=(client, fault), daemon=True).start()

    def _serve(self, client: socket.socket, fault: str | None) -> None:
        client.settimeout(60)
        try:
            if fault == "reset_request":
                self._read_some(client, 4096)
                self._reset(client)
                return
            with socket.create_connection(("127.0.0.1", self.target_port), timeout=60) as upstream:
                self._forward_request(client, upstream)
                response = self._read_response(upstream)
                if fault == "reset_response":
                    client.sendall(response[:20])
                    self._reset(client)
                    return
                if fault == "slow":
                    self._closed.wait(self.slow_seconds)
                client.sendall(response)
        except OSError:
            pass
        finally:
            client.close()

    @staticmethod
    def _read_some(client: socket.socket, wanted: int) -> None:
        received = 0
        while received < wanted:
            data = client.recv(65536)
            if not data:
                return
            received += len(data)

    @staticmethod
    def _reset(client: socket.socket) -> None:
        """Close with SO_LINGER 0, so the peer gets a TCP reset instead of an orderly end."""
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()

    @staticmethod
    def _forward_request(client: socket.socket, upstream: socket.socket) -> None:
        """Forward one HTTP request with a Content-Length body."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = client.recv(65536)
            if not chunk:
                raise OSError("client closed before the end of the headers")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        # One request per connection, so the archive closes the connection after its response.
        head = b"\r\n".join(line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:"))
        upstream.sendall(head + b"\r\nConnection: close\r\n\r\n" + body)
        sent = len(body)
        while sent < length:
            chunk = client.recv(65536)
            if not chunk:
                raise OSError("client closed in the middle of the body")
            upstream.sendall(chunk)
            sent += len(chunk)

    @staticmethod
    def _read_response(upstream: socket.socket) -> bytes:
        chunks = []
        while True:
            chunk = upstream.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
