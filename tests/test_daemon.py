"""Daemon behaviour around the scan: resuming after a jam, an empty feeder, the
disk reserve and the panel's LEDs, on the same real components as the main job."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


from sohoa.journal import Journal
from sohoa.testbed.demo import load_feeder, press_button, sample_pages, wait_for_state
from sohoa.testbed.legal import add_key, issue_unit_identity
from sohoa.testbed.softhsm import create_test_token

JOB_TIMEOUT = 300


def journal_of(testbed) -> Journal:
    return Journal(testbed.config().journal_path)


def test_press_after_jam_continues_document(testbed, start_daemon):
    decision, licence = sample_pages("quyet-dinh"), sample_pages("giay-phep")
    load_feeder(testbed.feeder_dir, decision + licence, jam_at=len(decision) + 1)
    daemon = start_daemon()
    press_button(daemon)
    assert wait_for_state(daemon, lambda s: s["queue"]["interrupted"] == 1, 60) is not None

    load_feeder(testbed.feeder_dir, licence)
    press_button(daemon)
    state = wait_for_state(daemon, lambda s: s["totals"]["documents_uploaded"] == 1, JOB_TIMEOUT)
    assert state is not None, "the continued document did not reach the archive"

    journal = journal_of(testbed)
    jobs = journal.jobs_in("uploaded")
    assert len(jobs) == 1
    pages = journal.pages(jobs[0].id)
    journal.close()
    assert [page.seq for page in pages] == [1, 2, 3]
    assert len({page.path for page in pages}) == 3
    assert state["alerts"] == []


def test_empty_feeder_makes_no_job(testbed, start_daemon):
    load_feeder(testbed.feeder_dir, [])
    daemon = start_daemon()
    press_button(daemon)
    state = wait_for_state(daemon, lambda s: s["last_error"] is not None, 60)
    assert state is not None
    assert state["last_error"]["code"] == "feeder_empty"
    journal = journal_of(testbed)
    counts = journal.state_counts()
    journal.close()
    assert sum(counts.values()) == 0


def test_empty_press_finishes_interrupted_job(testbed, start_daemon):
    load_feeder(testbed.feeder_dir, sample_pages("quyet-dinh"), jam_at=2)
    daemon = start_daemon()
    press_button(daemon)
    assert wait_for_state(daemon, lambda s: s["queue"]["interrupted"] == 1, 60) is not None

    load_feeder(testbed.feeder_dir, [])
    press_button(daemon)
    state = wait_for_state(daemon, lambda s: s["totals"]["documents_uploaded"] == 1, JOB_TIMEOUT)
    assert state is not None
    journal = journal_of(testbed)
    job = journal.jobs_in("uploaded")[0]
    journal.close()
    assert job.page_count == 1


def test_disk_reserve_refuses_new_scan(testbed, start_daemon):
    testbed.rewrite_config("box", min_free_mb=10**9)
    daemon = start_daemon()
    press_button(daemon)
    state = wait_for_state(daemon, lambda s: s["state"] == "alert", 60)
    assert state is not None
    assert state["last_error"]["code"] == "disk_full"
    assert "MB" in state["message"]
    journal = journal_of(testbed)
    counts = journal.state_counts()
    journal.close()
    assert sum(counts.values()) == 0
    assert len(list(Path(testbed.feeder_dir).iterdir())) == len(sample_pages())


def test_panel_shows_idle_then_error(testbed, start_daemon):
    daemon = start_daemon()
    assert wait_for_state(daemon, lambda s: s["state"] == "ready", 10) is not None
    assert daemon.panel.green_led.is_lit
    assert not daemon.panel.red_led.is_lit

    testbed.rewrite_config("box", min_free_mb=10**9)
    daemon.config = testbed.config()
    press_button(daemon)
    assert wait_for_state(daemon, lambda s: s["state"] == "alert", 60) is not None
    assert daemon.panel.red_led.is_lit
    assert not daemon.panel.green_led.is_lit


def test_scan_with_profile_records_profile_and_origin(testbed, start_daemon):
    testbed.rewrite_config("profiles.vanban", label="Văn bản", mode="Gray")
    daemon = start_daemon()
    daemon.request_scan(profile="vanban", origin="mqtt")
    state = wait_for_state(daemon, lambda s: s["totals"]["documents_uploaded"] == 1, JOB_TIMEOUT)
    assert state is not None

    journal = journal_of(testbed)
    job = journal.jobs_in("uploaded")[0]
    pages = journal.pages(job.id)
    journal.close()
    assert (job.profile, job.origin) == ("vanban", "mqtt")
    assert all(Image.open(page.path).mode == "L" for page in pages)


def test_unknown_profile_raises_alert(testbed, start_daemon):
    daemon = start_daemon()
    daemon.request_scan(profile="missing")
    state = wait_for_state(daemon, lambda s: s["last_error"] is not None, 60)
    assert state is not None
    assert state["last_error"]["code"] == "config_invalid"
    journal = journal_of(testbed)
    counts = journal.state_counts()
    journal.close()
    assert sum(counts.values()) == 0
def test_missing_unit_token_alert_at_start(testbed, start_daemon, tmp_path):
    testbed.rewrite_config(
        "signing", unit_key_id="0c", unit_token_label="sohoa-unit", unit_pin_env=testbed.sections["signing"]["pin_env"]
    )

    daemon = start_daemon()

    # start() probes the unit's token before it returns, so the first published state carries the alert.
    state = daemon.last_state
    assert state["state"] == "alert"
    assert state["alert_code"] == "token_missing"
    assert state["alerts"] == ["token_missing"]
    assert daemon._panel_status(state) == "attention"

    # Plugging a token with that label in clears the alert at the next probe.
    create_test_token(testbed.token.folder, issue_unit_identity(testbed.pki, tmp_path / "unit"), label="sohoa-unit", pin=testbed.token.pin, key_id="0c")
    cleared = wait_for_state(daemon, lambda s: s["state"] == "ready", 30)
    assert cleared is not None, "the alert did not clear once the unit's token was present"
    assert cleared["alerts"] == []


def test_wrong_unit_key_alert_at_start(testbed, start_daemon, tmp_path):
    testbed.rewrite_config("signing", unit_key_id="7f")

    daemon = start_daemon()

    assert daemon.last_state["alert_code"] == "key_not_found"
    add_key(testbed.token, issue_unit_identity(testbed.pki, tmp_path / "unit"), "7f", "unit")
    cleared = wait_for_state(daemon, lambda s: s["alert_code"] is None, 30)
    assert cleared is not None, "the alert did not clear once the unit's key was on the token"


def test_no_unit_probe_without_unit_key(testbed, start_daemon):
    daemon = start_daemon()

    assert daemon.last_state["state"] == "ready"
    assert daemon.last_state["alerts"] == []


def test_rejected_upload_fails_after_limit(testbed, start_daemon):
    testbed.rewrite_config("upload", max_rejections=2, retry_max_seconds=1.0)
    testbed.receiver.fail_next(5, 400)
    daemon = start_daemon()

    press_button(daemon)
    state = wait_for_state(daemon, lambda s: s["queue"]["failed"] == 1, JOB_TIMEOUT)

    assert state is not None, daemon.last_state
    assert state["queue"]["to_upload"] == 0
    assert "upload_rejected" in state["alerts"]
    assert state["state"] == "alert"
    journal = journal_of(testbed)
    (job,) = journal.jobs_in("failed")
    journal.close()
    assert job.error_code == "upload_rejected"
    assert job.upload_rejections == 2
    assert "HTTP 400" in job.error_message
    assert Path(job.signed_path).exists()
    assert testbed.receiver.records() == []


def test_rejected_upload_retried_within_limit(testbed, start_daemon):
    testbed.rewrite_config("upload", max_rejections=3, retry_max_seconds=1.0)
    testbed.receiver.fail_next(1, 413)
    daemon = start_daemon()

    press_button(daemon)
    state = wait_for_state(daemon, lambda s: s["totals"]["documents_uploaded"] == 1, JOB_TIMEOUT)

    assert state is not None, daemon.last_state
    journal = journal_of(testbed)
    (job,) = journal.jobs_in("uploaded")
    journal.close()
    assert job.upload_rejections == 1
    assert job.error_code is None
    assert len(testbed.receiver.records()) == 1


def test_rejected_token_not_counted(testbed, start_daemon):
    testbed.rewrite_config("upload", max_rejections=2, retry_max_seconds=1.0)
    testbed.receiver.fail_next(3, 401)
    daemon = start_daemon()

    press_button(daemon)
    rejected = wait_for_state(daemon, lambda s: "upload_settings_invalid" in s["alerts"], JOB_TIMEOUT)
    state = wait_for_state(daemon, lambda s: s["totals"]["documents_uploaded"] == 1, JOB_TIMEOUT)

    assert rejected is not None, daemon.last_state
    assert state is not None, daemon.last_state
    assert state["queue"]["failed"] == 0
    assert state["alerts"] == []
    journal = journal_of(testbed)
    (job,) = journal.jobs_in("uploaded")
    journal.close()
    assert job.upload_rejections == 0
