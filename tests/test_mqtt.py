"""StatusReporter against a real mosquitto broker on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sohoa import mqtt
from sohoa.config import BoxConfig, MqttConfig
from sohoa.errors import ConfigError, MqttError
from sohoa.mqtt import StatusReporter
from sohoa.testbed.mosquitto import (
    Broker,
    MessageRecorder,
    create_broker_certificates,
    free_port,
    start_mosquitto,
    write_password_file,
)

DAEMON_DIR = Path(__file__).resolve().parents[1] / "daemon"
TIMEOUT = 15.0

VIETNAMESE_STATE = {
    "state": "ready",
    "stage": None,
    "queue": {"pending": 0, "uploading": 1},
    "last_error": {"code": "archive_unreachable", "message": "Không kết nối được kho lưu trữ"},
    "message": "Sẵn sàng quét. Đặt tài liệu vào khay và nhấn nút xanh.",
    "heartbeat": "2026-12-04T21:30:00+07:00",
    "session": 3,
}


class LogWatcher(logging.Handler):
    """Collect the records of one logger and let a test wait for a matching one."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._condition = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._condition:
            self.records.append(record)
            self._condition.notify_all()

    def wait_for(self, predicate: Callable[[logging.LogRecord], bool], timeout: float) -> logging.LogRecord:
        def find() -> logging.LogRecord | None:
            return next((record for record in self.records if predicate(record)), None)

        with self._condition:
            found = self._condition.wait_for(find, timeout)
        assert found is not None, f"no matching log record within {timeout} s: {[r.getMessage() for r in self.records]}"
        return found

    def messages(self, level: int) -> list[str]:
        with self._condition:
            return [record.getMessage() for record in self.records if record.levelno == level]


@pytest.fixture
def box(tmp_path: Path) -> BoxConfig:
    return BoxConfig(
        site="so-gd-dt",
        device="box-01",
        unit="Sở Giáo dục và Đào tạo",
        operator="Nguyễn Văn An",
        agency_code="000.00.01.H01",
        data_dir=tmp_path / "data",
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with start_mosquitto(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def log_watcher() -> Iterator[LogWatcher]:
    logger = logging.getLogger("sohoa.mqtt")
    watcher = LogWatcher()
    previous_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(watcher)
    yield watcher
    logger.removeHandler(watcher)
    logger.setLevel(previous_level)


@pytest.fixture
def make_reporter(box: BoxConfig) -> Iterator[Callable[..., StatusReporter]]:
    reporters: list[StatusReporter] = []

    def make(port: int, client_id: str = "sohoa-test", **mqtt_fields: object) -> StatusReporter:
        reporter = StatusReporter(MqttConfig(host="127.0.0.1", port=port, **mqtt_fields), box, client_id=client_id)
        reporters.append(reporter)
        return reporter

    yield make
    for reporter in reporters:
        reporter.stop()


@pytest.fixture
def make_recorder() -> Iterator[Callable[..., MessageRecorder]]:
    recorders: list[MessageRecorder] = []

    def make(port: int, topic: str, **options: object) -> MessageRecorder:
        recorder = MessageRecorder("127.0.0.1", port, topic, **options)
        recorders.append(recorder)
        return recorder

    yield make
    for recorder in recorders:
        recorder.stop()


def retained_payload(port: int, topic: str) -> bytes:
    """Subscribe afresh and return the retained payload of ``topic``."""
    with MessageRecorder("127.0.0.1", port, topic) as recorder:
        return recorder.wait_for(lambda message: message.retain, TIMEOUT).payload


def test_topics_from_config(make_reporter: Callable[..., StatusReporter]) -> None:
    reporter = make_reporter(1883)

    assert reporter.availability_topic == "sohoa/so-gd-dt/box-01/availability"
    assert reporter.state_topic == "sohoa/so-gd-dt/box-01/state"
    assert reporter.event_topic == "sohoa/so-gd-dt/box-01/event"


def test_online_retained_on_connect(broker: Broker, make_reporter: Callable[..., StatusReporter]) -> None:
    reporter = make_reporter(broker.port)
    reporter.start()

    assert reporter.wait_connected(TIMEOUT)
    assert reporter.connected
    assert retained_payload(broker.port, reporter.availability_topic) == b"online"


def test_state_retained_as_utf8_json(broker: Broker, make_reporter: Callable[..., StatusReporter]) -> None:
    reporter = make_reporter(broker.port)
    reporter.start()
    assert reporter.wait_connected(TIMEOUT)

    reporter.publish_state(VIETNAMESE_STATE)
    payload = retained_payload(broker.port, reporter.state_topic)

    # The reporter replaces the daemon's session with the number of the current connection.
    assert json.loads(payload.decode("utf-8")) == {**VIETNAMESE_STATE, "session": 1}
    assert "Sẵn sàng quét".encode() in payload


def test_state_not_serializable_raises(make_reporter: Callable[..., StatusReporter]) -> None:
    reporter = make_reporter(1883)

    with pytest.raises(MqttError, match="state"):
        reporter.publish_state({"heartbeat": object()})


def test_will_published_when_process_killed(broker: Broker, box: BoxConfig, make_recorder: Callable[..., MessageRecorder]) -> None:
    script = (
        "import sys\n"
        "from sohoa.config import BoxConfig, MqttConfig\n"
        "from sohoa.mqtt import StatusReporter\n"
        "box = BoxConfig.model_validate_json(sys.argv[1])\n"
        "reporter = StatusReporter(MqttConfig(host='127.0.0.1', port=int(sys.argv[2])), box, client_id='sohoa-killed')\n"
        "reporter.start()\n"
        "print('connected' if reporter.wait_connected(10) else 'not connected', flush=True)\n"
        "sys.stdin.read()\n"
    )
    recorder = make_recorder(broker.port, "sohoa/so-gd-dt/box-01/availability")
    environment = {**os.environ, "PYTHONPATH": str(DAEMON_DIR)}
    child = subprocess.Popen(
        [sys.executable, "-c", script, box.model_dump_json(), str(broker.port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=environment,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "connected"
        recorder.wait_for(lambda message: message.payload == b"online", TIMEOUT)

        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=TIMEOUT)
        recorder.wait_for(lambda message: message.payload == b"offline", TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=TIMEOUT)

    assert retained_payload(broker.port, "sohoa/so-gd-dt/box-01/availability") == b"offline"


def test_stop_publishes_offline_before_disconnect(broker: Broker, make_reporter: Callable[..., StatusReporter]) -> None:
    reporter = make_reporter(broker.port, client_id="sohoa-stopping")
    reporter.start()
    assert reporter.wait_connected(TIMEOUT)

    reporter.stop()

    assert not reporter.connected
    assert retained_payload(broker.port, reporter.availability_topic) == b"offline"
    # A clean DISCONNECT discards the will, so this offline is the reporter's own publish.
    log_lines = broker.log_text().splitlines()
    offline_line = next(i for i, line in enumerate(log_lines) if "Received PUBLISH from sohoa-stopping" in line and "(7 bytes)" in line)
    disconnect_line = next(i for i, line in enumerate(log_lines) if "Received DISCONNECT from sohoa-stopping" in line)
    assert offline_line < disconnect_line


def test_broker_restart_republishes_online_and_state(
    broker: Broker, make_reporter: Callable[..., StatusReporter], make_recorder: Callable[..., MessageRecorder]
) -> None:
    reporter = make_reporter(broker.port)
    reporter.start()
    assert reporter.wait_connected(TIMEOUT)
    reporter.publish_state(VIETNAMESE_STATE)
    recorder = make_recorder(broker.port, "sohoa/so-gd-dt/box-01/+")
    recorder.wait_for(lambda message: message.topic == reporter.state_topic, TIMEOUT)

    # The broker runs without persistence, so after the restart it holds
    # only what the reporter publishes again.
    recorder.clear()
    broker.restart()

    recorder.wait_for(lambda message: message.topic == reporter.availability_topic and message.payload == b"online", TIMEOUT)
    recorder.wait_for(lambda message: message.topic == reporter.state_topic, TIMEOUT)
    assert reporter.wait_connected(TIMEOUT)
    assert retained_payload(broker.port, reporter.availability_topic) == b"online"
    assert json.loads(retained_payload(broker.port, reporter.state_topic)) == {**VIETNAMESE_STATE, "session": 2}
    assert reporter.session == 2


def test_start_with_broker_down_connects_later(tmp_path: Path, make_reporter: Callable[..., StatusReporter]) -> None:
    port = free_port()
    reporter = make_reporter(port)

    started_at = time.monotonic()
    reporter.start()
    assert time.monotonic() - started_at < 1.0
    assert not reporter.connected

    with start_mosquitto(tmp_path / "late-broker", port) as late_broker:
        assert reporter.wait_connected(TIMEOUT)
        assert retained_payload(late_broker.port, reporter.availability_topic) == b"online"
        reporter.stop()


def test_password_login_connects(tmp_path: Path, make_reporter: Callable[..., StatusReporter]) -> None:
    broker_passwords = write_password_file(tmp_path / "mosquitto.passwd", "sohoa", "đúng-mật-khẩu")
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("đúng-mật-khẩu\n", encoding="utf-8")

    with start_mosquitto(tmp_path / "broker", password_file=broker_passwords) as protected:
        reporter = make_reporter(protected.port, username="sohoa", password_file=password_file)
        reporter.start()
        assert reporter.wait_connected(TIMEOUT)
        assert reporter.fatal_error is None
        reporter.stop()


def test_bad_password_stops_reconnecting(
    tmp_path: Path, make_reporter: Callable[..., StatusReporter], log_watcher: LogWatcher
) -> None:
    broker_passwords = write_password_file(tmp_path / "mosquitto.passwd", "sohoa", "right-password")
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("wrong-password\n", encoding="utf-8")

    with start_mosquitto(tmp_path / "broker", password_file=broker_passwords) as protected:
        reporter = make_reporter(protected.port, client_id="sohoa-bad-login", username="sohoa", password_file=password_file)
        reporter.start()
        log_watcher.wait_for(lambda record: record.levelno == logging.ERROR, TIMEOUT)

        # paho's network thread ends once the reporter gives up; after that no
        # further connection attempt can happen.
        network_threads = [thread for thread in threading.enumerate() if thread.name == "paho-mqtt-client-sohoa-bad-login"]
        for thread in network_threads:
            thread.join(TIMEOUT)
            assert not thread.is_alive()

        assert not reporter.connected
        assert not reporter.wait_connected(0.1)
        assert isinstance(reporter.fatal_error, MqttError)
        assert "rejected the login of user sohoa" in log_watcher.messages(logging.ERROR)[0]
        assert "wrong-password" not in "\n".join(log_watcher.messages(logging.DEBUG) + log_watcher.messages(logging.ERROR))
        assert protected.count_connect_attempts() == 1


def test_events_while_offline_sent_after_reconnect(
    tmp_path: Path, make_reporter: Callable[..., StatusReporter], make_recorder: Callable[..., MessageRecorder], log_watcher: LogWatcher
) -> None:
    with start_mosquitto(tmp_path / "broker", persistence=True) as persistent:
        reporter = make_reporter(persistent.port)
        # A persistent session keeps the subscription over the broker restart
        # and queues the events until the recorder is back.
        recorder = make_recorder(persistent.port, reporter.event_topic, client_id="event-recorder", clean_session=False)
        reporter.start()
        assert reporter.wait_connected(TIMEOUT)
        reporter.publish_event("job_finished", {"job": "J-1"})
        recorder.wait_for(lambda message: json.loads(message.payload)["job"] == "J-1", TIMEOUT)

        persistent.stop()
        log_watcher.wait_for(lambda record: record.getMessage().startswith("Lost the connection"), TIMEOUT)
        assert not reporter.connected
        reporter.publish_event("upload_failed", {"job": "J-2", "message": "Không tải lên được"})
        reporter.publish_event("job_failed", {"job": "J-3"})
        persistent.restart()

        second = recorder.wait_for(lambda message: json.loads(message.payload)["job"] == "J-2", TIMEOUT)
        third = recorder.wait_for(lambda message: json.loads(message.payload)["job"] == "J-3", TIMEOUT)
        assert json.loads(second.payload)["event"] == "upload_failed"
        assert json.loads(second.payload)["message"] == "Không tải lên được"
        assert not second.retain
        assert json.loads(third.payload)["event"] == "job_failed"
        assert "time" in json.loads(third.payload)
        reporter.stop()


def test_offline_event_queue_drops_oldest(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_reporter: Callable[..., StatusReporter],
    make_recorder: Callable[..., MessageRecorder],
    log_watcher: LogWatcher,
) -> None:
    monkeypatch.setattr(mqtt, "MAX_QUEUED_EVENTS", 3)
    port = free_port()
    reporter = make_reporter(port)
    for number in range(5):
        reporter.publish_event("job_finished", {"number": number})

    with start_mosquitto(tmp_path / "broker", port):
        recorder = make_recorder(port, reporter.event_topic)
        reporter.start()
        recorder.wait_for(lambda message: json.loads(message.payload)["number"] == 4, TIMEOUT)
        reporter.stop()

    numbers = [json.loads(message.payload)["number"] for message in recorder.messages]
    assert numbers == [2, 3, 4]
    warnings = log_watcher.messages(logging.WARNING)
    assert any("Dropped the 2 oldest MQTT events" in message for message in warnings)


def test_offline_states_keep_only_latest(tmp_path: Path, make_reporter: Callable[..., StatusReporter]) -> None:
    port = free_port()
    reporter = make_reporter(port)
    for number in range(3):
        reporter.publish_state({"state": "busy", "number": number})

    with start_mosquitto(tmp_path / "broker", port) as late_broker:
        reporter.start()
        assert reporter.wait_connected(TIMEOUT)
        assert json.loads(retained_payload(port, reporter.state_topic)) == {"state": "busy", "number": 2, "session": 1}
        reporter.stop()

    state_publishes = [line for line in late_broker.log_text().splitlines() if "Received PUBLISH" in line and "/state'" in line]
    assert len(state_publishes) == 1


def test_tls_connects_with_broker_ca(tmp_path: Path, make_reporter: Callable[..., StatusReporter]) -> None:
    with start_mosquitto(tmp_path / "broker", tls=True) as tls_broker:
        reporter = make_reporter(tls_broker.port, tls=True, ca_file=tls_broker.ca_file)
        reporter.start()

        assert reporter.wait_connected(TIMEOUT)
        reporter.stop()


def test_tls_untrusted_ca_not_connected(
    tmp_path: Path, make_reporter: Callable[..., StatusReporter], log_watcher: LogWatcher
) -> None:
    other_ca = create_broker_certificates(tmp_path / "other-ca").ca_file
    with start_mosquitto(tmp_path / "broker", tls=True) as tls_broker:
        reporter = make_reporter(tls_broker.port, tls=True, ca_file=other_ca)
        reporter.start()

        log_watcher.wait_for(lambda record: record.getMessage().startswith("Cannot connect to MQTT broker"), TIMEOUT)
        assert not reporter.connected
        reporter.stop()


def test_tls_missing_ca_file_raises(tmp_path: Path, make_reporter: Callable[..., StatusReporter]) -> None:
    missing = tmp_path / "missing-ca.pem"

    with pytest.raises(MqttError, match="missing-ca.pem"):
        make_reporter(8883, tls=True, ca_file=missing)


def test_password_without_username_raises(tmp_path: Path, make_reporter: Callable[..., StatusReporter]) -> None:
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("secret\n", encoding="utf-8")

    with pytest.raises(ConfigError, match="mqtt.username"):
        make_reporter(1883, password_file=password_file)
