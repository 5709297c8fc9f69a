"""What starts, cancels or finishes a scan besides the panel's scan button.

Extra profile buttons and long presses on gpiozero's MockFactory; cancelling
and flatbed documents through real libsane (the SANE test backend) and a real
journal; scanner buttons and the paper sensor polled through real libsane.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sane
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from sohoa import panel as panel_module
from sohoa.config import ButtonConfig, GpioConfig, ScannerConfig, parse_config
from sohoa.errors import ScanCancelledError
from sohoa.journal import JOB_STATES, Journal
from sohoa.pipeline import CaptureRequest, Pipeline
from sohoa.recovery import open_journal
from sohoa.report.collect import read_jobs, summarize_jobs
from sohoa.scanner import SANE_LOCK, SaneStatus, Scanner, _snap_image, initialize_sane, sane_status_of
from sohoa.triggers import ScannerTriggers

TIMEOUT = 5.0
BUTTON, GREEN, RED, BUZZER, PROFILE_BUTTON = 17, 22, 27, 5, 23
# The test backend keeps option values from one open to the next within a process,
# so every test that changes one resets it (see reset_test_options).
TEST_DEVICE = "test:0"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Record calls and let a test wait for them."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self._condition = threading.Condition()

    def __call__(self, **arguments: object) -> None:
        with self._condition:
            self.calls.append(arguments)
            self._condition.notify_all()

    def wait_for(self, count: int, timeout: float = TIMEOUT) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: len(self.calls) >= count, timeout)


def box_config(tmp_path: Path, *, scanner: dict, capture: dict | None = None, profiles: dict | None = None):
    return parse_config(
        {
            "box": {
                "site": "test",
                "device": "box-01",
                "unit": "Test unit",
                "operator": "Test operator",
                "agency_code": "H31.01",
                "data_dir": str(tmp_path / "data"),
            },
            "scanner": scanner,
            "signing": {"pkcs11_module": "/nonexistent.so", "token_label": "t", "key_id": "01"},
            "upload": {"url": "http://127.0.0.1:9"},
            "capture": capture or {},
            "profiles": profiles or {},
        }
    )


def set_test_option(name: str, value: object, device_name: str = TEST_DEVICE) -> None:
    """Set a SANE option of the test backend through libsane, as another frontend would.

    It takes SANE_LOCK, so that it may run while a daemon polls the same device.
    """
    initialize_sane()
    with SANE_LOCK:
        device = sane.open(device_name)
        try:
            setattr(device, name.replace("-", "_"), value)
        finally:
            device.close()


@pytest.fixture
def reset_test_options() -> Iterator[None]:
    yield
    for name in ("bool-soft-select-soft-detect", "bool-soft-select-soft-detect-emulated"):
        set_test_option(name, False)
    set_test_option("enable-test-options", False)


# panel: profile buttons and long presses


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    previous = Device.pin_factory
    mock_factory = MockFactory()
    Device.pin_factory = mock_factory
    yield mock_factory
    mock_factory.reset()
    Device.pin_factory = previous


@pytest.fixture
def make_panel(factory: MockFactory) -> Iterator[Callable[..., panel_module.Panel]]:
    panels: list[panel_module.Panel] = []

    def make(on_press: Callable[..., None], on_long_press: Callable[[], object] | None = None, **fields: object) -> panel_module.Panel:
        config = GpioConfig(button_pin=BUTTON, green_led_pin=GREEN, red_led_pin=RED, **fields)
        created = panel_module.Panel(config, on_press, on_long_press=on_long_press, clock=FakeClock())
        panels.append(created)
        return created

    yield make
    for created in panels:
        created.close()


def press(pin) -> None:
    pin.drive_low()
    pin.drive_high()


def hold(pin, long_press_seen: threading.Event) -> None:
    """Hold ``pin`` low until gpiozero reports the long press, then release it."""
    pin.drive_low()
    try:
        assert long_press_seen.wait(TIMEOUT), "gpiozero reported no long press"
    finally:
        pin.drive_high()


def test_profile_button_passes_its_profile(make_panel, factory) -> None:
    presses = Recorder()
    make_panel(presses, buttons=[ButtonConfig(pin=PROFILE_BUTTON, profile="vanbang")])

    press(factory.pin(PROFILE_BUTTON))
    press(factory.pin(BUTTON))

    assert presses.calls == [{"profile": "vanbang"}, {}]
    assert factory.pin(PROFILE_BUTTON).pull == "up"


def test_long_press_is_not_a_press(make_panel, factory) -> None:
    presses = Recorder()
    long_press_seen = threading.Event()
    front = make_panel(presses, long_press_seen.set, long_press_seconds=0.05)

    hold(factory.pin(BUTTON), long_press_seen)

    assert presses.calls == []
    # The next short press counts again.
    front._clock.now += 1
    press(factory.pin(BUTTON))
    assert presses.calls == [{}]


def test_profile_button_hold_is_long_press(make_panel, factory) -> None:
    presses = Recorder()
    long_press_seen = threading.Event()
    make_panel(presses, long_press_seen.set, long_press_seconds=0.05, buttons=[ButtonConfig(pin=PROFILE_BUTTON, profile="vanbang")])

    hold(factory.pin(PROFILE_BUTTON), long_press_seen)

    assert presses.calls == []


def test_profile_button_on_led_pin_rejected() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"BCM pin 27 is used by red_led_pin and buttons\[0\]\.pin"):
        GpioConfig(button_pin=BUTTON, green_led_pin=GREEN, red_led_pin=RED, buttons=[ButtonConfig(pin=RED, profile="vanbang")])


def test_profile_button_on_busy_pin_is_hardware_error(make_panel) -> None:
    from sohoa.errors import HardwareError

    make_panel(lambda **_: None)
    other = GpioConfig(button_pin=24, green_led_pin=25, red_led_pin=26, buttons=[ButtonConfig(pin=RED, profile="vanbang")])

    with pytest.raises(HardwareError, match="profile vanbang") as caught:
        panel_module.Panel(other, lambda **_: None)

    assert "already in use by another device or program" in str(caught.value)
    assert "<gpiozero" not in str(caught.value)


def test_signal_cancelled_beeps_once_long(make_panel, factory, monkeypatch) -> None:
    monkeypatch.setattr(panel_module, "CANCEL_BEEP_SECONDS", 0.01)
    front = make_panel(Recorder(), buzzer_pin=BUZZER)
    buzzer_pin = factory.pin(BUZZER)
    buzzer_pin.clear_states()

    front.signal_cancelled()
    front.buzzer._blink_thread.join(TIMEOUT)
    front.red_led._blink_thread.join(TIMEOUT)

    assert [state.state for state in buzzer_pin.states] == [False, True, False]
    assert front.red_led.is_lit is False


# scanner: cancelling a batch through libsane


def test_cancel_between_pages_keeps_pages(tmp_path) -> None:
    scanner = Scanner(ScannerConfig(device=TEST_DEVICE, source="Automatic Document Feeder", mode="Gray", resolution=75))
    cancel = threading.Event()

    def on_page(page) -> None:
        if page.index == 2:
            cancel.set()

    outcome = scanner.scan_batch(tmp_path / "job", on_page=on_page, cancel=cancel)

    assert isinstance(outcome.error, ScanCancelledError)
    assert [page.index for page in outcome.pages] == [1, 2]
    assert all(page.path.is_file() for page in outcome.pages)


def test_cancel_during_read_stops_libsane(tmp_path) -> None:
    cancel = threading.Event()
    cancel.set()
    initialize_sane()
    device = sane.open(TEST_DEVICE)
    try:
        device.resolution = 75
        device.start()
        with pytest.raises(Exception) as caught:
            _snap_image(device, cancel)
        assert sane_status_of(caught.value) == SaneStatus.CANCELLED

        # The device reads a whole page again after the cancelled one.
        device.start()
        assert _snap_image(device, threading.Event()).height > 0
    finally:
        device.cancel()
        device.close()


# pipeline: cancelled jobs and flatbed documents, on a real journal


@pytest.fixture
def make_pipeline(tmp_path) -> Iterator[Callable[..., Pipeline]]:
    journals: list[Journal] = []

    def make(**config_parts: object) -> Pipeline:
        config = box_config(tmp_path, **config_parts)
        journal = Journal(config.journal_path)
        journals.append(journal)
        return Pipeline(config, journal, scanner=Scanner(config.scanner), ocr=lambda: None, signer=None, archive=None)

    yield make
    for journal in journals:
        journal.close()


FEEDER = {"device": TEST_DEVICE, "source": "Automatic Document Feeder", "mode": "Gray", "resolution": 75}
FLATBED_PROFILES = {"banggoc": {"label": "Bản gốc", "source": "Flatbed", "flatbed": True}}


def test_cancelled_scan_keeps_pages_as_cancelled_job(make_pipeline, monkeypatch) -> None:
    pipeline = make_pipeline(scanner=FEEDER)
    cancel = threading.Event()
    add_page = pipeline.journal.add_page

    def add_page_then_cancel(job_id, seq, *arguments) -> None:
        add_page(job_id, seq, *arguments)
        if seq == 3:
            cancel.set()

    monkeypatch.setattr(pipeline.journal, "add_page", add_page_then_cancel)
    result = pipeline.acquire(CaptureRequest(origin="button"), cancel=cancel)

    assert isinstance(result.error, ScanCancelledError)
    assert result.job.state == "cancelled"
    assert result.job.page_count == 3
    assert result.job.error_code == "scan_cancelled"
    assert all(Path(page.path).is_file() for page in pipeline.journal.pages(result.job.id))
    assert pipeline.journal.latest_interrupted() is None


def test_cancel_before_first_page_discards_job(make_pipeline) -> None:
    pipeline = make_pipeline(scanner=FEEDER)
    cancel = threading.Event()
    cancel.set()

    result = pipeline.acquire(CaptureRequest(), cancel=cancel)

    assert result.job is None
    assert isinstance(result.error, ScanCancelledError)
    assert sum(pipeline.journal.state_counts().values()) == 0


def test_flatbed_presses_build_one_document(make_pipeline) -> None:
    pipeline = make_pipeline(scanner=FEEDER, profiles=FLATBED_PROFILES)

    results = [pipeline.acquire(CaptureRequest(profile="banggoc")) for _ in range(3)]

    assert len({result.job.id for result in results}) == 1
    assert [result.job.page_count for result in results] == [1, 2, 3]
    assert all(result.job.state == "collecting" for result in results)
    assert pipeline.journal.open_flatbed_job().id == results[0].job.id

    finished = pipeline.finish_flatbed()
    assert finished.state == "captured"
    assert [page.seq for page in pipeline.journal.pages(finished.id)] == [1, 2, 3]
    assert pipeline.journal.open_flatbed_job() is None
    assert pipeline.finish_flatbed() is None


def test_other_profile_finishes_flatbed_first(make_pipeline) -> None:
    pipeline = make_pipeline(scanner={**FEEDER, "max_pages": 2}, profiles=FLATBED_PROFILES)
    flatbed = pipeline.acquire(CaptureRequest(profile="banggoc")).job

    feeder = pipeline.acquire(CaptureRequest()).job

    assert pipeline.journal.get_job(flatbed.id).state == "captured"
    assert feeder.id != flatbed.id
    assert feeder.profile is None
    assert pipeline.journal.open_flatbed_job() is None


def test_cancelled_flatbed_document_keeps_pages(make_pipeline) -> None:
    pipeline = make_pipeline(scanner=FEEDER, profiles=FLATBED_PROFILES)
    job = pipeline.acquire(CaptureRequest(profile="banggoc")).job
    cancel = threading.Event()
    cancel.set()

    result = pipeline.acquire(CaptureRequest(profile="banggoc"), cancel=cancel)

    assert result.job.id == job.id
    assert result.job.state == "cancelled"
    assert result.job.page_count == 1


def test_new_states_in_reports_and_recovery(make_pipeline) -> None:
    pipeline = make_pipeline(scanner=FEEDER, profiles=FLATBED_PROFILES)
    cancel = threading.Event()
    cancel.set()
    cancelled_job = pipeline.acquire(CaptureRequest(profile="banggoc")).job
    pipeline.acquire(CaptureRequest(profile="banggoc"), cancel=cancel)
    open_job = pipeline.acquire(CaptureRequest(profile="banggoc")).job
    config = pipeline.config
    pipeline.journal.close()

    assert {"collecting", "cancelled"} <= set(JOB_STATES)
    summary = summarize_jobs(read_jobs(config.journal_path), config)
    assert [entry.job_id for entry in summary.queued] == [open_job.id]
    assert summary.failed_total == 0

    journal, recovered = open_journal(config)
    try:
        assert journal.get_job(open_job.id).state == "collecting"
        assert journal.get_job(cancelled_job.id).state == "cancelled"
        assert journal.state_counts()["cancelled"] == 1
    finally:
        journal.close()


# scanner buttons and the paper sensor, polled through libsane


def make_triggers(tmp_path, request: Recorder, clock: Callable[[], float] | None = None, **capture: object) -> ScannerTriggers:
    config = box_config(
        tmp_path,
        scanner={"device": TEST_DEVICE},
        capture=capture,
        profiles={"vanbang": {"label": "Văn bằng"}},
    )
    if clock is None:
        return ScannerTriggers(config, request)
    return ScannerTriggers(config, request, clock=clock)


def test_auto_detect_finds_read_only_bools(tmp_path, reset_test_options) -> None:
    set_test_option("enable-test-options", True)
    request = Recorder()
    clock = FakeClock()
    triggers = make_triggers(tmp_path, request, clock, scanner_buttons=True, poll_seconds=1.0)

    assert triggers.poll_if_due()
    clock.now += 0.5
    assert not triggers.poll_if_due()
    clock.now += 0.5
    assert triggers.poll_if_due()

    # The test backend's only options with SANE_CAP_SOFT_DETECT and without SANE_CAP_SOFT_SELECT.
    assert [sensor.name for sensor in triggers.sensors] == ["bool-hard-select-soft-detect", "bool-soft-detect"]
    assert request.calls == []
    assert not triggers.stopped


def test_no_buttons_logged_once_then_stops(tmp_path, caplog) -> None:
    request = Recorder()
    clock = FakeClock()
    triggers = make_triggers(tmp_path, request, clock, scanner_buttons=True, auto_start=True, poll_seconds=0.1)
    caplog.set_level(logging.INFO, logger="sohoa.triggers")

    assert triggers.poll_if_due()
    clock.now += 0.05
    assert not triggers.poll_if_due()
    # Past the poll interval, but polling has stopped.
    clock.now += 1
    assert not triggers.poll_if_due()

    assert triggers.stopped
    assert sum("exposes no buttons" in record.getMessage() for record in caplog.records) == 1
    assert sum("none of the paper sensor options" in record.getMessage() for record in caplog.records) == 1
    assert request.calls == []


def test_button_rising_edge_requests_scan(tmp_path, reset_test_options) -> None:
    set_test_option("enable-test-options", True)
    request = Recorder()
    triggers = make_triggers(
        tmp_path,
        request,
        scanner_buttons=True,
        scanner_button_options=["bool-soft-select-soft-detect"],
        scanner_button_profiles={"bool-soft-select-soft-detect": "vanbang"},
    )

    # The first reading is the baseline; a value already true there starts nothing.
    set_test_option("bool-soft-select-soft-detect", True)
    assert triggers.poll() == []
    set_test_option("bool-soft-select-soft-detect", False)
    assert triggers.poll() == []
    set_test_option("bool-soft-select-soft-detect", True)
    assert [sensor.name for sensor in triggers.poll()] == ["bool-soft-select-soft-detect"]
    assert triggers.poll() == []
    set_test_option("bool-soft-select-soft-detect", False)
    triggers.poll()
    set_test_option("bool-soft-select-soft-detect", True)
    triggers.poll()

    assert request.calls == [{"profile": "vanbang", "origin": "scanner_button"}] * 2


def test_paper_sensor_rising_edge_starts_feeder_scan(tmp_path, reset_test_options) -> None:
    set_test_option("enable-test-options", True)
    request = Recorder()
    triggers = make_triggers(tmp_path, request, auto_start=True, paper_sensor_options=["page-loaded", "bool-soft-select-soft-detect-emulated"])

    assert triggers.poll() == []
    set_test_option("bool-soft-select-soft-detect-emulated", True)
    triggers.poll()

    assert [sensor.name for sensor in triggers.sensors] == ["bool-soft-select-soft-detect-emulated"]
    assert request.calls == [{"origin": "feeder"}]


def test_unknown_button_option_is_not_polled(tmp_path, caplog) -> None:
    triggers = make_triggers(tmp_path, Recorder(), scanner_buttons=True, scanner_button_options=["scan-button"])
    caplog.set_level(logging.WARNING, logger="sohoa.triggers")

    triggers.poll()

    assert triggers.stopped
    assert any("has no option scan-button" in record.getMessage() and "resolution" in record.getMessage() for record in caplog.records)


def test_unopenable_scanner_is_polled_again(tmp_path, caplog) -> None:
    config = box_config(tmp_path, scanner={"device": "test:9"}, capture={"scanner_buttons": True})
    triggers = ScannerTriggers(config, Recorder())
    caplog.set_level(logging.WARNING, logger="sohoa.triggers")

    assert triggers.poll() == []
    assert triggers.poll() == []

    assert not triggers.stopped
    assert sum("Cannot poll" in record.getMessage() for record in caplog.records) == 1


# the daemon, on the testbed: real broker, journal, SANE backends, OCR and mock pins

JOB_TIMEOUT = 300
EVENT_TOPIC = "sohoa/demo/box-01/event"
FLATBED_BUTTON = 24


def add_profile_buttons(testbed, buttons: dict[int, str]) -> None:
    """Append ``[[gpio.buttons]]`` tables to the testbed's config file."""
    tables = "".join(f'\n[[gpio.buttons]]\npin = {pin}\nprofile = "{profile}"\n' for pin, profile in buttons.items())
    with testbed.config_path.open("a", encoding="utf-8") as config_file:
        config_file.write(tables)


def event_named(name: str) -> Callable[[object], bool]:
    import json

    return lambda message: json.loads(message.payload).get("event") == name


def page_added_event(daemon) -> threading.Event:
    """Return an event set once the daemon's journal records a page."""
    added = threading.Event()
    add_page = daemon.journal.add_page

    def add_page_and_tell(*arguments) -> None:
        add_page(*arguments)
        added.set()

    daemon.journal.add_page = add_page_and_tell
    return added


def journal_jobs(testbed) -> list:
    """Return every job in the test bed's journal, oldest first."""
    journal = Journal(testbed.config().journal_path)
    try:
        return journal.jobs_in(*JOB_STATES)
    finally:
        journal.close()


@pytest.fixture
def reset_read_delay() -> Iterator[None]:
    yield
    set_test_option("read-delay", False)


def test_long_press_cancels_running_scan(reset_read_delay, testbed, start_daemon) -> None:
    import json

    from sohoa.testbed.demo import hold_button, press_button, wait_for_state
    from sohoa.testbed.mosquitto import MessageRecorder

    testbed.sections["scanner"] = {"device": TEST_DEVICE, "source": "Automatic Document Feeder", "mode": "Gray", "resolution": 75}
    # About 0.4 s a page, so the long press lands while the ten pages of the test feeder are read.
    testbed.rewrite_config("scanner.options", **{"read-delay": True, "read-delay-duration": 200000})
    testbed.rewrite_config("gpio", long_press_seconds=0.2)
    with MessageRecorder(testbed.broker.host, testbed.broker.port, EVENT_TOPIC) as recorder:
        daemon = start_daemon()
        page_added = page_added_event(daemon)
        press_button(daemon)
        assert page_added.wait(60), "no page was scanned"
        hold_button(daemon)

        message = recorder.wait_for(event_named("job_cancelled"), 60)
        event = json.loads(message.payload)
        assert wait_for_state(daemon, lambda s: s["state"] == "ready", 60) is not None

    journal = Journal(testbed.config().journal_path)
    try:
        jobs = journal.jobs_in(*JOB_STATES)
        pages = journal.pages(jobs[0].id)
    finally:
        journal.close()
    assert [job.state for job in jobs] == ["cancelled"]
    assert (event["job_id"], event["stage"], event["origin"]) == (jobs[0].id, "scanning", "button")
    assert 1 <= jobs[0].page_count < 10
    assert event["pages"] == jobs[0].page_count
    assert all(Path(page.path).is_file() for page in pages)


def test_cancel_command_cancels_running_scan(reset_read_delay, testbed, start_daemon) -> None:
    from sohoa.mqtt_commands import parse_command
    from sohoa.testbed.demo import press_button, wait_for_state

    testbed.sections["scanner"] = {"device": TEST_DEVICE, "source": "Automatic Document Feeder", "mode": "Gray", "resolution": 75}
    testbed.rewrite_config("scanner.options", **{"read-delay": True, "read-delay-duration": 200000})
    daemon = start_daemon()
    page_added = page_added_event(daemon)
    press_button(daemon)
    assert page_added.wait(60), "no page was scanned"

    reply = daemon.handle_command(parse_command(b'{"command": "cancel", "id": "c-1"}'))

    assert (reply.ok, reply.code) == (True, "cancel_requested")
    assert wait_for_state(daemon, lambda s: s["state"] == "ready", 60) is not None
    jobs = journal_jobs(testbed)
    assert [job.state for job in jobs] == ["cancelled"]
    assert 1 <= jobs[0].page_count < 10


def test_profile_button_job_cancelled_before_build(testbed, start_daemon) -> None:
    import json

    from sohoa.testbed.demo import hold_button, load_feeder, press_button, sample_pages, wait_for_state
    from sohoa.testbed.mosquitto import MessageRecorder

    load_feeder(testbed.feeder_dir, sample_pages()[:1])
    testbed.rewrite_config("profiles.vanban", label="Văn bản", mode="Gray")
    testbed.rewrite_config("gpio", long_press_seconds=0.2)
    add_profile_buttons(testbed, {PROFILE_BUTTON: "vanban"})
    with MessageRecorder(testbed.broker.host, testbed.broker.port, EVENT_TOPIC) as recorder:
        daemon = start_daemon()
        press_button(daemon, "vanban")
        assert wait_for_state(daemon, lambda s: s["stage"] == "recognizing", 60) is not None
        hold_button(daemon, "vanban")

        event = json.loads(recorder.wait_for(event_named("job_cancelled"), JOB_TIMEOUT).payload)
        state = wait_for_state(daemon, lambda s: s["stage"] == "idle", 60)
        assert state is not None

    jobs = journal_jobs(testbed)
    assert [(job.state, job.profile, job.origin) for job in jobs] == [("cancelled", "vanban", "button")]
    assert jobs[0].pdf_path is None
    assert jobs[0].signed_path is None
    # The step that was next, and did not run.
    assert (event["job_id"], event["stage"]) == (jobs[0].id, "building")
    assert state["queue"]["to_build"] == 0
    assert state["queue"]["to_sign"] == 0


def test_flatbed_presses_then_long_press_finishes(testbed, start_daemon) -> None:
    from sohoa.daemon import FLATBED_OPEN_MESSAGE
    from sohoa.i18n import gettext
    from sohoa.testbed.demo import hold_button, load_feeder, press_button, sample_pages, wait_for_state

    load_feeder(testbed.feeder_dir, sample_pages()[:2])
    testbed.rewrite_config("profiles.banggoc", label="Bản gốc", flatbed=True)
    testbed.rewrite_config("gpio", long_press_seconds=0.2)
    add_profile_buttons(testbed, {FLATBED_BUTTON: "banggoc"})
    daemon = start_daemon()

    press_button(daemon, "banggoc")
    assert wait_for_state(daemon, lambda s: (s["open_document"] or {}).get("pages") == 1 and s["stage"] == "idle", 60) is not None
    press_button(daemon, "banggoc")
    state = wait_for_state(daemon, lambda s: (s["open_document"] or {}).get("pages") == 2 and s["stage"] == "idle", 60)
    assert state is not None
    assert state["message"] == gettext(FLATBED_OPEN_MESSAGE).format(pages=2)
    assert state["open_document"]["profile"] == "banggoc"

    hold_button(daemon, "banggoc")
    state = wait_for_state(daemon, lambda s: s["open_document"] is None and s["stage"] == "recognizing", 60)
    assert state is not None, "the finished flatbed document did not go on to recognition"
    # Cancel it there, so that the test does not wait for OCR, building and signing.
    hold_button(daemon, "banggoc")
    assert wait_for_state(daemon, lambda s: s["stage"] == "idle", JOB_TIMEOUT) is not None

    jobs = journal_jobs(testbed)
    assert [(job.state, job.profile, job.page_count) for job in jobs] == [("cancelled", "banggoc", 2)]


class MessageEvent(logging.Handler):
    """A logging handler that sets an event when a record contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


def test_daemon_stops_polling_scanner_without_buttons(testbed, start_daemon, caplog) -> None:
    testbed.rewrite_config("capture", scanner_buttons=True, poll_seconds=0.1)
    caplog.set_level(logging.INFO, logger="sohoa.triggers")
    handler = MessageEvent("Polling of scanner pnm:0 stopped")
    logging.getLogger("sohoa.triggers").addHandler(handler)
    try:
        daemon = start_daemon()
        assert handler.seen.wait(30), "the daemon did not poll the scanner"
    finally:
        logging.getLogger("sohoa.triggers").removeHandler(handler)
    assert daemon._triggers.stopped
    assert daemon._worker_wait_seconds() == 0.1


def test_scanner_button_starts_daemon_scan(reset_test_options, testbed, start_daemon, caplog) -> None:
    from sohoa.testbed.demo import wait_for_state

    testbed.sections["scanner"] = {"device": TEST_DEVICE, "source": "Automatic Document Feeder", "mode": "Gray", "resolution": 75, "max_pages": 2}
    testbed.rewrite_config("profiles.vanban", label="Văn bản")
    testbed.rewrite_config(
        "capture",
        scanner_buttons=True,
        poll_seconds=0.1,
        scanner_button_options=["bool-soft-select-soft-detect"],
    )
    testbed.rewrite_config("capture.scanner_button_profiles", **{"bool-soft-select-soft-detect": "vanban"})
    set_test_option("enable-test-options", True)
    caplog.set_level(logging.INFO, logger="sohoa.triggers")
    baseline = MessageEvent("Polling scanner test:0 every")
    logging.getLogger("sohoa.triggers").addHandler(baseline)
    try:
        daemon = start_daemon()
        assert baseline.seen.wait(30), "the daemon did not poll the scanner"
        set_test_option("bool-soft-select-soft-detect", True)
        # The test feeder contains ten pages, so max_pages = 2 leaves the job interrupted, before OCR.
        assert wait_for_state(daemon, lambda s: s["queue"]["interrupted"] == 1, 60) is not None
    finally:
        logging.getLogger("sohoa.triggers").removeHandler(baseline)

    jobs = journal_jobs(testbed)
    assert [(job.profile, job.origin, job.page_count) for job in jobs] == [("vanban", "scanner_button", 2)]
