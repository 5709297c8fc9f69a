"""Remote commands on the MQTT command topic: parsing, rate limiting and replies.

A command is a UTF-8 JSON object ``{"command": "scan", "id": "req-17"}``.
``id`` is optional and is copied into the reply so that the sender can match
them. The broker's access control decides who may publish commands; the box
accepts only the names in COMMANDS, at most ``mqtt.commands_per_minute``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass

from sohoa.i18n import N_, gettext as _

COMMANDS = ("scan", "cancel", "flush-uploads", "reload", "ping")
MAX_COMMAND_BYTES = 1024
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
ALLOWED_KEYS = frozenset({"command", "id"})


@dataclass(frozen=True)
class Command:
    name: str
    request_id: str | None


@dataclass(frozen=True)
class CommandReply:
    """The outcome of one command: ``code`` is stable, ``message`` is for people, in the box's language."""

    ok: bool
    code: str
    message: str


class CommandRejected(Exception):
    """An invalid command payload. ``reply`` contains the reason, and ``request_id`` the id when it was readable."""

    def __init__(self, reply: CommandReply, request_id: str | None = None) -> None:
        super().__init__(reply.message)
        self.reply = reply
        self.request_id = request_id


def rejection(code: str, template: str, **params: object) -> CommandReply:
    """Build a failed reply from an ``N_()`` template, translated now."""
    return CommandReply(False, code, _(template).format(**params))


def parse_command(payload: bytes) -> Command:
    """Decode and validate one command payload; raise CommandRejected if it is not valid."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandRejected(
            rejection("command_too_large", N_("The command is {size} bytes, more than the limit of {limit} bytes."), size=len(payload), limit=MAX_COMMAND_BYTES)
        )
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandRejected(
            rejection("command_invalid", N_("The command is not UTF-8 JSON ({detail}). Send an object such as {example}."), detail=exc, example='{"command": "ping"}')
        ) from exc
    if not isinstance(data, dict):
        raise CommandRejected(rejection("command_invalid", N_("The command must be a JSON object such as {example}."), example='{"command": "ping"}'))

    request_id = data.get("id")
    if request_id is not None and (not isinstance(request_id, str) or not REQUEST_ID_PATTERN.match(request_id)):
        raise CommandRejected(
            rejection("command_invalid", N_("The command id must be 1 to 64 letters, digits or the characters _ . : -")),
        )
    unknown = sorted(set(data) - ALLOWED_KEYS)
    if unknown:
        raise CommandRejected(
            rejection("command_invalid", N_("Unknown keys in the command: {keys}. Only command and id are allowed."), keys=", ".join(unknown)),
            request_id,
        )
    name = data.get("command")
    if name not in COMMANDS:
        raise CommandRejected(
            rejection("command_unknown", N_("Unknown command {name}. Valid commands: {valid}."), name=json.dumps(name, ensure_ascii=False), valid=", ".join(COMMANDS)),
            request_id,
        )
    return Command(name, request_id)


class RateLimiter:
    """A token bucket: at most ``per_minute`` commands in a burst, refilled at ``per_minute`` a minute."""

    def __init__(self, per_minute: int, clock=time.monotonic) -> None:
        self._capacity = float(per_minute)
        self._refill_per_second = per_minute / 60.0
        self._tokens = float(per_minute)
        self._clock = clock
        self._updated = clock()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Take one token and return True, or return False when the bucket is empty."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._refill_per_second)
            self._updated = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


def reply_document(command: str | None, request_id: str | None, reply: CommandReply, time_iso: str) -> dict:
    """Return the JSON object published on the reply topic."""
    return {
        "id": request_id,
        "command": command,
        "ok": reply.ok,
        "code": reply.code,
        "message": reply.message,
        "time": time_iso,
    }
