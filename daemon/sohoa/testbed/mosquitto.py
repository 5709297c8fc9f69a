"""A real mosquitto broker on 127.0.0.1 and a subscriber that records messages, for tests and demos.

Requires the Debian packages ``mosquitto`` (for ``/usr/sbin/mosquitto``) and
``mosquitto-clients``; ``mosquitto_passwd`` ships with ``mosquitto``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import paho.mqtt.client as paho
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from sohoa.fsutil import write_atomic

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
LOOPBACK = "127.0.0.1"
READY_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0
SUBSCRIBE_TIMEOUT_SECONDS = 10.0
CERTIFICATE_VALIDITY_DAYS = 30


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def write_password_file(path: Path, username: str, password: str) -> Path:
    """Create a mosquitto password file at ``path`` with one user, through ``mosquitto_passwd -b``."""
    path = Path(path)
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    subprocess.run([MOSQUITTO_PASSWD, "-b", str(path), username, password], check=True, capture_output=True, timeout=30)
    return path


@dataclass
class Broker:
    """A running mosquitto process that listens on ``host``:``port``; stop it with :meth:`stop`."""

    host: str
    port: int
    process: subprocess.Popen
    log_path: Path
    config_path: Path = field(repr=False)
    ca_file: Path | None = None  # the CA that signed the broker's certificate, when it listens with TLS

    def stop(self) -> None:
        """Terminate the broker by its PID and wait for it; kill it if it does not exit in time."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def restart(self) -> None:
        """Stop the broker and start it again on the same port with the same configuration."""
        self.stop()
        self.process = _launch(self.config_path, self.host, self.port, self.log_path)

    def log_text(self) -> str:
        """Return the broker's log file so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def count_connect_attempts(self) -> int:
        """Return how many CONNACK packets the broker has sent (one per MQTT connection attempt), counted from its log.

        The readiness probe of :func:`start_mosquitto` opens a TCP connection
        without sending CONNECT, so it is not counted.
        """
        return self.log_text().count("Sending CONNACK to")

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_mosquitto(
    folder: Path, port: int = 0, *, password_file: Path | None = None, persistence: bool = False, tls: bool = False
) -> Broker:
    """Start mosquitto on 127.0.0.1 and return once it accepts connections.

    ``port`` 0 picks a free port. The configuration and the log go into
    ``folder``. Without ``persistence`` a restart loses retained messages
    and sessions. With it, the broker saves them in ``folder`` when it stops
    and loads them when it starts. Anonymous clients are allowed unless
    ``password_file`` is given. With ``tls`` the listener speaks TLS only,
    with a certificate for 127.0.0.1 from a throw-away CA (``Broker.ca_file``).
    Raises RuntimeError with the log's tail if the broker exits or does not
    listen within READY_TIMEOUT_SECONDS.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config_path = folder / "mosquitto.conf"
    log_path = folder / "mosquitto.log"
    persistence_dir = folder if persistence else None
    certificates = create_broker_certificates(folder / "tls") if tls else None
    config_path.write_text(_render_config(port, log_path, password_file, persistence_dir, certificates), encoding="utf-8")

    process = _launch(config_path, LOOPBACK, port, log_path)
    return Broker(LOOPBACK, port, process, log_path, config_path, certificates.ca_file if certificates else None)


@dataclass(frozen=True)
class BrokerCertificates:
    """PEM files of a throw-away CA and of a broker certificate it signed for 127.0.0.1."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def create_broker_certificates(folder: Path) -> BrokerCertificates:
    """Create a test CA and a server certificate for 127.0.0.1 in ``folder``; for tests only."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    valid_until = now + dt.timedelta(days=CERTIFICATE_VALIDITY_DAYS)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sohoa test MQTT CA (not trusted)")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(valid_until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(valid_until)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    certificates = BrokerCertificates(folder / "ca.pem", folder / "broker.pem", folder / "broker.key")
    write_atomic(certificates.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM))
    write_atomic(certificates.cert_file, server_cert.public_bytes(serialization.Encoding.PEM))
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomic(certificates.key_file, key_pem)
    return certificates


def _render_config(
    port: int, log_path: Path, password_file: Path | None, persistence_dir: Path | None, certificates: BrokerCertificates | None
) -> str:
    lines = [
        # mosquitto started as root switches to the user "mosquitto", which
        # could not write the log into a test folder; keep the current user.
        f"user {pwd.getpwuid(os.getuid()).pw_name}",
        f"listener {port} {LOOPBACK}",
        f"log_dest file {log_path}",
        "log_type all",
        "connection_messages true",
        "log_timestamp true",
    ]
    if certificates is not None:
        lines += [
            f"cafile {certificates.ca_file.resolve()}",
            f"certfile {certificates.cert_file.resolve()}",
            f"keyfile {certificates.key_file.resolve()}",
        ]
    if persistence_dir is None:
        lines.append("persistence false")
    else:
        lines += ["persistence true", f"persistence_location {persistence_dir.resolve()}/"]
    if password_file is None:
        lines.append("allow_anonymous true")
    else:
        lines += ["allow_anonymous false", f"password_file {Path(password_file).resolve()}"]
    return "\n".join(lines) + "\n"


def _launch(config_path: Path, host: str, port: int, log_path: Path) -> subprocess.Popen:
    process = subprocess.Popen([MOSQUITTO, "-c", str(config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_until_listening(process, host, port)
    except RuntimeError as exc:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        log_tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        raise RuntimeError(f"{exc}\nstderr: {stderr}\nlog: {log_tail}") from None
    return process


def _wait_until_listening(process: subprocess.Popen, host: str, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited with status {process.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not listen on {host}:{port} within {READY_TIMEOUT_SECONDS:.0f} s")


class RecordedMessage(NamedTuple):
    topic: str
    payload: bytes
    retain: bool

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")


class MessageRecorder:
    """Subscribe to ``topic`` (wildcards allowed) and record every message received.

    The constructor returns once the broker has confirmed the subscription.
    The recorder reconnects and subscribes again after a broker restart, so it
    then receives the retained messages again with ``retain`` set. With
    ``clean_session=False`` and a fixed ``client_id``, a broker started with
    persistence keeps the subscription across its restart and queues the QoS 1
    messages published while the recorder was disconnected.
    """

    def __init__(self, host: str, port: int, topic: str, *, client_id: str | None = None, clean_session: bool = True) -> None:
        self.topic = topic
        self._messages: list[RecordedMessage] = []
        self._condition = threading.Condition()
        self._subscribed = False

        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"recorder-{uuid.uuid4().hex[:12]}",
            clean_session=clean_session,
            protocol=paho.MQTTv311,
        )
        self._client.reconnect_delay_set(1, 2)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.connect_async(host, port, keepalive=30)
        self._client.loop_start()

        if not self.wait_subscribed(SUBSCRIBE_TIMEOUT_SECONDS):
            self.stop()
            raise TimeoutError(f"no subscription to {topic} on {host}:{port} within {SUBSCRIBE_TIMEOUT_SECONDS:.0f} s")

    @property
    def messages(self) -> list[RecordedMessage]:
        """A copy of the messages received so far, oldest first."""
        with self._condition:
            return list(self._messages)

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._condition:
            self._messages.clear()

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait until the current connection's subscription is confirmed."""
        with self._condition:
            return self._condition.wait_for(lambda: self._subscribed, timeout)

    def wait_for(self, predicate: Callable[[RecordedMessage], bool], timeout: float) -> RecordedMessage:
        """Return the first recorded message that matches ``predicate``, waiting up to ``timeout`` seconds.

        Raises TimeoutError listing the messages received if none matches.
        """
        def find() -> RecordedMessage | None:
            return next((message for message in self._messages if predicate(message)), None)

        with self._condition:
            found = self._condition.wait_for(find, timeout)
            if found is None:
                raise TimeoutError(f"no matching message on {self.topic} within {timeout} s; received: {self._messages!r}")
            return found

    def stop(self) -> None:
        """Disconnect from the broker and end the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> MessageRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: object, properties: object) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, reasons: object, properties: object) -> None:
        with self._condition:
            self._subscribed = True
            self._condition.notify_all()

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object, reason: object, properties: object) -> None:
        with self._condition:
            self._subscribed = False
            self._condition.notify_all()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._condition:
            self._messages.append(RecordedMessage(message.topic, bytes(message.payload), bool(message.retain)))
            self._condition.notify_all()
