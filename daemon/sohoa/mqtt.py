"""Status reporting over MQTT: availability, the box's state and job events.

Topics, under ``{prefix}/{site}/{device}/``:

* ``availability``: retained ``online`` after every (re)connect. The Last Will
  is a retained ``offline`` on the same topic, so the broker announces a crash
  or a lost network by itself; :meth:`StatusReporter.stop` publishes
  ``offline`` itself, because a clean DISCONNECT discards the will.
* ``state``: the daemon's state as retained UTF-8 JSON.
* ``event``: job events as UTF-8 JSON, QoS 1, not retained.

This module only transports: the daemon builds the state and event payloads.
The client speaks MQTT 3.1.1 through paho-mqtt 2.x and runs paho's network
thread, which reconnects with exponential backoff.
"""

from __future__ import annotations

import collections
import json
import logging
import ssl
import threading
from collections.abc import Mapping
from datetime import datetime, timezone

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from sohoa.config import BoxConfig, MqttConfig, read_secret
from sohoa.errors import ConfigError, MqttError
from sohoa.i18n import N_

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

RECONNECT_MIN_DELAY_SECONDS = 1
RECONNECT_MAX_DELAY_SECONDS = 60
STOP_PUBLISH_TIMEOUT_SECONDS = 5.0
MAX_QUEUED_EVENTS = 1000
LOGGED_PAYLOAD_CHARS = 200

# CONNACK reason names after which retrying with the same credentials cannot
# succeed. paho maps the MQTT 3.1.1 return codes 4 and 5 to the first two.
_LOGIN_REJECTED_REASONS = frozenset({"Bad user name or password", "Not authorized", "Banned", "Bad authentication method"})


class StatusReporter:
    """Publish the box's availability, state and events to an MQTT broker.

    Thread-safe: the daemon calls the publish methods from any thread, and
    paho's network thread runs the callbacks. Nothing here blocks on the
    network except :meth:`stop` (bounded) and :meth:`wait_connected`.
    """

    def __init__(self, mqtt: MqttConfig, box: BoxConfig, client_id: str | None = None) -> None:
        self._config = mqtt
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
        self._last_state: bytes | None = None
        self._state_live = False

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
        Raises MqttError if ``state`` cannot be encoded as JSON.
        """
        payload = _encode_json(state, self.state_topic)
        with self._state_lock:
            self._last_state = payload
            if self._state_live:
                self._send(self.state_topic, payload, STATE_QOS, retain=True)

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

        self._send(self.availability_topic, ONLINE.encode(), AVAILABILITY_QOS, retain=True)
        self._republish_state()
        self._flush_queued_events()

    def _on_connect_fail(self, client: paho.Client, userdata: object) -> None:
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
        return client

    def _set_up_tls(self, client: paho.Client) -> None:
        ca_file = self._config.ca_file
        try:
            client.tls_set(ca_certs=str(ca_file) if ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise MqttError(
                N_("Cannot load the MQTT CA certificates from {path}: {detail}. Check mqtt.ca_file."),
                path=ca_file or "(system default)",
                detail=exc,
            ) from exc

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

    def _republish_state(self) -> None:
        with self._state_lock:
            self._state_live = True
            if self._last_state is not None:
                self._send(self.state_topic, self._last_state, STATE_QOS, retain=True)

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
