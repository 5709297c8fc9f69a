"""The fleet monitor, Home Assistant discovery and MQTT commands against a real mosquitto on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sohoa import cli, monitor
from sohoa.config import BoxConfig, MqttConfig
from sohoa.errors import MqttError
from sohoa.monitor import FleetMonitor
from sohoa.mqtt import StatusReporter
from sohoa.mqtt_commands import Command, CommandReply, RateLimiter
from sohoa.mqtt_discovery import ENTITIES
from sohoa.report import BoxSummary
from sohoa.testbed.mosquitto import Broker, MessageRecorder, start_mosquitto, write_password_file

DAEMON_DIR = Path(__file__).resolve().parents[1] / "daemon"
TIMEOUT = 15.0

# A box in its own process, so that the test can SIGKILL it: it publishes a
# fresh state, prints "up" and waits until it is killed.
BOX_SCRIPT = """
import sys, threading
from datetime import datetime, timezone
from sohoa.config import BoxConfig, MqttConfig
from sohoa.mqtt import StatusReporter

port = int(sys.argv[1])
box = BoxConfig(site="so-gd-dt", device="box-kill", unit="U", operator="O", agency_code="A", data_dir=sys.argv[2])
reporter = StatusReporter(MqttConfig(port=port, keepalive_seconds=5), box)
reporter.start()
if not reporter.wait_connected(15):
    sys.exit(1)
reporter.publish_state({"state": "ready", "heartbeat": datetime.now(timezone.utc).isoformat(timespec="seconds"), "heartbeat_seconds": 60})
print("up", flush=True)
threading.Event().wait()
"""


def fresh_state(**changes: object) -> dict:
    state = {
        "state": "ready",
        "message": "Sẵn sàng: đặt giấy vào khay và nhấn nút.",
        "alert_code": None,
        "queue": {"interrupted": 0, "to_recognize": 1, "to_build": 0, "to_sign": 0, "to_upload": 2, "failed": 1},
        "last_error": None,
        "digitized": {"documents_today": 3, "pages_today": 12, "documents_total": 40, "pages_total": 160},
        "disk_free_mb": 5120,
        "cpu_temperature_c": 48.3,
        "version": "0.1.0",
        "heartbeat": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "heartbeat_seconds": 60,
    }
    state.update(changes)
    return state


def box_config(tmp_path: Path, device: str = "box-01") -> BoxConfig:
    return BoxConfig(
        site="so-gd-dt", device=device, unit="Sở Giáo dục và Đào tạo", operator="Nguyễn Văn An", agency_code="H31.01", data_dir=tmp_path / "data"
    )


def publish_retained(port: int, messages: list[tuple[str, bytes]]) -> None:
    """Publish retained messages with QoS 1 from a short-lived client and disconnect cleanly (no will)."""
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1, retain=True) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=TIMEOUT)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def row_of(fleet: FleetMonitor, box: str) -> monitor.BoxRow | None:
    return next((row for row in fleet.rows() if row.box == box), None)


def has_record(site: str, device: str, predicate: Callable[[monitor.BoxRecord], bool]) -> Callable[[FleetMonitor], bool]:
    def check(fleet: FleetMonitor) -> bool:
        record = fleet.records_unlocked().get((site, device))
        return record is not None and predicate(record)

    return check


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with start_mosquitto(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def make_monitor() -> Iterator[Callable[..., FleetMonitor]]:
    started: list[FleetMonitor] = []

    def make(port: int, **options: object) -> FleetMonitor:
        fleet = FleetMonitor(MqttConfig(port=port, **options))
        fleet.start()
        started.append(fleet)
        return fleet

    yield make
    for fleet in started:
        fleet.stop()


@pytest.fixture
def make_reporter() -> Iterator[Callable[..., StatusReporter]]:
    started: list[StatusReporter] = []

    def make(box: BoxConfig, **options: object) -> StatusReporter:
        reporter = StatusReporter(MqttConfig(**options), box)
        started.append(reporter)
        return reporter

    yield make
    for reporter in started:
        reporter.stop()


def run_monitor_cli(port: int, *options: str, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    status = cli.main(["--lang", "en", "monitor", "--broker", f"127.0.0.1:{port}", "--once", "--wait", str(TIMEOUT), *options])
    return status, capsys.readouterr().out


# Status rules, without a broker


def test_status_stale_after_three_heartbeats() -> None:
    now = datetime(2026, 12, 4, 10, 0, tzinfo=timezone.utc)
    record = monitor.BoxRecord("s", "d", availability="online", state=fresh_state(heartbeat=(now - timedelta(seconds=181)).isoformat()))

    assert monitor.box_status(record, now, 60) == ("stale", 181)
    record.state["heartbeat"] = (now - timedelta(seconds=179)).isoformat()
    assert monitor.box_status(record, now, 60) == ("ready", 179)


def test_status_uses_published_interval() -> None:
    now = datetime(2026, 12, 4, 10, 0, tzinfo=timezone.utc)
    state = fresh_state(heartbeat=(now - timedelta(seconds=40)).isoformat(), heartbeat_seconds=10)
    record = monitor.BoxRecord("s", "d", availability="online", state=state)

    assert monitor.box_status(record, now, 60) == ("stale", 40)


def test_status_offline_wins_over_fresh_state() -> None:
    now = datetime.now(timezone.utc)
    record = monitor.BoxRecord("s", "d", availability="offline", state=fresh_state())

    assert monitor.box_status(record, now, 60)[0] == "offline"


def test_status_unknown_without_heartbeat() -> None:
    record = monitor.BoxRecord("s", "d", availability="online", state={"state": "ready", "heartbeat": "yesterday"})

    assert monitor.box_status(record, datetime.now(timezone.utc), 60) == ("unknown", None)


def test_parse_box_topic_with_nested_prefix() -> None:
    assert monitor.parse_box_topic("org/sohoa", "org/sohoa/site-1/box-2/state") == monitor.BoxTopic("site-1", "box-2", "state")
    assert monitor.parse_box_topic("org/sohoa", "org/sohoa/site-1/box-2/command/reply") is None
    assert monitor.parse_box_topic("org/sohoa", "other/site-1/box-2/state") is None


def test_parse_broker_forms() -> None:
    assert monitor.parse_broker("127.0.0.1:8883") == ("127.0.0.1", 8883)
    assert monitor.parse_broker("[::1]:1883") == ("::1", 1883)
    assert monitor.parse_broker("mqtt.example.internal") == ("mqtt.example.internal", 1883)


# The monitor against a real broker


def test_sigkilled_box_shown_offline(tmp_path: Path, broker: Broker, make_monitor: Callable[..., FleetMonitor]) -> None:
    fleet = make_monitor(broker.port)
    box = subprocess.Popen(
        [sys.executable, "-c", BOX_SCRIPT, str(broker.port), str(tmp_path / "data")],
        env={**os.environ, "PYTHONPATH": str(DAEMON_DIR)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fleet.wait_until(has_record("so-gd-dt", "box-kill", lambda r: r.availability == "online" and r.state is not None), TIMEOUT)
        assert row_of(fleet, "so-gd-dt/box-kill").status == "ready"

        box.send_signal(signal.SIGKILL)
        box.wait(timeout=TIMEOUT)

        # The broker sees the TCP connection close and publishes the will.
        assert fleet.wait_until(has_record("so-gd-dt", "box-kill", lambda r: r.availability == "offline"), TIMEOUT)
        assert row_of(fleet, "so-gd-dt/box-kill").status == "offline"
    finally:
        if box.poll() is None:
            box.kill()
            box.wait(timeout=TIMEOUT)


def test_broker_restart_brings_state_back(
    tmp_path: Path, broker: Broker, make_monitor: Callable[..., FleetMonitor], make_reporter: Callable[..., StatusReporter], capsys
) -> None:
    reporter = make_reporter(box_config(tmp_path), port=broker.port)
    reporter.start()
    assert reporter.wait_connected(TIMEOUT)
    reporter.publish_state(fresh_state())
    fleet = make_monitor(broker.port)
    assert fleet.wait_until(has_record("so-gd-dt", "box-01", lambda r: (r.state or {}).get("session") == 1), TIMEOUT)

    # Without persistence the new broker starts empty: everything the monitor
    # sees afterwards was published again by the reporter.
    broker.restart()

    assert fleet.wait_until(has_record("so-gd-dt", "box-01", lambda r: (r.state or {}).get("session") == 2), TIMEOUT)
    row = row_of(fleet, "so-gd-dt/box-01")
    assert row.status == "ready"
    assert row.session == 2
    status, output = run_monitor_cli(broker.port, "--format", "json", capsys=capsys)
    assert status == 0
    (box,) = json.loads(output)["boxes"]
    assert box["status"] == "ready"
    assert box["backlog"] == 3


def test_stale_retained_online_shown_stale(broker: Broker, capsys) -> None:
    old = datetime.now(timezone.utc) - timedelta(minutes=10)
    publish_retained(
        broker.port,
        [
            ("sohoa/so-gd-dt/box-hung/availability", b"online"),
            ("sohoa/so-gd-dt/box-hung/state", json.dumps(fresh_state(heartbeat=old.isoformat(timespec="seconds"))).encode()),
            ("sohoa/so-gd-dt/box-ok/availability", b"online"),
            ("sohoa/so-gd-dt/box-ok/state", json.dumps(fresh_state()).encode()),
        ],
    )

    status, output = run_monitor_cli(broker.port, "--format", "json", capsys=capsys)

    assert status == 0
    boxes = {box["box"]: box for box in json.loads(output)["boxes"]}
    assert boxes["so-gd-dt/box-hung"]["status"] == "stale"
    assert boxes["so-gd-dt/box-hung"]["heartbeat_age_seconds"] >= 600
    assert boxes["so-gd-dt/box-ok"]["status"] == "ready"


def test_cli_csv_and_table(broker: Broker, capsys) -> None:
    state = fresh_state(state="alert", alert_code="paper_jam", message="Kẹt giấy trong khay nạp.")
    publish_retained(
        broker.port,
        [("sohoa/so-gd-dt/box-01/availability", b"online"), ("sohoa/so-gd-dt/box-01/state", json.dumps(state, ensure_ascii=False).encode())],
    )

    status, output = run_monitor_cli(broker.port, "--format", "csv", capsys=capsys)
    assert status == 0
    header, line = output.strip().splitlines()
    assert header.split(",")[:3] == ["box", "status", "state"]
    assert line.startswith("so-gd-dt/box-01,alert,alert,")
    assert "paper_jam,Kẹt giấy trong khay nạp." in line

    status, output = run_monitor_cli(broker.port, capsys=capsys)
    assert status == 0
    assert "so-gd-dt/box-01" in output
    assert "paper_jam" in output
    assert "3/12" in output
    assert "40/160" in output


def test_malformed_state_counted_not_fatal(broker: Broker, make_monitor: Callable[..., FleetMonitor]) -> None:
    publish_retained(
        broker.port,
        [("sohoa/so-gd-dt/box-bad/state", b"\xff not json"), ("sohoa/so-gd-dt/box-good/state", json.dumps(fresh_state()).encode())],
    )
    fleet = make_monitor(broker.port)

    assert fleet.wait_synced(TIMEOUT)
    assert fleet.counters.invalid == 1
    assert row_of(fleet, "so-gd-dt/box-bad").status == "unknown"
    assert row_of(fleet, "so-gd-dt/box-good").status == "ready"


def test_failure_event_shown_as_last_error(broker: Broker, make_monitor: Callable[..., FleetMonitor]) -> None:
    fleet = make_monitor(broker.port)
    assert fleet.wait_synced(TIMEOUT)
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    event = {"event": "upload_failed", "job_id": "J-7", "code": "upload_rejected", "message": "Kho lưu trữ từ chối tài liệu."}
    client.publish("sohoa/so-gd-dt/box-01/event", json.dumps(event).encode(), qos=1).wait_for_publish(TIMEOUT)
    client.disconnect()
    client.loop_stop()

    assert fleet.wait_until(has_record("so-gd-dt", "box-01", lambda r: r.last_event is not None), TIMEOUT)
    assert row_of(fleet, "so-gd-dt/box-01").last_error == "upload_rejected"


def test_monitor_rejected_login_exits(tmp_path: Path, capsys) -> None:
    passwords = write_password_file(tmp_path / "passwd", "monitor", "right")
    (tmp_path / "wrong").write_text("wrong\n", encoding="utf-8")
    with start_mosquitto(tmp_path / "broker", password_file=passwords) as locked:
        status = cli.main(
            ["--lang", "en", "monitor", "--broker", f"127.0.0.1:{locked.port}", "--username", "monitor", "--password-file", str(tmp_path / "wrong"), "--once"]
        )
        attempts = locked.count_connect_attempts()

    assert status == MqttError.exit_status
    assert "rejected the login of user monitor" in capsys.readouterr().err
    assert attempts == 1


# Home Assistant discovery


def test_discovery_sent_and_resent_on_ha_online(
    tmp_path: Path, broker: Broker, make_reporter: Callable[..., StatusReporter]
) -> None:
    expected = len(ENTITIES) + 1
    with MessageRecorder(broker.host, broker.port, "homeassistant/+/+/+/config") as recorder:
        reporter = make_reporter(box_config(tmp_path), port=broker.port, homeassistant_discovery=True, heartbeat_seconds=30)
        reporter.start()
        assert reporter.wait_connected(TIMEOUT)
        recorder.wait_for(lambda message: message.topic.endswith("/online/config"), TIMEOUT)
        configs = {message.topic: json.loads(message.payload) for message in recorder.messages}
        assert len(configs) == expected
        disk = configs["homeassistant/sensor/sohoa_so-gd-dt_box-01/disk_free/config"]
        assert disk["state_topic"] == "sohoa/so-gd-dt/box-01/state"
        assert disk["availability_topic"] == "sohoa/so-gd-dt/box-01/availability"
        assert disk["unit_of_measurement"] == "MB"
        assert disk["expire_after"] == 90
        online = configs["homeassistant/binary_sensor/sohoa_so-gd-dt_box-01/online/config"]
        assert online["state_topic"] == "sohoa/so-gd-dt/box-01/availability"
        assert online["payload_off"] == "offline"

        recorder.clear()
        publish_retained(broker.port, [("homeassistant/status", b"online")])
        recorder.wait_for(lambda message: message.topic.endswith("/online/config"), TIMEOUT)
        assert len({message.topic for message in recorder.messages}) == expected


# Commands


class ReplyWaiter:
    """Subscribe to a reply topic and return the reply with a given id."""

    def __init__(self, port: int, topic: str) -> None:
        self.recorder = MessageRecorder("127.0.0.1", port, topic)

    def reply(self, request_id: str | None) -> dict:
        message = self.recorder.wait_for(lambda m: json.loads(m.payload).get("id") == request_id, TIMEOUT)
        return json.loads(message.payload)


@pytest.fixture
def command_client(broker: Broker) -> Iterator[Callable[[bytes], None]]:
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()

    def send(payload: bytes) -> None:
        client.publish("sohoa/so-gd-dt/box-01/command", payload, qos=1).wait_for_publish(TIMEOUT)

    yield send
    client.disconnect()
    client.loop_stop()


def test_commands_validated_and_answered(
    tmp_path: Path, broker: Broker, make_reporter: Callable[..., StatusReporter], command_client: Callable[[bytes], None]
) -> None:
    handled: list[Command] = []
    reporter = make_reporter(box_config(tmp_path), port=broker.port, commands_enabled=True)
    reporter.set_command_handler(lambda command: handled.append(command) or CommandReply(True, "pong", "Máy đang chạy."))
    reporter.start()
    assert reporter.wait_connected(TIMEOUT)
    waiter = ReplyWaiter(broker.port, reporter.reply_topic)

    command_client(b'{"command": "ping", "id": "r-1"}')
    reply = waiter.reply("r-1")
    assert reply["ok"] is True
    assert reply["code"] == "pong"
    assert reply["command"] == "ping"
    assert reply["message"] == "Máy đang chạy."

    command_client(b'{"command": "format-disk", "id": "r-2"}')
    assert waiter.reply("r-2")["code"] == "command_unknown"
    command_client(b'{"command": "ping", "id": "r-3", "extra": 1}')
    assert waiter.reply("r-3")["code"] == "command_invalid"
    command_client(b"not json")
    assert waiter.reply(None)["code"] == "command_invalid"

    assert [command.request_id for command in handled] == ["r-1"]
    waiter.recorder.stop()


def test_commands_rate_limited(
    tmp_path: Path, broker: Broker, make_reporter: Callable[..., StatusReporter], command_client: Callable[[bytes], None]
) -> None:
    reporter = make_reporter(box_config(tmp_path), port=broker.port, commands_enabled=True, commands_per_minute=2)
    reporter.set_command_handler(lambda command: CommandReply(True, "pong", "ok"))
    reporter.start()
    assert reporter.wait_connected(TIMEOUT)
    waiter = ReplyWaiter(broker.port, reporter.reply_topic)

    for number in range(3):
        command_client(json.dumps({"command": "ping", "id": f"r-{number}"}).encode())

    assert waiter.reply("r-0")["ok"] is True
    assert waiter.reply("r-1")["ok"] is True
    limited = waiter.reply("r-2")
    assert limited["ok"] is False
    assert limited["code"] == "rate_limited"
    waiter.recorder.stop()


def test_commands_off_by_default(tmp_path: Path, broker: Broker, make_reporter: Callable[..., StatusReporter]) -> None:
    reporter = make_reporter(box_config(tmp_path), port=broker.port)
    reporter.start()
    assert reporter.wait_connected(TIMEOUT)
    with MessageRecorder(broker.host, broker.port, reporter.state_topic) as recorder:
        reporter.publish_state(fresh_state())
        recorder.wait_for(lambda message: True, TIMEOUT)

    # A subscription would have reached the broker before the state on the same connection.
    assert "sohoa/so-gd-dt/box-01/command" not in broker.log_text()


def test_rate_limiter_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])

    assert limiter.allow()
    assert limiter.allow()
    assert not limiter.allow()
    now[0] = 30.0
    assert limiter.allow()
    assert not limiter.allow()


# The daemon end to end


def test_daemon_reports_health_and_runs_commands(tmp_path: Path) -> None:
    from sohoa.app import build_daemon
    from sohoa.testbed.demo import build_testbed, wait_for_state

    with build_testbed(tmp_path / "bed") as bed:
        bed.rewrite_config("mqtt", commands_enabled=True, homeassistant_discovery=True)
        daemon = build_daemon(bed.config())
        with FleetMonitor(MqttConfig(port=bed.broker.port), include_reports=True) as fleet:
            waiter = ReplyWaiter(bed.broker.port, "sohoa/demo/box-01/command/reply")
            daemon.start()
            try:
                probed = has_record("demo", "box-01", lambda r: (r.state or {}).get("token_present") is not None)
                assert fleet.wait_until(probed, TIMEOUT)
                row = row_of(fleet, "demo/box-01")
                assert row.status == "ready"
                assert row.session is not None and row.session >= 1
                state = daemon.last_state
                assert state["token_present"] is True
                assert state["scanner_present"] is True
                assert state["heartbeat_seconds"] == 60.0
                assert set(state["models"]) == {"detector", "recognizer"}
                assert state["digitized"] == {"documents_today": 0, "pages_today": 0, "documents_total": 0, "pages_total": 0}

                publish_command(bed.broker.port, "sohoa/demo/box-01/command", {"command": "ping", "id": "p-1"})
                assert waiter.reply("p-1")["code"] == "pong"
                publish_command(bed.broker.port, "sohoa/demo/box-01/command", {"command": "reload", "id": "p-2"})
                assert waiter.reply("p-2")["code"] == "reload_unsupported"
                publish_command(bed.broker.port, "sohoa/demo/box-01/command", {"command": "cancel", "id": "p-0"})
                cancel_reply = waiter.reply("p-0")
                assert cancel_reply["code"] == "nothing_to_cancel"
                assert cancel_reply["ok"] is False
                publish_command(bed.broker.port, "sohoa/demo/box-01/command", {"command": "scan", "id": "p-3"})
                assert waiter.reply("p-3")["code"] == "scan_requested"

                finished = wait_for_state(daemon, lambda s: s["digitized"]["documents_today"] == 1, 240)
                assert finished is not None, daemon.last_state
                assert finished["digitized"]["pages_today"] >= 1
                assert fleet.wait_until(has_record("demo", "box-01", lambda r: (r.state or {}).get("digitized", {}).get("documents_total") == 1), TIMEOUT)

                # The uploader publishes the progress summary on its first round.
                assert fleet.wait_until(lambda monitor: "demo/box-01" in monitor.report_payloads(), TIMEOUT)
                summary = BoxSummary.from_json(fleet.report_payloads()["demo/box-01"])
                assert summary.device == "box-01"
            finally:
                waiter.recorder.stop()
                daemon.stop()


def publish_command(port: int, topic: str, command: dict) -> None:
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, json.dumps(command).encode(), qos=1).wait_for_publish(TIMEOUT)
    finally:
        client.disconnect()
        client.loop_stop()


# The fleet progress report


def box_summary(device: str, signed: list[int], uploaded: list[int]) -> bytes:
    summary = {
        "schema": 1,
        "site": "so-gd-dt",
        "device": device,
        "department": "Phòng Khảo thí và Quản lý chất lượng",
        "generated_at": "2026-12-04T09:00:00+00:00",
        "timezone": "Asia/Ho_Chi_Minh",
        "period": {"from": None, "to": None},
        "plan": {"inventory": {"QĐ": 100}, "start_year": 2026, "yearly_target_percent": 20.0, "yearly_targets": {}, "deadline": None},
        "months": [{"type": "QĐ", "month": "2026-11", "signed": signed, "uploaded": uploaded, "queued": [0, 0], "failed": [0, 0]}],
        "years": [{"type": "QĐ", "year": 2026, "signed": signed, "uploaded": uploaded}],
        "queued": {"total": 0, "jobs": []},
        "failed": {"total": 0, "jobs": []},
    }
    return json.dumps(summary, ensure_ascii=False).encode()


def test_report_aggregates_published_summaries(broker: Broker, capsys) -> None:
    publish_retained(
        broker.port,
        [
            ("sohoa/so-gd-dt/box-01/report", box_summary("box-01", [1, 4], [2, 8])),
            ("sohoa/so-gd-dt/box-02/report", box_summary("box-02", [0, 0], [3, 12])),
            ("sohoa/so-gd-dt/box-03/report", b'{"schema": 99}'),
        ],
    )

    status, output = run_monitor_cli(broker.port, "--report", "--format", "csv", "--year", "2026", capsys=capsys)

    assert status == 0
    assert "Phòng Khảo thí và Quản lý chất lượng" in output
    # Six documents (24 pages, 5 uploaded) from the two valid boxes, of an inventory of 100.
    assert "Phòng Khảo thí và Quản lý chất lượng,QĐ,100,6,24,5,6.0," in output


def test_report_rejects_fleet_format(broker: Broker, capsys) -> None:
    status = cli.main(["--lang", "en", "monitor", "--broker", f"127.0.0.1:{broker.port}", "--report", "--format", "json"])

    assert status == 78
    assert "The format json is not available here" in capsys.readouterr().err


# Client certificates


def write_client_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """Create a client CA and a client certificate it signed; return (ca, certificate, key) PEM paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sohoa test client CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "so-gd-dt-box-01")]))
        .issuer_name(ca_name)
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (folder / "client-ca.pem", folder / "box.pem", folder / "box.key")
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(client_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


def test_client_certificate_login(tmp_path: Path, make_reporter: Callable[..., StatusReporter], monkeypatch) -> None:
    client_ca, certfile, keyfile = write_client_certificates(tmp_path / "client")
    with start_mosquitto(tmp_path / "broker", tls=True) as tls_broker:
        # The broker verifies clients against the client CA and rejects a TLS handshake without a certificate.
        lines = [line for line in tls_broker.config_path.read_text().splitlines() if not line.startswith("cafile ")]
        lines += [f"cafile {client_ca}", "require_certificate true"]
        tls_broker.config_path.write_text("\n".join(lines) + "\n")
        tls_broker.restart()

        # Bare names are looked up in $CREDENTIALS_DIRECTORY, as systemd's LoadCredential= provides them.
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(certfile.parent))
        with_certificate = make_reporter(
            box_config(tmp_path), port=tls_broker.port, tls=True, ca_file=tls_broker.ca_file, certfile=Path("box.pem"), keyfile=Path("box.key")
        )
        with_certificate.start()
        assert with_certificate.wait_connected(TIMEOUT)

        without_certificate = make_reporter(box_config(tmp_path, "box-02"), port=tls_broker.port, tls=True, ca_file=tls_broker.ca_file)
        without_certificate.start()
        # Waiting is the only way to observe a connection that never comes up.
        assert not without_certificate.wait_connected(3.0)


def test_client_certificate_missing_file(tmp_path: Path) -> None:
    config = MqttConfig(tls=True, certfile=tmp_path / "absent.pem", keyfile=tmp_path / "absent.key")

    with pytest.raises(MqttError, match="absent.pem"):
        StatusReporter(config, box_config(tmp_path))


def test_client_certificate_needs_key_and_tls() -> None:
    with pytest.raises(ValueError, match="certfile and keyfile go together"):
        MqttConfig(tls=True, certfile=Path("box.pem"))
    with pytest.raises(ValueError, match="needs tls = true"):
        MqttConfig(certfile=Path("box.pem"), keyfile=Path("box.key"))


# Live mode and system facts


def test_live_mode_redraws_until_interrupted(broker: Broker) -> None:
    publish_retained(
        broker.port,
        [("sohoa/so-gd-dt/box-01/availability", b"online"), ("sohoa/so-gd-dt/box-01/state", json.dumps(fresh_state()).encode())],
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "sohoa", "--lang", "en", "monitor", "--broker", f"127.0.0.1:{broker.port}", "--format", "csv", "--refresh", "0.2"],
        env={**os.environ, "PYTHONPATH": str(DAEMON_DIR)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        # Each redraw prints the CSV header and one line per box; the first redraws may come before the retained messages.
        rows = []
        for _line_number in range(200):
            line = process.stdout.readline()
            if line.startswith("so-gd-dt/box-01,"):
                rows.append(line)
                if len(rows) == 2:
                    break
        assert len(rows) == 2
        assert rows[0].startswith("so-gd-dt/box-01,ready,")

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=TIMEOUT) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT)


def test_cpu_temperature_prefers_cpu_zone(tmp_path: Path) -> None:
    from sohoa.sysinfo import cpu_temperature_c

    for name, kind, millidegrees in (("thermal_zone0", "gpu-thermal", "61000"), ("thermal_zone1", "cpu-thermal", "48312")):
        zone = tmp_path / name
        zone.mkdir()
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(millidegrees + "\n")

    assert cpu_temperature_c(tmp_path) == 48.3
    assert cpu_temperature_c(tmp_path / "absent") is None


def test_report_summary_republished_after_restart(
    tmp_path: Path, broker: Broker, make_reporter: Callable[..., StatusReporter], capsys
) -> None:
    reporter = make_reporter(box_config(tmp_path), port=broker.port)
    reporter.publish_report(box_summary("box-01", [1, 4], [2, 8]))
    reporter.start()
    assert reporter.wait_connected(TIMEOUT)
    with MessageRecorder(broker.host, broker.port, reporter.report_topic) as recorder:
        recorder.wait_for(lambda message: message.retain, TIMEOUT)
        recorder.clear()
        broker.restart()
        recorder.wait_for(lambda message: True, TIMEOUT)

    status, output = run_monitor_cli(broker.port, "--report", "--format", "csv", "--year", "2026", capsys=capsys)
    assert status == 0
    assert "Phòng Khảo thí và Quản lý chất lượng,QĐ,100,3,12,2," in output
