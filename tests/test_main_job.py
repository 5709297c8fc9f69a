"""The main job end to end, with every part real: libsane's pnm backend feeding the
sample pages, the ONNX OCR models, a SoftHSM2 token, mosquitto and the reference
archive on 127.0.0.1, and gpiozero's mock pins for the panel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import unicodedata
from pathlib import Path


from sohoa.app import build_daemon
from sohoa.journal import Journal
from sohoa.signing import verify_pdf
from sohoa.testbed.demo import build_testbed, load_feeder, press_button, sample_pages, wait_for_state
from sohoa.testbed.mosquitto import MessageRecorder

REPO = Path(__file__).resolve().parents[1]
JOB_TIMEOUT = 600


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def uploaded_jobs(testbed):
    journal = Journal(testbed.config().journal_path)
    try:
        return journal.jobs_in("uploaded")
    finally:
        journal.close()


def test_button_press_reaches_archive(testbed, start_daemon):
    recorder = MessageRecorder(testbed.broker.host, testbed.broker.port, "sohoa/demo/box-01/#")
    try:
        daemon = start_daemon()
        recorder.wait_for(lambda m: m.topic.endswith("/availability") and m.payload == b"online", timeout=10)
        press_button(daemon)
        press_button(daemon)  # a second press while the first job runs must not start another job
        state = wait_for_state(daemon, lambda s: s["totals"]["documents_uploaded"] >= 1 or s["state"] == "alert", JOB_TIMEOUT)
        assert state is not None, "no document reached the archive in time"
        assert state["state"] != "alert", state

        jobs = uploaded_jobs(testbed)
        assert len(jobs) == 1
        job = jobs[0]
        assert job.page_count == len(sample_pages())

        records = testbed.receiver.records()
        assert [record["DocCode"] for record in records] == [job.doc_code]
        assert records[0]["sha256"] == job.sha256
        assert job.receipt["sha256"] == job.sha256

        text = _fold(subprocess.run(["pdftotext", job.signed_path, "-"], capture_output=True, text=True, check=True).stdout)
        for phrase in ("cộng hòa xã hội chủ nghĩa việt nam", "quyết định", "độc lập - tự do - hạnh phúc"):
            assert _fold(phrase) in text, phrase

        result = verify_pdf(Path(job.signed_path), [testbed.pki.ca_cert_path])
        assert result.valid
        assert result.intact
        assert result.trusted

        recorder.wait_for(lambda m: m.topic.endswith("/state") and json.loads(m.payload)["stage"] == "scanning", timeout=5)
        recorder.wait_for(lambda m: m.topic.endswith("/state") and json.loads(m.payload)["stage"] == "signing", timeout=5)
        recorder.wait_for(lambda m: m.topic.endswith("/event") and json.loads(m.payload).get("event") == "job_uploaded", timeout=5)
    finally:
        recorder.stop()


def test_jam_keeps_scanned_pages(testbed, start_daemon):
    pages = sample_pages("quyet-dinh") + sample_pages("giay-phep")
    load_feeder(testbed.feeder_dir, pages, jam_at=3)
    daemon = start_daemon()
    press_button(daemon)
    state = wait_for_state(daemon, lambda s: s["state"] == "alert", 120)
    assert state is not None
    assert state["last_error"]["code"] == "paper_jam"
    assert state["queue"]["interrupted"] == 1
    assert "kẹt giấy" in state["message"].lower()

    journal = Journal(testbed.config().journal_path)
    job = journal.jobs_in("interrupted")[0]
    kept = journal.pages(job.id)
    journal.close()
    assert [page.seq for page in kept] == [1, 2]
    assert all(Path(page.path).exists() for page in kept)


def test_unreachable_archive_uploads_later(tmp_path):
    with build_testbed(tmp_path / "bed", start_receiver=False) as bed:
        daemon = build_daemon(bed.config())
        daemon.start()
        try:
            press_button(daemon)
            state = wait_for_state(daemon, lambda s: s["queue"]["to_upload"] == 1 and s["archive_reachable"] is False, JOB_TIMEOUT)
            assert state is not None, "the signed document was not queued for upload"
            assert state["last_error"]["code"] == "archive_unreachable"
            assert bed.receiver.records() == []

            bed.receiver.start()
            state = wait_for_state(daemon, lambda s: s["totals"]["documents_uploaded"] == 1, 60)
            assert state is not None, "the queued document was not uploaded once the archive came back"
            assert len(bed.receiver.records()) == 1
        finally:
            daemon.stop()


def test_missing_token_waits_unsigned(testbed, start_daemon):
    testbed.rewrite_config("signing", token_label="no-such-token")
    daemon = start_daemon()
    press_button(daemon)
    state = wait_for_state(daemon, lambda s: s["queue"]["to_sign"] == 1 and s["state"] == "alert", JOB_TIMEOUT)
    assert state is not None, "the document did not wait for the token"
    assert state["last_error"]["code"] == "token_missing"
    assert "token" in state["message"].lower()

    journal = Journal(testbed.config().journal_path)
    job = journal.jobs_in("built")[0]
    journal.close()
    assert job.signed_path is None
    assert Path(job.pdf_path).exists()
    assert testbed.receiver.records() == []


def test_killed_daemon_leaves_offline_will(testbed):
    recorder = MessageRecorder(testbed.broker.host, testbed.broker.port, "sohoa/demo/box-01/availability")
    env = {**os.environ, **testbed.env, "PYTHONPATH": str(REPO / "daemon")}
    process = subprocess.Popen(
        [sys.executable, "-m", "sohoa", "--config", str(testbed.config_path), "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        recorder.wait_for(lambda m: m.payload == b"online", timeout=30)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        message = recorder.wait_for(lambda m: m.payload == b"offline", timeout=60)
        assert message.retain or message.payload == b"offline"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        recorder.stop()
