"""The monitor's throughput with 200 simulated boxes on one real mosquitto on 127.0.0.1.

One paho client publishes for all boxes, because the point is the monitor,
not 200 TCP connections. The tests check that every message arrives and the
table is complete; they assert no speed. Run with ``-s`` to print the measured
figures, which docs/benchmarks.md records.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sohoa.config import MqttConfig
from sohoa.monitor import FleetMonitor, render_table
from sohoa.testbed.mosquitto import Broker, start_mosquitto

BOXES = 200
ROUNDS = 25
TIMEOUT = 60.0


def box_name(number: int) -> tuple[str, str]:
    return f"truong-{number // 20:02d}", f"box-{number:03d}"


def state_of(number: int, round_number: int) -> bytes:
    state = {
        "state": "busy" if number % 7 == 0 else "ready",
        "message": "Sẵn sàng: đặt giấy vào khay và nhấn nút.",
        "alert_code": None,
        "queue": {"interrupted": 0, "to_recognize": number % 3, "to_build": 0, "to_sign": 0, "to_upload": number % 5, "failed": 0},
        "digitized": {"documents_today": round_number, "pages_today": 4 * round_number, "documents_total": 1000 + number, "pages_total": 4000 + number},
        "disk_free_mb": 20000,
        "cpu_temperature_c": 51.0,
        "version": "0.1.0",
        "heartbeat": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "heartbeat_seconds": 60,
        "round": round_number,
        "session": 1,
    }
    return json.dumps(state, ensure_ascii=False).encode()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    running = start_mosquitto(tmp_path / "broker")
    # By default mosquitto drops QoS 1 messages beyond 1000 queued per client.
    # The burst below is larger, and a dropped final state would fail the test.
    with running.config_path.open("a", encoding="utf-8") as config:
        config.write("max_queued_messages 0\n")
    running.restart()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def publisher(broker: Broker) -> Iterator[paho.Client]:
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.max_inflight_messages_set(200)
    client.connect(broker.host, broker.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def publish_all(client: paho.Client, messages: list[tuple[str, bytes, bool]]) -> None:
    infos = [client.publish(topic, payload, qos=1, retain=retain) for topic, payload, retain in messages]
    for info in infos:
        info.wait_for_publish(timeout=TIMEOUT)
        assert info.is_published()


def test_complete_table_from_retained(broker: Broker, publisher: paho.Client) -> None:
    messages = []
    for number in range(BOXES):
        site, device = box_name(number)
        messages.append((f"sohoa/{site}/{device}/availability", b"online", True))
        messages.append((f"sohoa/{site}/{device}/state", state_of(number, 0), True))
    publish_all(publisher, messages)

    started = time.monotonic()
    with FleetMonitor(MqttConfig(port=broker.port)) as fleet:
        complete = fleet.wait_until(lambda monitor: sum(1 for r in monitor.records_unlocked().values() if r.state) == BOXES, TIMEOUT)
        elapsed = time.monotonic() - started
        assert complete
        assert fleet.wait_synced(TIMEOUT)

        render_started = time.monotonic()
        rows = fleet.rows()
        table = render_table(rows)
        render_seconds = time.monotonic() - render_started

    print(f"\n{BOXES} boxes: complete table {elapsed:.3f} s after connecting ({2 * BOXES} retained messages); rows and table rendered in {render_seconds * 1000:.1f} ms")
    assert len(rows) == BOXES
    assert all(row.status in ("ready", "busy") for row in rows)
    assert len(table.splitlines()) == BOXES + 3


def test_monitor_keeps_up_with_burst(broker: Broker, publisher: paho.Client) -> None:
    with FleetMonitor(MqttConfig(port=broker.port)) as fleet:
        assert fleet.wait_synced(TIMEOUT)
        messages = []
        for round_number in range(ROUNDS):
            for number in range(BOXES):
                site, device = box_name(number)
                messages.append((f"sohoa/{site}/{device}/state", state_of(number, round_number), round_number == ROUNDS - 1))

        started = time.monotonic()
        publish_all(publisher, messages)
        published = time.monotonic() - started

        def all_final(monitor: FleetMonitor) -> bool:
            records = monitor.records_unlocked().values()
            return len(records) == BOXES and all((record.state or {}).get("round") == ROUNDS - 1 for record in records)

        assert fleet.wait_until(all_final, TIMEOUT)
        counters = fleet.counters

    received_seconds = counters.last_message_at - counters.first_message_at
    rate = counters.messages / received_seconds
    print(
        f"\n{BOXES} boxes x {ROUNDS} states: {counters.messages} messages received in {received_seconds:.2f} s"
        f" ({rate:.0f} messages/s); the publisher needed {published:.2f} s"
    )
    assert counters.messages == BOXES * ROUNDS
    assert counters.invalid == 0
