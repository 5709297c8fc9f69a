"""Status reporting over MQTT: availability, the box's state and job events.

Topics, under ``{prefix}/{site}/{device}/``:

* ``availability``: retained ``online`` after every (re)connect. The Last Will
  is a retained ``offline`` on the same topic, so the broker announces a crash
  or a lost network by itself; :meth:`StatusReporter.stop` publishes
  ``offline`` itself, because a clean DISCONNECT discards the will.
* ``state``: the daemon's state as retained UTF-8 JSON.
* ``event``: job events as UTF-8 JSON, QoS 1, not retained.
* ``report``: the box summary of the progress report, retained.
* ``command`` and ``command/reply`` (only with ``mqtt.commands_enabled``):
  commands for the daemon's handler and one reply to each, QoS 1.

With ``mqtt.homeassistant_discovery`` the reporter also publishes Home
Assistant discovery configs (see :mod:`sohoa.mqtt_discovery`).

This module only transports: the daemon builds the state and event payloads.
The reporter adds ``session`` to every state it publishes: a counter that
grows on every successful connect, so that a subscriber can tell a state of
the current connection from one retained by an earlier connection.
The client speaks MQTT 3.1.1 through paho-mqtt 2.x and runs paho's network
thread, which reconnects with exponential backoff.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import ssl
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from sohoa.config import BoxConfig, MqttConfig, read_secret
from sohoa.errors import ConfigError, MqttError
from sohoa.i18n import N_
from sohoa.mqtt_commands import Command, CommandRejected, CommandReply, RateLimiter, parse_command, rejection, reply_document
from sohoa.mqtt_discovery import discovery_messages

log = logging.getLogger(__name__)

ONLINE = "online"
OFFLINE = "offline"
AVAILABILITY_QOS = 1
EVENT_QOS = 1
# The state is a "latest value" topic: it is republished after every
# reconnect, so QoS 0 loses nothing that matters. With QoS 1, paho would
# resend an unacknowledged older state after the reconnect, behind the newer
# one, and the broker would keep the older state as the retained value.
STATE_QOS = 0
COMMAND_QOS = 1
DISCOVERY_QOS = 1

RECONNECT_MIN_DELAY_SECONDS = 1
RECONNECT_MAX_DELAY_SECONDS = 60
STOP_PUBLISH_TIMEOUT_SECONDS = 5.0
MAX_QUEUED_EVENTS = 1000
LOGGED_PAYLOAD_CHARS = 200

# CONNACK reason names after which retrying with the same credentials cannot
# succeed. paho maps the MQTT 3.1.1 return codes 4 and 5 to the first two.
_LOGIN_REJECTED_REASONS = frozenset({"Bad user name or password", "Not authorized", "Banned", "Bad authentication method"})

# Runs on paho's network thread, so it must return quickly.
CommandHandler = Callable[[Command], CommandReply]


class StatusReporter:
    """Publish the box's availability, state and events to an MQTT broker.

    Thread-safe: the daemon calls the publish methods from any thread, and
    paho's network thread runs the callbacks. Nothing here blocks on the
    network except :meth:`stop` (bounded) and :meth:`wait_connected`.
    """

    def __init__(self, mqtt: MqttConfig, box: BoxConfig, client_id: str | None = None) -> None:
        self._config = mqtt
        self._box = box
        self._base_topic = f"{mqtt.prefix.rstrip('/')}/{box.site}/{box.device}"
        self._client_id = client_id or f"sohoa-{box.site}-{box.device}"

        # _lock guards the connection flags and the event queue. Never call paho
        # while holding it: paho runs the callbacks, which take _lock, while
        # holding its own locks.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._connected = False
        self._started = False
        self._stopping = False
        self._fatal_error: MqttError | None = None
        self._failed_attempts = 0
        self._queued_events: collections.deque[bytes] = collections.deque(maxlen=MAX_QUEUED_EVENTS)
        self._dropped_events = 0

        # _state_lock orders state publishes: the republish after a connect
        # and a concurrent publish_state() must not overtake each other.
        self._state_lock = threading.Lock()
        self._last_state: dict | None = None
        self._state_live = False
        self._last_report: bytes | None = None
        self._session = 0
        self._session_counter: Callable[[], int] | None = None

        self._command_handler: CommandHandler | None = None
        self._command_limiter = RateLimiter(mqtt.commands_per_minute)

        self._client = self._build_client()

    @property
    def availability_topic(self) -> str:
        return f"{self._base_topic}/availability"

    @property
    def state_topic(self) -> str:
        return f"{self._base_topic}/state"

    @property
    def event_topic(self) -> str:
        return f"{self._base_topic}/event"

    @property
    def report_topic(self) -> str:
        return f"{self._base_topic}/report"

    @property
    def command_topic(self) -> str:
        return f"{self._base_topic}/command"

    @property
    def reply_topic(self) -> str:
        return f"{self._base_topic}/command/reply"

    @property
    def homeassistant_status_topic(self) -> str:
        return f"{self._config.homeassistant_prefix.rstrip('/')}/status"

    @property
    def session(self) -> int:
        """The number of the current connection: 0 before the first, then growing on every successful connect."""
        with self._state_lock:
            return self._session

    def set_session_counter(self, counter: Callable[[], int]) -> None:
        """Use ``counter`` for the next session number instead of an in-memory count.

        The daemon passes a durable counter from its journal, so that the
        session also grows across restarts. Call before :meth:`start`. The
        counter runs on paho's network thread at each connect.
        """
        self._session_counter = counter

    def set_command_handler(self, handler: CommandHandler) -> None:
        """Handle valid commands with ``handler``; ignored unless ``mqtt.commands_enabled``.

        The handler runs on paho's network thread and must return quickly.
        Call before :meth:`start`.
        """
        self._command_handler = handler

    def start(self) -> None:
        """Start connecting in paho's network thread and return at once.

        The thread retries with exponential backoff until :meth:`stop`, except
        after the broker rejects the login (see :attr:`fatal_error`).
        """
        with self._lock:
            if self._started:
                log.debug("MQTT reporter %s already started", self._client_id)
                return
            self._started = True

        config = self._config
        log.info("Connecting to MQTT broker %s:%d as %s", config.host, config.port, self._client_id)
        self._client.connect_async(config.host, config.port, keepalive=config.keepalive_seconds)
        self._client.loop_start()

    def stop(self) -> None:
        """Publish a retained ``offline``, disconnect and end the network thread.

        Waits at most STOP_PUBLISH_TIMEOUT_SECONDS for the broker to
        acknowledge ``offline``. If the connection is lost meanwhile, the broker
        publishes the same retained ``offline`` as the will when the keepalive
        expires. A stopped reporter cannot be started again.
        """
        with self._lock:
            if not self._started or self._stopping:
                return
            self._stopping = True
            was_connected = self._connected

        if was_connected:
            self._publish_offline()
        self._client.disconnect()
        self._client.loop_stop()

        with self._lock:
            self._mark_disconnected()
        log.info("MQTT reporter %s stopped", self._client_id)

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the connection (a successful CONNACK) and it is still up."""
        with self._lock:
            return self._connected

    @property
    def fatal_error(self) -> MqttError | None:
        """The error that ended the reconnect loop, such as a rejected login, or None."""
        with self._lock:
            return self._fatal_error

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a connection and return whether it is up.

        Returns False early when the reporter has given up (see :attr:`fatal_error`).
        """
        with self._changed:
            self._changed.wait_for(lambda: self._connected or self._fatal_error is not None, timeout)
            return self._connected

    def publish_state(self, state: Mapping[str, object]) -> None:
        """Publish ``state`` as retained JSON and remember it for the next reconnect.

        While offline, only the latest state is kept and sent on reconnect.
        The reporter sets ``session`` in the published copy. Raises MqttError
        if ``state`` cannot be encoded as JSON.
        """
        document = dict(state)
        with self._state_lock:
            payload = _encode_json({**document, "session": self._session}, self.state_topic)
            self._last_state = document
            if self._state_live:
                self._send(self.state_topic, payload, STATE_QOS, retain=True)

    def publish_report(self, payload: bytes) -> None:
        """Publish the box summary (``BoxSummary.to_json()``) retained and republish it after every reconnect.

        Uses QoS 0 for the reason given at STATE_QOS: the summary is a latest
        value, and the reporter sends the newest one again after a reconnect.
        """
        with self._state_lock:
            self._last_report = bytes(payload)
            if self._state_live:
                self._send(self.report_topic, self._last_report, STATE_QOS, retain=True)

    def publish_event(self, name: str, payload: Mapping[str, object]) -> None:
        """Publish the event ``name`` with ``payload`` as JSON, QoS 1, not retained.

        The JSON object contains ``event`` (the name), ``time`` (UTC, ISO 8601,
        unless ``payload`` sets it) and the fields of ``payload``. While
        offline, events wait in a queue of MAX_QUEUED_EVENTS that drops the
        oldest when full. After a reconnect, events that paho had already sent
        but the broker had not acknowledged arrive after the queued ones.
        Raises MqttError if ``payload`` cannot be encoded as JSON.
        """
        message = {"event": name, "time": _utc_now_iso()}
        message.update(payload)
        message["event"] = name
        encoded = _encode_json(message, self.event_topic)

        with self._lock:
            if not self._connected:
                self._queue_event(name, encoded)
                return
        self._send(self.event_topic, encoded, EVENT_QOS, retain=False)

    # paho callbacks, run in paho's network thread

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: ReasonCode, properties: object) -> None:
        if reason.is_failure:
            self._handle_rejected_connection(reason)
            return

        with self._lock:
            failed_attempts = self._failed_attempts
            self._failed_attempts = 0
        if failed_attempts:
            log.info("Connected to MQTT broker %s:%d after %d failed attempts", self._config.host, self._config.port, failed_attempts)
        else:
            log.info("Connected to MQTT broker %s:%d", self._config.host, self._config.port)

        self._start_session()
        self._send(self.availability_topic, ONLINE.encode(), AVAILABILITY_QOS, retain=True)
        self._subscribe()
        if self._config.homeassistant_discovery:
            self._publish_discovery()
        self._republish_state()
        self._flush_queued_events()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        payload = bytes(message.payload)
        log.debug("Received %s: %s", message.topic, _truncate(payload))
        if message.topic == self.command_topic and self._config.commands_enabled:
            self._handle_command(payload)
        elif message.topic == self.homeassistant_status_topic and self._config.homeassistant_discovery:
            if payload.strip() == b"online":
                log.info("Home Assistant announced it is online, sending the discovery configs again")
                self._publish_discovery()
        else:
            log.debug("Ignoring a message on %s", message.topic)

    def _on_connect_fail(self, client: paho.Client, userdata: object) -> None:
        # NOTE: a broker that rejects the client certificate fails the TLS
        # handshake, which paho reports here like an unreachable broker. So a
        # rejected certificate is retried with backoff, unlike a rejected login.
        with self._lock:
            self._failed_attempts += 1
            attempts = self._failed_attempts
        if attempts == 1:
            log.warning(
                "Cannot connect to MQTT broker %s:%d, retrying with a delay of %d to %d s",
                self._config.host,
                self._config.port,
                RECONNECT_MIN_DELAY_SECONDS,
                RECONNECT_MAX_DELAY_SECONDS,
            )
        else:
            log.debug("MQTT connection attempt %d to %s:%d failed", attempts, self._config.host, self._config.port)

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object, reason: ReasonCode, properties: object) -> None:
        with self._lock:
            was_connected = self._connected
            self._mark_disconnected()
            quiet = self._stopping or self._fatal_error is not None
        with self._state_lock:
            self._state_live = False

        if was_connected and not quiet:
            log.warning("Lost the connection to MQTT broker %s:%d (%s), reconnecting", self._config.host, self._config.port, reason)

    def _build_client(self) -> paho.Client:
        config = self._config
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            clean_session=True,
            protocol=paho.MQTTv311,
        )
        client.on_log = _log_paho_message
        # An exception in a callback is logged instead of ending the network thread.
        client.suppress_exceptions = True
        client.reconnect_delay_set(RECONNECT_MIN_DELAY_SECONDS, RECONNECT_MAX_DELAY_SECONDS)
        client.will_set(self.availability_topic, OFFLINE, qos=AVAILABILITY_QOS, retain=True)

        password = read_secret(config.password_file, None, "MQTT password")
        if password is not None and not config.username:
            raise ConfigError(
                N_("mqtt.password_file is set but mqtt.username is empty. MQTT 3.1.1 sends a password only with a user name: set mqtt.username.")
            )
        if config.username:
            client.username_pw_set(config.username, password)

        if config.tls:
            self._set_up_tls(client)

        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _set_up_tls(self, client: paho.Client) -> None:
        set_up_tls(client, self._config)

    def _handle_rejected_connection(self, reason: ReasonCode) -> None:
        name = reason.getName()
        if name not in _LOGIN_REJECTED_REASONS:
            log.warning("MQTT broker %s:%d rejected the connection (%s), retrying", self._config.host, self._config.port, name)
            return

        error = MqttError(
            N_("The MQTT broker {host}:{port} rejected the login of user {user} ({reason}). Check mqtt.username and the password file, then restart the daemon."),
            host=self._config.host,
            port=self._config.port,
            user=self._config.username or "(anonymous)",
            reason=name,
        )
        log.error("%s Status reporting stops until restart.", error)
        with self._lock:
            self._fatal_error = error
            self._changed.notify_all()
        # disconnect() from a callback ends paho's loop_forever(), so it does not reconnect.
        self._client.disconnect()

    def _start_session(self) -> None:
        if self._session_counter is None:
            number = self._session + 1
        else:
            try:
                number = int(self._session_counter())
            except Exception:
                log.exception("The session counter failed; counting this session in memory")
                number = self._session + 1
        with self._state_lock:
            self._session = number
        log.info("MQTT session %d started", number)

    def _subscribe(self) -> None:
        # The broker drops the subscriptions of a clean session, so subscribe again on every connect.
        topics = []
        if self._config.commands_enabled:
            topics.append((self.command_topic, COMMAND_QOS))
        if self._config.homeassistant_discovery:
            topics.append((self.homeassistant_status_topic, DISCOVERY_QOS))
        if not topics:
            return
        result, _mid = self._client.subscribe(topics)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.warning("Subscribing to %s failed: %s", [topic for topic, _qos in topics], paho.error_string(result))

    def _publish_discovery(self) -> None:
        messages = discovery_messages(
            self._config.homeassistant_prefix,
            self._box.site,
            self._box.device,
            state_topic=self.state_topic,
            availability_topic=self.availability_topic,
            heartbeat_seconds=self._config.heartbeat_seconds,
        )
        for topic, config in messages:
            self._send(topic, _encode_json(config, topic), DISCOVERY_QOS, retain=True)
        log.info("Published %d Home Assistant discovery configs", len(messages))

    def _handle_command(self, payload: bytes) -> None:
        """Validate, rate-limit and run one command, then publish the reply."""
        command_name = None
        request_id = None
        try:
            command = parse_command(payload)
            command_name, request_id = command.name, command.request_id
            if not self._command_limiter.allow():
                raise CommandRejected(
                    rejection("rate_limited", N_("Too many commands: at most {limit} a minute. Try again later."), limit=self._config.commands_per_minute),
                    request_id,
                )
            reply = self._run_command(command)
        except CommandRejected as exc:
            request_id = request_id or exc.request_id
            reply = exc.reply
            log.warning("Rejected MQTT command %s (id %s): %s", command_name or "(unreadable)", request_id, exc.reply.code)

        document = reply_document(command_name, request_id, reply, _utc_now_iso())
        self._send(self.reply_topic, _encode_json(document, self.reply_topic), COMMAND_QOS, retain=False)

    def _run_command(self, command: Command) -> CommandReply:
        log.info("MQTT command %s (id %s)", command.name, command.request_id)
        if self._command_handler is None:
            return rejection("command_unavailable", N_("The daemon does not accept commands yet. Try again in a minute."))
        try:
            return self._command_handler(command)
        except Exception:
            log.exception("MQTT command %s (id %s) failed", command.name, command.request_id)
            return rejection("command_failed", N_("The command {name} failed on the box. See the daemon log."), name=command.name)

    def _republish_state(self) -> None:
        with self._state_lock:
            self._state_live = True
            if self._last_state is not None:
                payload = _encode_json({**self._last_state, "session": self._session}, self.state_topic)
                self._send(self.state_topic, payload, STATE_QOS, retain=True)
            if self._last_report is not None:
                self._send(self.report_topic, self._last_report, STATE_QOS, retain=True)

    def _flush_queued_events(self) -> None:
        """Send the events queued while offline, then mark the reporter connected.

        The flag is set in the same locked step that finds the queue empty, so
        an event published meanwhile cannot overtake the queued ones.
        """
        with self._lock:
            dropped = self._dropped_events
            self._dropped_events = 0
        if dropped:
            log.warning("Dropped the %d oldest MQTT events while offline (queue limit %d)", dropped, self._queued_events.maxlen)

        sent = 0
        while True:
            with self._lock:
                if not self._queued_events:
                    self._connected = True
                    self._changed.notify_all()
                    break
                payload = self._queued_events.popleft()
            self._send(self.event_topic, payload, EVENT_QOS, retain=False)
            sent += 1
        if sent:
            log.info("Sent %d MQTT events queued while offline", sent)

    def _queue_event(self, name: str, payload: bytes) -> None:
        """Queue an event while offline. The caller holds _lock."""
        if len(self._queued_events) == self._queued_events.maxlen:
            self._dropped_events += 1
            if self._dropped_events == 1:
                log.warning("MQTT event queue full (%d events), dropping the oldest until the broker is back", self._queued_events.maxlen)
        self._queued_events.append(payload)
        log.debug("Queued MQTT event %s while offline (%d queued)", name, len(self._queued_events))

    def _mark_disconnected(self) -> None:
        """Clear the connected flag. The caller holds _lock."""
        self._connected = False
        self._changed.notify_all()

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool) -> paho.MQTTMessageInfo:
        log.debug("Publish %s qos=%d retain=%s: %s", topic, qos, retain, _truncate(payload))
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("MQTT publish to %s failed: %s", topic, paho.error_string(info.rc))
        return info

    def _publish_offline(self) -> None:
        info = self._send(self.availability_topic, OFFLINE.encode(), AVAILABILITY_QOS, retain=True)
        try:
            info.wait_for_publish(timeout=STOP_PUBLISH_TIMEOUT_SECONDS)
        except (RuntimeError, ValueError) as exc:
            log.warning("Could not publish offline to %s (%s), so the broker publishes the will when the keepalive expires", self.availability_topic, exc)
            return
        if not info.is_published():
            log.warning(
                "MQTT broker did not acknowledge offline on %s within %.0f s, disconnecting anyway",
                self.availability_topic,
                STOP_PUBLISH_TIMEOUT_SECONDS,
            )


def credential_path(path: Path) -> Path:
    """Resolve a bare file name in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``), like ``read_secret``."""
    candidate = Path(path)
    credentials_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if not candidate.is_absolute() and credentials_dir:
        return Path(credentials_dir) / candidate
    return candidate


def set_up_tls(client: paho.Client, config: MqttConfig) -> None:
    """Verify the broker against ``ca_file`` (or the system CAs) and load the client certificate, if any.

    Raises MqttError naming the files that cannot be loaded.
    """
    ca_file = config.ca_file
    certfile = credential_path(config.certfile) if config.certfile else None
    keyfile = credential_path(config.keyfile) if config.keyfile else None
    try:
        client.tls_set(
            ca_certs=str(ca_file) if ca_file else None,
            certfile=str(certfile) if certfile else None,
            keyfile=str(keyfile) if keyfile else None,
        )
    except (OSError, ssl.SSLError) as exc:
        if certfile is None:
            raise MqttError(
                N_("Cannot load the MQTT CA certificates from {path}: {detail}. Check mqtt.ca_file."),
                path=ca_file or "(system default)",
                detail=exc,
            ) from exc
        raise MqttError(
            N_("Cannot load the MQTT CA certificates from {path} or the client certificate {certfile} with key {keyfile}: {detail}. Check mqtt.ca_file, mqtt.certfile and mqtt.keyfile."),
            path=ca_file or "(system default)",
            certfile=certfile,
            keyfile=keyfile,
            detail=exc,
        ) from exc


_PAHO_LOG = logging.getLogger(f"{__name__}.paho")
_PAHO_LOG_LEVELS = {
    paho.MQTT_LOG_DEBUG: logging.DEBUG,
    paho.MQTT_LOG_INFO: logging.INFO,
    paho.MQTT_LOG_NOTICE: logging.INFO,
    paho.MQTT_LOG_WARNING: logging.WARNING,
    paho.MQTT_LOG_ERR: logging.ERROR,
}


def _log_paho_message(client: paho.Client, userdata: object, level: int, message: str) -> None:
    """Forward paho's log to the ``sohoa.mqtt.paho`` logger."""
    python_level = _PAHO_LOG_LEVELS.get(level, logging.DEBUG)
    # paho-mqtt 2.2.0 runs its network loop once more after a clean
    # disconnect and reports that at error level; it is not a failure.
    if message.startswith("Client is not connected"):
        python_level = logging.DEBUG
    _PAHO_LOG.log(python_level, "%s", message)


def _encode_json(value: Mapping[str, object], topic: str) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise MqttError(N_("Cannot encode the MQTT message for {topic} as JSON: {detail}"), topic=topic, detail=exc) from exc


def _truncate(payload: bytes) -> str:
    text = payload.decode("utf-8", errors="replace")
    if len(text) <= LOGGED_PAYLOAD_CHARS:
        return text
    return f"{text[:LOGGED_PAYLOAD_CHARS]}... ({len(payload)} bytes)"


def _utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
