"""The fleet monitor for IT: ``sohoa monitor``.

Subscribes to the availability, state and event topics of every box under a
prefix and shows one row per box: its status, the age of its last heartbeat,
its backlog, its last error and what it has digitized. A box is ``stale`` when
its last heartbeat is older than STALE_HEARTBEATS heartbeat intervals, even if
its retained availability is still ``online``: a hung daemon keeps its
connection, so the broker publishes no will for it.

Heartbeat ages compare the box's clock with the monitor's, so both need NTP.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from sohoa.config import MqttConfig, read_secret
from sohoa.errors import ConfigError, MqttError
from sohoa.i18n import N_, gettext as _

log = logging.getLogger(__name__)

STALE_HEARTBEATS = 3
DEFAULT_HEARTBEAT_SECONDS = 60.0
DEFAULT_WAIT_SECONDS = 5.0
DEFAULT_REFRESH_SECONDS = 2.0
SUBSCRIBE_QOS = 1
RECONNECT_MIN_DELAY_SECONDS = 1
RECONNECT_MAX_DELAY_SECONDS = 30
STATUSES = ("ready", "busy", "alert", "stale", "offline", "unknown")
FORMATS = ("table", "json", "csv")
REPORT_FORMATS = ("table", "csv", "xlsx", "pdf")
# The monitor publishes to this topic after subscribing. Its message arrives
# after the retained messages queued before it, so it marks their end. The
# topic lies outside the box topics.
SYNC_TOPIC_PREFIX = "sohoa-monitor"
_LOGIN_REJECTED_REASONS = frozenset({"Bad user name or password", "Not authorized", "Banned", "Bad authentication method"})

STATUS_LABELS = {
    "ready": N_("ready"),
    "busy": N_("busy"),
    "alert": N_("alert"),
    "stale": N_("stale"),
    "offline": N_("offline"),
    "unknown": N_("unknown"),
}


@dataclass
class BoxRecord:
    """The latest messages received from one box."""

    site: str
    device: str
    availability: str | None = None
    state: dict | None = None
    last_event: dict | None = None
    invalid_messages: int = 0


@dataclass(frozen=True)
class BoxRow:
    """One line of the fleet table; ``status`` is one of STATUSES."""

    box: str
    status: str
    state: str | None
    heartbeat_age_seconds: int | None
    backlog: int | None
    failed: int | None
    last_error: str | None
    last_error_message: str | None
    documents_today: int | None
    pages_today: int | None
    documents_total: int | None
    pages_total: int | None
    disk_free_mb: int | None
    cpu_temperature_c: float | None
    session: int | None
    version: str | None


@dataclass
class MonitorCounters:
    messages: int = 0
    first_message_at: float | None = None
    last_message_at: float | None = None
    invalid: int = 0


@dataclass(frozen=True)
class BoxTopic:
    site: str
    device: str
    kind: str  # availability, state, event or report


def parse_box_topic(prefix: str, topic: str) -> BoxTopic | None:
    """Split ``{prefix}/{site}/{device}/{kind}``; return None for any other topic."""
    head = prefix.rstrip("/") + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head):].split("/")
    if len(parts) != 3 or not all(parts):
        return None
    return BoxTopic(*parts)


def parse_heartbeat(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def box_status(record: BoxRecord, now: datetime, default_heartbeat_seconds: float) -> tuple[str, int | None]:
    """Return the box's status and the age of its last heartbeat in seconds (None when unknown)."""
    state = record.state or {}
    heartbeat = parse_heartbeat(state.get("heartbeat"))
    age = int((now - heartbeat).total_seconds()) if heartbeat is not None else None

    if record.availability == "offline":
        return "offline", age
    if age is None:
        return "unknown", None
    interval = state.get("heartbeat_seconds")
    if not isinstance(interval, (int, float)) or interval <= 0:
        interval = default_heartbeat_seconds
    if age > STALE_HEARTBEATS * interval:
        return "stale", age
    lifecycle = state.get("state")
    return (lifecycle if lifecycle in ("ready", "busy", "alert") else "unknown"), age


def _number(mapping: object, key: str) -> int | float | None:
    if not isinstance(mapping, dict):
        return None
    value = mapping.get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _backlog(queue: object) -> int | None:
    if not isinstance(queue, dict):
        return None
    return sum(value for key, value in queue.items() if key != "failed" and isinstance(value, int))


def _last_error(record: BoxRecord) -> tuple[str | None, str | None]:
    """Return the code and message of the box's current alert, else of its last error or failure event."""
    state = record.state or {}
    if state.get("alert_code"):
        return state["alert_code"], state.get("message")
    last_error = state.get("last_error")
    if isinstance(last_error, dict) and last_error.get("code"):
        return last_error["code"], last_error.get("message")
    event = record.last_event
    if event and event.get("code"):
        return event["code"], event.get("message")
    return None, None


def build_row(record: BoxRecord, now: datetime, default_heartbeat_seconds: float) -> BoxRow:
    status, age = box_status(record, now, default_heartbeat_seconds)
    state = record.state or {}
    digitized = state.get("digitized")
    error_code, error_message = _last_error(record)
    session = state.get("session")
    version = state.get("version")
    return BoxRow(
        box=f"{record.site}/{record.device}",
        status=status,
        state=state.get("state") if isinstance(state.get("state"), str) else None,
        heartbeat_age_seconds=age,
        backlog=_backlog(state.get("queue")),
        failed=_number(state.get("queue"), "failed"),
        last_error=error_code,
        last_error_message=error_message,
        documents_today=_number(digitized, "documents_today"),
        pages_today=_number(digitized, "pages_today"),
        documents_total=_number(digitized, "documents_total"),
        pages_total=_number(digitized, "pages_total"),
        disk_free_mb=_number(state, "disk_free_mb"),
        cpu_temperature_c=_number(state, "cpu_temperature_c"),
        session=session if isinstance(session, int) else None,
        version=version if isinstance(version, str) else None,
    )


class FleetMonitor:
    """Subscribe to every box under ``config.prefix`` and keep the latest of each box's messages.

    Thread-safe: paho's network thread updates the records, and any thread
    reads :meth:`rows`. The client reconnects with backoff and subscribes
    again, so the retained messages arrive again after a broker restart. A
    rejected login stops it (see :attr:`fatal_error`).
    """

    def __init__(self, config: MqttConfig, *, password: str | None = None, include_reports: bool = False) -> None:
        self._config = config
        self._prefix = config.prefix.rstrip("/")
        self._include_reports = include_reports
        self._client_id = f"sohoa-monitor-{uuid.uuid4().hex[:12]}"
        self._sync_topic = f"{SYNC_TOPIC_PREFIX}/{self._client_id}/sync"

        # Reentrant, so that a predicate of wait_until() may call the public readers.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._records: dict[tuple[str, str], BoxRecord] = {}
        self._reports: dict[tuple[str, str], bytes] = {}
        self._counters = MonitorCounters()
        self._connected = False
        self._stopping = False
        self._synced = False
        self._fatal_error: MqttError | None = None

        self._client = self._build_client(password)

    @property
    def topics(self) -> list[str]:
        kinds = ["availability", "state", "event"] + (["report"] if self._include_reports else [])
        return [f"{self._prefix}/+/+/{kind}" for kind in kinds]

    def start(self) -> None:
        log.info("Monitor connecting to MQTT broker %s:%d", self._config.host, self._config.port)
        self._client.connect_async(self._config.host, self._config.port, keepalive=self._config.keepalive_seconds)
        self._client.loop_start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> FleetMonitor:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def fatal_error(self) -> MqttError | None:
        with self._lock:
            return self._fatal_error

    @property
    def counters(self) -> MonitorCounters:
        """A copy of the message counters."""
        with self._lock:
            return MonitorCounters(**vars(self._counters))

    def wait_until(self, predicate: Callable[[FleetMonitor], bool], timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until ``predicate(self)`` holds after a message; return whether it held.

        ``predicate`` runs on the calling thread with the monitor's lock held,
        so paho's thread waits meanwhile. It may call the public readers.
        """
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self) or self._fatal_error is not None, timeout) and predicate(self)

    def wait_synced(self, timeout: float) -> bool:
        """Wait until the broker has delivered the retained messages of the current subscription.

        Returns False after ``timeout`` seconds, for example when the broker's
        access control drops the monitor's own sync message.
        """
        with self._changed:
            return self._changed.wait_for(lambda: self._synced or self._fatal_error is not None, timeout) and self._synced

    def records_unlocked(self) -> dict[tuple[str, str], BoxRecord]:
        """Return the live records by (site, device); only for predicates of :meth:`wait_until`."""
        return self._records

    def rows(self, now: datetime | None = None, default_heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS) -> list[BoxRow]:
        """Return one row per box, sorted by site and device."""
        now = now or datetime.now(timezone.utc)
        with self._lock:
            records = sorted(self._records.values(), key=lambda record: (record.site, record.device))
            return [build_row(record, now, default_heartbeat_seconds) for record in records]

    def report_payloads(self) -> dict[str, bytes]:
        """Return the retained report summaries by box ("site/device"), when started with ``include_reports``."""
        with self._lock:
            return {f"{site}/{device}": payload for (site, device), payload in self._reports.items()}

    # paho callbacks, run in paho's network thread

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason, properties: object) -> None:
        if reason.is_failure:
            self._handle_rejected_connection(reason)
            return
        log.info("Monitor connected to %s:%d, subscribing to %s", self._config.host, self._config.port, self.topics)
        with self._lock:
            self._connected = True
            self._synced = False
        topics = [(topic, SUBSCRIBE_QOS) for topic in [*self.topics, self._sync_topic]]
        client.subscribe(topics)

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, reasons: list, properties: object) -> None:
        failed = [reason for reason in reasons if reason.is_failure]
        if failed:
            log.warning("The broker rejected %d of the monitor's subscriptions: %s", len(failed), failed)
        # Retained messages are queued before this publish, so its arrival means all of them have arrived.
        client.publish(self._sync_topic, b"sync", qos=SUBSCRIBE_QOS)

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object, reason, properties: object) -> None:
        with self._lock:
            was_connected = self._connected
            self._connected = False
            quiet = self._stopping or self._fatal_error is not None
        if was_connected and not quiet:
            log.warning("Monitor lost the connection to %s:%d (%s), reconnecting", self._config.host, self._config.port, reason)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        payload = bytes(message.payload)
        if message.topic == self._sync_topic:
            with self._changed:
                self._synced = True
                self._changed.notify_all()
            return

        box_topic = parse_box_topic(self._prefix, message.topic)
        with self._changed:
            self._count_message()
            if box_topic is not None:
                self._apply(box_topic, payload, message.topic)
            self._changed.notify_all()

    def _count_message(self) -> None:
        now = time.monotonic()
        counters = self._counters
        counters.messages += 1
        counters.last_message_at = now
        if counters.first_message_at is None:
            counters.first_message_at = now

    def _apply(self, topic: BoxTopic, payload: bytes, topic_name: str) -> None:
        """Store one box message. The caller holds _lock."""
        key = (topic.site, topic.device)
        if topic.kind == "report":
            self._reports[key] = payload
            return
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = BoxRecord(topic.site, topic.device)

        if topic.kind == "availability":
            record.availability = payload.decode("utf-8", errors="replace").strip()
            return
        document = _decode_object(payload)
        if document is None:
            record.invalid_messages += 1
            self._counters.invalid += 1
            log.warning("Ignoring a %s message that is not a JSON object on %s (%d bytes)", topic.kind, topic_name, len(payload))
            return
        if topic.kind == "state":
            record.state = document
        elif document.get("event") in ("job_failed", "upload_failed"):
            record.last_event = document

    def _handle_rejected_connection(self, reason) -> None:
        name = reason.getName()
        if name not in _LOGIN_REJECTED_REASONS:
            log.warning("MQTT broker %s:%d rejected the monitor's connection (%s), retrying", self._config.host, self._config.port, name)
            return
        error = MqttError(
            N_("The MQTT broker {host}:{port} rejected the login of user {user} ({reason}). Check --username and --password-file."),
            host=self._config.host,
            port=self._config.port,
            user=self._config.username or "(anonymous)",
            reason=name,
        )
        log.error("%s", error)
        with self._changed:
            self._fatal_error = error
            self._changed.notify_all()
        self._client.disconnect()

    def _build_client(self, password: str | None) -> paho.Client:
        from sohoa.mqtt import set_up_tls

        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            clean_session=True,
            protocol=paho.MQTTv311,
        )
        client.reconnect_delay_set(RECONNECT_MIN_DELAY_SECONDS, RECONNECT_MAX_DELAY_SECONDS)
        client.suppress_exceptions = True
        if self._config.username:
            client.username_pw_set(self._config.username, password)
        if self._config.tls:
            set_up_tls(client, self._config)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client


def _decode_object(payload: bytes) -> dict | None:
    try:
        document = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


# Output

ROW_FIELDS = tuple(BoxRow.__dataclass_fields__)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def format_age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def status_summary(rows: list[BoxRow]) -> str:
    counts = {status: sum(1 for row in rows if row.status == status) for status in STATUSES}
    parts = [f"{_(STATUS_LABELS[status])} {count}" for status, count in counts.items() if count]
    return _("{count} boxes").format(count=len(rows)) + (": " + ", ".join(parts) if parts else "")


def render_table(rows: list[BoxRow]) -> str:
    headers = [_("Box"), _("Status"), _("Heartbeat"), _("Backlog"), _("Failed"), _("Last error"), _("Today"), _("Total"), _("Disk MB"), _("CPU °C"), _("Session")]
    lines = [
        [
            row.box,
            _(STATUS_LABELS[row.status]),
            format_age(row.heartbeat_age_seconds),
            _cell(row.backlog),
            _cell(row.failed),
            _cell(row.last_error),
            f"{_cell(row.documents_today)}/{_cell(row.pages_today)}",
            f"{_cell(row.documents_total)}/{_cell(row.pages_total)}",
            _cell(row.disk_free_mb),
            _cell(row.cpu_temperature_c),
            _cell(row.session),
        ]
        for row in rows
    ]
    widths = [max([len(header)] + [len(line[index]) for line in lines]) for index, header in enumerate(headers)]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip() for cells in [headers, *lines]]
    text.append("")
    text.append(status_summary(rows) + "  " + _("(Today and Total: documents/pages digitized)"))
    return "\n".join(text) + "\n"


def render_json(rows: list[BoxRow], now: datetime) -> str:
    document = {"generated_at": now.isoformat(timespec="seconds"), "boxes": [vars(row) for row in rows]}
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def render_csv(rows: list[BoxRow]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in vars(row).items()})
    return buffer.getvalue()


def render(rows: list[BoxRow], output_format: str, now: datetime) -> str:
    if output_format == "json":
        return render_json(rows, now)
    if output_format == "csv":
        return render_csv(rows)
    return render_table(rows)


# Command line


def parse_broker(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for an IPv6 address) or ``HOST`` with the default port."""
    host, separator, port_text = text.rpartition(":")
    if not separator or "]" in port_text:
        return text.strip("[]"), 1883
    try:
        port = int(port_text)
    except ValueError as exc:
        raise ConfigError(N_("Invalid --broker {value}: the port must be a number, as in 127.0.0.1:1883."), value=text) from exc
    if not 1 <= port <= 65535:
        raise ConfigError(N_("Invalid --broker {value}: the port must be between 1 and 65535."), value=text)
    return host.strip("[]"), port


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("monitor", help=_("show the state of every box of the fleet from MQTT"))
    parser.add_argument("--broker", metavar="HOST:PORT", help=_("MQTT broker (default: the [mqtt] section of the configuration)"))
    parser.add_argument("--prefix", help=_("topic prefix of the fleet (default: mqtt.prefix, else sohoa)"))
    parser.add_argument("--tls", action="store_true", default=None, help=_("connect with TLS"))
    parser.add_argument("--ca-file", help=_("CA certificates that verify the broker (PEM)"))
    parser.add_argument("--username", help=_("MQTT user name"))
    parser.add_argument("--password-file", help=_("file that contains the MQTT password"))
    parser.add_argument("--certfile", help=_("client certificate (PEM), with --keyfile"))
    parser.add_argument("--keyfile", help=_("private key of the client certificate (PEM)"))
    parser.add_argument(
        "--format", choices=sorted(set(FORMATS) | set(REPORT_FORMATS)), default="table", help=_("output format: table, json or csv; with --report table, csv, xlsx or pdf (default: table)")
    )
    parser.add_argument("--once", action="store_true", help=_("print the fleet once, after the retained messages arrived, and exit"))
    parser.add_argument(
        "--wait", type=float, default=DEFAULT_WAIT_SECONDS, help=_("with --once or --report: maximum seconds to wait for the retained messages (default: 5)")
    )
    parser.add_argument("--refresh", type=float, default=DEFAULT_REFRESH_SECONDS, help=_("seconds between two redraws of the live table (default: 2)"))
    parser.add_argument(
        "--heartbeat", type=float, default=DEFAULT_HEARTBEAT_SECONDS, help=_("heartbeat interval in seconds for boxes that do not publish theirs (default: 60)")
    )
    add_report_options(parser)
    parser.set_defaults(func=run)


def add_report_options(parser: argparse.ArgumentParser) -> None:
    from sohoa.report import parse_date

    parser.add_argument("--report", action="store_true", help=_("print the fleet's progress report from the summaries the boxes publish, and exit"))
    parser.add_argument("--from", dest="date_from", type=parse_date, metavar="DATE", help=_("with --report: first day of the period, YYYY-MM-DD"))
    parser.add_argument("--to", dest="date_to", type=parse_date, metavar="DATE", help=_("with --report: last day of the period, YYYY-MM-DD"))
    parser.add_argument("--year", type=int, help=_("with --report: plan year to compare against (default: the year in which the period ends)"))
    parser.add_argument("--output", metavar="FILE", help=_("with --report: file to write (default: standard output for text, a dated file name for xlsx and pdf)"))


def monitor_config(args: argparse.Namespace) -> MqttConfig:
    """Build the monitor's connection settings from the options, over the configuration file when --broker is missing."""
    if args.broker:
        base = MqttConfig()
        host, port = parse_broker(args.broker)
        updates: dict[str, object] = {"host": host, "port": port}
    else:
        from sohoa.cli import _load

        base = _load(args).mqtt
        updates = {}
    for option, key in (("prefix", "prefix"), ("tls", "tls"), ("ca_file", "ca_file"), ("username", "username"), ("password_file", "password_file"), ("certfile", "certfile"), ("keyfile", "keyfile")):
        value = getattr(args, option)
        if value is not None:
            updates[key] = value
    try:
        return MqttConfig.model_validate({**base.model_dump(), **updates})
    except ValueError as exc:
        raise ConfigError(N_("Invalid monitor options: {detail}"), detail=exc) from exc


def run(args: argparse.Namespace) -> int:
    check_format(args)
    config = monitor_config(args)
    password = read_secret(config.password_file, None, "MQTT password")
    monitor = FleetMonitor(config, password=password, include_reports=args.report)
    with monitor:
        if args.report:
            return _print_report(monitor, args)
        if args.once:
            return _print_once(monitor, args)
        return _run_live(monitor, args)


def check_format(args: argparse.Namespace) -> None:
    valid = REPORT_FORMATS if args.report else FORMATS
    if args.format not in valid:
        raise ConfigError(
            N_("The format {format} is not available here; use one of {valid}."), format=args.format, valid=", ".join(valid)
        )
    if args.report:
        from sohoa.report import check_period

        check_period(args.date_from, args.date_to)


def _wait_for_retained(monitor: FleetMonitor, seconds: float) -> None:
    if monitor.wait_synced(seconds):
        return
    if monitor.fatal_error is not None:
        raise monitor.fatal_error
    log.warning("The retained messages were not confirmed within %.1f s; the output may be incomplete", seconds)


def _print_report(monitor: FleetMonitor, args: argparse.Namespace) -> int:
    """Aggregate the retained box summaries into the fleet's progress report."""
    from pathlib import Path

    from sohoa.errors import ReportError
    from sohoa.report import BoxSummary, aggregate, write_report

    _wait_for_retained(monitor, args.wait)
    summaries = []
    for box, payload in sorted(monitor.report_payloads().items()):
        try:
            summaries.append(BoxSummary.from_json(payload))
        except ReportError as exc:
            log.warning("Skipping the report summary of %s: %s", box, exc)
    log.info("Building the fleet report from %d box summaries", len(summaries))
    report = aggregate(summaries, args.date_from, args.date_to, args.year)
    path = write_report(report, args.format, Path(args.output) if args.output else None, "fleet")
    if path is not None:
        print(_("Report written to {path}").format(path=path))
    return 0


def _print_once(monitor: FleetMonitor, args: argparse.Namespace) -> int:
    _wait_for_retained(monitor, args.wait)
    now = datetime.now(timezone.utc)
    sys.stdout.write(render(monitor.rows(now, args.heartbeat), args.format, now))
    return 0


def _run_live(monitor: FleetMonitor, args: argparse.Namespace) -> int:
    """Redraw the fleet every ``--refresh`` seconds until Ctrl-C, then return 130. json and csv print one document per redraw.

    Ctrl-C only sets an event. A KeyboardInterrupt, which can be raised at
    any bytecode, could land between a lock's acquire and its ``with`` block,
    leave the monitor's lock held and hang the exit.
    """
    clear = "\x1b[H\x1b[2J" if args.format == "table" and sys.stdout.isatty() else ""
    interrupted = threading.Event()
    previous_handler = signal.signal(signal.SIGINT, lambda _signum, _frame: interrupted.set())
    try:
        while not interrupted.is_set():
            error = monitor.fatal_error
            if error is not None:
                raise error
            now = datetime.now(timezone.utc)
            sys.stdout.write(clear + render(monitor.rows(now, args.heartbeat), args.format, now))
            sys.stdout.flush()
            interrupted.wait(args.refresh)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    return 130
