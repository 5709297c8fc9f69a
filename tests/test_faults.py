"""Fault injection: kills at random times, network faults, a dead broker, a pulled token,
a full disk, an unplugged scanner, a hung SANE call and bad page images.

Every test ends by checking that each scanned page reached the archive exactly
once in a valid, signed PDF, and that no temporary or orphan file remains.
The long version of the kill test is ``tests/benchmarks/fault_suite.py``.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from sohoa.app import build_daemon
from sohoa.config import load_config
from sohoa.journal import Journal
from sohoa.scanner import ScanOutcome
from sohoa.testbed.demo import build_testbed, load_feeder, press_button, sample_pages, wait_for_state
from sohoa.testbed.faults import (
    JOB_TIMEOUT_SECONDS,
    DaemonProcess,
    FaultyProxy,
    NotifyListener,
    audit,
    fault_config,
    finish_queue,
    kill_campaign,
)

KILL_ITERATIONS = 12


@pytest.fixture
def testbed(tmp_path):
    with build_testbed(tmp_path / "bed", pages=sample_pages("giay-phep")) as bed:
        yield bed


@pytest.fixture
def notify():
    listener = NotifyListener()
    yield listener
    listener.close()


@pytest.fixture
def in_process(testbed, tmp_path):
    """Start a daemon in this process with the fast fault config plus ``overrides``; stop it at the end."""
    started = []

    def start(**overrides):
        config = load_config(fault_config(testbed, tmp_path, **overrides))
        daemon = build_daemon(config)
        daemon.start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


def assert_clean_audit(testbed, *, documents: int) -> None:
    config = testbed.config()
    result = audit(config.journal_path, config.spool_dir, testbed.receiver, config.signing.trust_roots)
    assert result.problems == []
    assert result.documents == documents
    assert len(testbed.receiver.records()) == documents


def wait_uploaded(daemon, count: int, timeout: float = JOB_TIMEOUT_SECONDS) -> dict:
    state = wait_for_state(daemon, lambda s: s["totals"]["documents_uploaded"] >= count, timeout)
    assert state is not None, f"{count} documents were not uploaded in time; last state {daemon.last_state}"
    return state


# Kills


def test_random_kills_lose_nothing(testbed, notify, tmp_path):
    config_path = fault_config(testbed, tmp_path)
    daemon = DaemonProcess(testbed, config_path, notify, tmp_path / "daemon.log")
    journal_path = testbed.config().journal_path
    try:
        campaign = kill_campaign(
            daemon, testbed.feeder_dir, journal_path, KILL_ITERATIONS, random.Random(20261204), corrupt_every=6
        )
        finished = finish_queue(daemon, testbed.feeder_dir, journal_path)
    finally:
        daemon.kill()

    assert campaign.kills == KILL_ITERATIONS
    assert campaign.journals_corrupted == 2
    assert len(list(journal_path.parent.glob("journal.sqlite.corrupt-*"))) >= 2
    assert finished, (tmp_path / "daemon.log").read_text(encoding="utf-8")[-4000:]
    config = testbed.config()
    result = audit(config.journal_path, config.spool_dir, testbed.receiver, config.signing.trust_roots)
    assert result.problems == []
    assert result.documents >= 1
    assert result.documents == len(testbed.receiver.records())


# The systemd watchdog


class HangingScanner:
    """A scanner whose scan_batch blocks until released, like a SANE call that never returns."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def scan_batch(self, job_dir: Path, on_page=None, *, profile=None, cancel=None) -> ScanOutcome:
        self.entered.set()
        self.release.wait(timeout=120)
        return ScanOutcome((), None)


def test_hung_scan_stops_watchdog_pings(testbed, tmp_path, notify, monkeypatch):
    import sdnotify

    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    config = load_config(fault_config(testbed, tmp_path, box={"worker_stall_seconds": 1.5}))
    daemon = build_daemon(config, with_panel=False, with_reporter=False)
    daemon.notifier = sdnotify.SystemdNotifier()
    scanner = HangingScanner()
    daemon.pipeline.scanner = scanner
    daemon.start()
    try:
        assert daemon.heartbeat()
        daemon.request_scan()
        assert scanner.entered.wait(timeout=30)

        stopped = threading.Event()
        pings = []
        # The main loop calls heartbeat() every heartbeat period; do the same, 10 times a second.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not stopped.is_set():
            if not daemon.heartbeat():
                stopped.set()
            else:
                pings.append(time.monotonic())
            stopped.wait(0.1)
        assert stopped.is_set(), "the watchdog was still pinged while the scan hung"
        since = notify.mark()
        assert not daemon.heartbeat()
        assert not notify.wait_for("WATCHDOG=1", 1.0, since)

        scanner.release.set()
        assert wait_for_state(daemon, lambda s: s["stage"] == "idle", 30) is not None
        since = notify.mark()
        assert daemon.heartbeat()
        assert notify.wait_for("WATCHDOG=1", 5.0, since)
    finally:
        scanner.release.set()
        daemon.stop()


# The archive's network


def test_network_faults_upload_once(testbed, in_process):
    proxy = FaultyProxy(testbed.receiver.port, slow_seconds=3.0)
    try:
        daemon = in_process(upload={"url": proxy.url, "timeout_seconds": 1.0})
        press_button(daemon)
        # Nothing listens on the proxy's port yet: the first uploads are refused.
        state = wait_for_state(daemon, lambda s: s["queue"]["to_upload"] == 1 and s["archive_reachable"] is False, JOB_TIMEOUT_SECONDS)
        assert state is not None
        assert state["last_error"]["code"] == "archive_unreachable"

        proxy.queue("reset_request")
        proxy.queue("pass")
        testbed.receiver.fail_next(1, 500)
        proxy.queue("slow")
        proxy.queue("reset_response")
        proxy.start()
        wait_uploaded(daemon, 1, timeout=60)
    finally:
        proxy.stop()

    assert proxy.injected == {"reset_request": 1, "pass": 1, "slow": 1, "reset_response": 1}
    assert proxy.connections >= 5
    journal = Journal(testbed.config().journal_path)
    job = journal.jobs_in("uploaded")[0]
    journal.close()
    assert job.upload_attempts >= 4
    assert_clean_audit(testbed, documents=1)


def test_broker_down_still_uploads(testbed, in_process):
    testbed.broker.stop()
    daemon = in_process()
    press_button(daemon)
    wait_uploaded(daemon, 1)
    assert_clean_audit(testbed, documents=1)


# The signing token


def test_token_pulled_between_signatures(testbed, in_process):
    load_feeder(testbed.feeder_dir, sample_pages("giay-phep"))
    daemon = in_process()
    press_button(daemon)
    wait_uploaded(daemon, 1)

    testbed.token.unplug()
    try:
        load_feeder(testbed.feeder_dir, sample_pages("ban-sao-bang"))
        press_button(daemon)
        state = wait_for_state(daemon, lambda s: s["queue"]["to_sign"] == 1 and s["alert_code"] == "token_missing", JOB_TIMEOUT_SECONDS)
        assert state is not None, daemon.last_state
    finally:
        testbed.token.replug()
    wait_uploaded(daemon, 2)
    assert_clean_audit(testbed, documents=2)


# The scanner


def test_scanner_unplugged_mid_batch(testbed, in_process):
    pages = sample_pages("quyet-dinh")
    load_feeder(testbed.feeder_dir, pages)
    # The second sheet fails with an I/O error, as a scanner unplugged mid-batch does.
    shutil.move(testbed.feeder_dir / "002.png", testbed.feeder_dir / "002.ioerror.png")
    daemon = in_process()
    press_button(daemon)
    state = wait_for_state(daemon, lambda s: s["queue"]["interrupted"] == 1 and s["state"] == "alert", 60)
    assert state is not None, daemon.last_state
    assert state["last_error"]["code"] == "scanner_io_error"

    load_feeder(testbed.feeder_dir, pages[1:])
    press_button(daemon)
    wait_uploaded(daemon, 1)
    journal = Journal(testbed.config().journal_path)
    job = journal.jobs_in("uploaded")[0]
    journal.close()
    assert job.page_count == 2
    assert_clean_audit(testbed, documents=1)


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "bomb"])
def test_bad_feeder_image_keeps_pages(testbed, in_process, tmp_path, damage):
    good = sample_pages("giay-phep")[0]
    bad = tmp_path / "bad.png"
    if damage == "corrupt":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(4096))
    elif damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    else:
        # 14000 x 14000 pixels is above twice Pillow's default MAX_IMAGE_PIXELS, so opening it raises DecompressionBombError.
        Image.new("1", (14000, 14000), 1).save(bad)
    load_feeder(testbed.feeder_dir, [good, bad])
    daemon = in_process()
    press_button(daemon)
    state = wait_for_state(daemon, lambda s: s["queue"]["interrupted"] == 1 and s["state"] == "alert", 60)
    assert state is not None, daemon.last_state
    assert state["last_error"]["code"] == "scanner_io_error"
    assert "002" in state["last_error"]["message"]

    load_feeder(testbed.feeder_dir, [])
    press_button(daemon)
    wait_uploaded(daemon, 1)
    assert_clean_audit(testbed, documents=1)


# The disk


def scanned_page_size(testbed, folder: Path) -> int:
    from sohoa.scanner import Scanner

    outcome = Scanner(testbed.config().scanner).scan_batch(folder)
    return outcome.pages[0].path.stat().st_size


def test_disk_full_during_scan_keeps_pages(testbed, in_process, tmp_path):
    page_size = scanned_page_size(testbed, tmp_path / "probe")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the full-disk test: {mounted.stderr.decode().strip()}")
    try:
        data_dir = mount_point / "data"
        data_dir.mkdir()
        load_feeder(testbed.feeder_dir, sample_pages("giay-phep") * 2)
        daemon = in_process(box={"data_dir": str(data_dir), "min_free_mb": 0})
        # Leave room for the first page and half of the second.
        free = shutil.disk_usage(mount_point).free
        filler = mount_point / "filler"
        filler.write_bytes(b"\0" * max(0, free - int(page_size * 1.5)))

        press_button(daemon)
        state = wait_for_state(daemon, lambda s: s["alert_code"] == "disk_full", 60)
        assert state is not None, daemon.last_state
        assert state["queue"]["interrupted"] == 1
        journal = Journal(data_dir / "journal.sqlite")
        job = journal.jobs_in("interrupted")[0]
        pages = journal.pages(job.id)
        journal.close()
        assert [page.seq for page in pages] == [1]
        assert list(data_dir.rglob("*.part")) == []

        filler.unlink()
        load_feeder(testbed.feeder_dir, sample_pages("giay-phep"))
        press_button(daemon)
        wait_uploaded(daemon, 1)
        daemon.stop()
        records = testbed.receiver.records()
        assert len(records) == 1
        assert records[0]["metadata"]["x_job_id"] == job.id
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_reserve_refuses_scan(testbed, in_process):
    daemon = in_process(box={"min_free_mb": 10**9})
    press_button(daemon)
    state = wait_for_state(daemon, lambda s: s["alert_code"] == "disk_full", 30)
    assert state is not None, daemon.last_state
    assert "MB" in state["message"]
    assert state["queue"] == {key: 0 for key in state["queue"]}
    assert testbed.receiver.records() == []


# Bad input on the other paths


def test_malformed_commands_rejected_daemon_continues(testbed, tmp_path, notify):
    import json as jsonlib

    from sohoa.testbed.mosquitto import MessageRecorder

    config_path = fault_config(testbed, tmp_path, mqtt={"commands_enabled": True, "commands_per_minute": 60})
    log_path = tmp_path / "daemon.log"
    daemon = DaemonProcess(testbed, config_path, notify, log_path)
    base = "sohoa/demo/box-01"
    recorder = MessageRecorder(testbed.broker.host, testbed.broker.port, f"{base}/command/reply")
    bad_payloads = {
        b"not json": "command_invalid",
        b"\xff\xfe": "command_invalid",
        b"[1, 2]": "command_invalid",
        b'{"command": "format-disk"}': "command_unknown",
        b'{"command": "ping", "extra": 1}': "command_invalid",
        b'{"command": "ping", "id": "' + b"x" * 100 + b'"}': "command_invalid",
        b'{"command": "' + b"a" * 2000 + b'"}': "command_too_large",
    }
    try:
        daemon.start()
        for payload in [*bad_payloads, b'{"command": "ping", "id": "after-bad-input"}']:
            subprocess.run(
                ["mosquitto_pub", "-h", testbed.broker.host, "-p", str(testbed.broker.port), "-q", "1", "-t", f"{base}/command", "-s"],
                input=payload,
                check=True,
                timeout=30,
            )
        pong = recorder.wait_for(lambda m: jsonlib.loads(m.payload).get("id") == "after-bad-input", timeout=30)
        assert daemon.process.poll() is None, "the daemon stopped on malformed commands"
    finally:
        recorder.stop()
        status = daemon.stop()

    replies = [jsonlib.loads(message.payload) for message in recorder.messages]
    codes = [reply["code"] for reply in replies if reply.get("id") != "after-bad-input"]
    assert sorted(codes) == sorted(bad_payloads.values())
    assert all(not reply["ok"] and reply["message"] for reply in replies if reply.get("id") != "after-bad-input")
    assert jsonlib.loads(pong.payload)["ok"]
    assert status == 0
    log_text = log_path.read_text(encoding="utf-8")
    assert log_text.count("Rejected MQTT command") == len(bad_payloads)


def test_malformed_config_lists_every_problem(tmp_path):
    config_path = tmp_path / "bad.toml"
    config_path.write_text(
        '[box]\nsite = "bad site!"\ndevice = "box-01"\nunit = "U"\noperator = "O"\nagency_code = "H31.01"\n'
        'data_dir = "/tmp/x"\nmin_free_mb = -5\ncolour = "blue"\n'
        '[scanner]\nresolution = 5\n'
        '[signing]\npkcs11_module = "/x.so"\ntoken_label = "t"\nkey_id = "zz"\n',
        encoding="utf-8",
    )
    environment = {**os.environ, "SOHOA_LANG": "en", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "daemon")}

    result = subprocess.run(
        [sys.executable, "-m", "sohoa", "--config", str(config_path), "run"], capture_output=True, text=True, env=environment, timeout=60
    )

    assert result.returncode == 78  # EX_CONFIG
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    # The log line goes to the journal; the "Error:" message is the one staff read.
    message = output.partition("Error: ")[2]
    for key in ("box.site", "box.min_free_mb", "box.colour", "scanner.device", "scanner.resolution", "signing.key_id", "upload"):
        assert message.count(f"- {key}:") == 1, (key, message)


def test_conflicting_archive_copy_stops_document(testbed, in_process, tmp_path):
    # The archive already stores another file under the DocCode the box issues first.
    other = tmp_path / "other.pdf"
    other.write_bytes(b"%PDF-1.7\n% another document\n")
    incoming = testbed.receiver.store.incoming_path()
    shutil.copyfile(other, incoming)
    testbed.receiver.store.commit({"DocCode": "H31.01_GP_000001_V1"}, "other.pdf", incoming, "ab" * 32, other.stat().st_size)

    daemon = in_process()
    press_button(daemon)
    state = wait_for_state(daemon, lambda s: s["queue"]["failed"] == 1, JOB_TIMEOUT_SECONDS)
    assert state is not None, daemon.last_state
    assert "upload_conflict" in state["alerts"]
    journal = Journal(testbed.config().journal_path)
    job = journal.jobs_in("failed")[0]
    journal.close()
    assert job.error_code == "upload_conflict"
    assert Path(job.signed_path).exists()
    assert [record["sha256"] for record in testbed.receiver.records()] == ["ab" * 32]
