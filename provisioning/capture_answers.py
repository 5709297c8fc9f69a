"""The answers that shape capture: the ``[capture]`` table, ``[profiles.NAME]``, ``[[buttons]]`` and the optional flat keys.

These answers map one to one onto keys of ``sohoa.toml``. An answer left out
is left out of the rendered file too, so the daemon's own default applies and
a box provisioned without them behaves as before. This module checks only the
types; ``sohoa.config.parse_config`` checks ranges and cross-references once
the file is rendered.

Only the Python standard library is used, like ``provision.py``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import PurePosixPath

# Answer types: a TOML value of this kind, or a list or table of strings.
BOOLEAN, WHOLE, NUMBER, TEXT, TEXT_LIST, TEXT_TABLE = "boolean", "whole number", "number", "string", "list of strings", "table of strings"

# [capture] answers and their types; each goes to the capture key of the same name.
CAPTURE_KEYS = {
    "scanner_buttons": BOOLEAN,
    "auto_start": BOOLEAN,
    "poll_seconds": NUMBER,
    "scanner_button_options": TEXT_LIST,
    "scanner_button_profiles": TEXT_TABLE,
    "paper_sensor_options": TEXT_LIST,
    "separator_sheets": BOOLEAN,
    "hot_folder": TEXT,
    "hot_folder_profile": TEXT,
    "hot_folder_settle_seconds": NUMBER,
    "remove_blank_pages": BOOLEAN,
    "deskew": BOOLEAN,
    "crop": BOOLEAN,
}
# [capture] answers that only the provisioner reads: they are not written into sohoa.toml.
CAPTURE_PROVISIONING_KEYS = {"hot_folder_group": TEXT}
PROFILE_KEYS = {"label": TEXT, "type_code": TEXT, "source": TEXT, "mode": TEXT, "resolution": WHOLE, "flatbed": BOOLEAN}
BUTTON_KEYS = {"pin": WHOLE, "profile": TEXT}

# Flat answers: answer name -> (section, key, type). An empty string means unset.
FLAT_KEYS = {
    "long_press_seconds": ("gpio", "long_press_seconds", NUMBER),
    "attach_fields": ("pdf", "attach_fields", BOOLEAN),
    "max_rejections": ("upload", "max_rejections", WHOLE),
    "tsa_url": ("signing", "tsa_url", TEXT),
    "rsa_padding": ("signing", "rsa_padding", TEXT),
    "unit_key_id": ("signing", "unit_key_id", TEXT),
    "unit_token_label": ("signing", "unit_token_label", TEXT),
    "unit_signer_name": ("signing", "unit_signer_name", TEXT),
    "unit_sign_types": ("signing", "unit_sign_types", TEXT_LIST),
}
TABLE_ANSWERS = ("capture", "profiles", "buttons")

# systemd mounts these over the service's view: ProtectHome=yes hides the first
# three and PrivateTmp=yes gives the service its own empty /tmp and /var/tmp.
HIDDEN_FROM_SERVICE = {
    PurePosixPath("/home"): "ProtectHome=yes hides /home from the service",
    PurePosixPath("/root"): "ProtectHome=yes hides /root from the service",
    PurePosixPath("/run/user"): "ProtectHome=yes hides /run/user from the service",
    PurePosixPath("/tmp"): "PrivateTmp=yes gives the service its own /tmp",
    PurePosixPath("/var/tmp"): "PrivateTmp=yes gives the service its own /var/tmp",
}
# Characters a ReadWritePaths= entry can carry without quoting.
SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./-]+$")
GROUP_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")
# Groups whose members get administrator rights or raw disk access; sohoa must not join them.
PRIVILEGED_GROUPS = {"root", "sudo", "wheel", "adm", "admin", "shadow", "disk", "staff"}


def check_capture_answers(answers: dict[str, object]) -> list[str]:
    """Return one line per capture, profile, button or flat answer of the wrong type or name."""
    problems = []
    for name, (_section, _key, kind) in FLAT_KEYS.items():
        value = answers.get(name, "")
        if value != "":
            problems += _check_value(name, _from_text(value, kind), kind)

    capture = answers.get("capture", {})
    if not isinstance(capture, dict):
        return problems + ["capture: expected a [capture] table"]
    problems += _check_table("capture", capture, CAPTURE_KEYS | CAPTURE_PROVISIONING_KEYS)
    if isinstance(capture.get("hot_folder"), str):
        problems += check_hot_folder(capture["hot_folder"])
    group = capture.get("hot_folder_group")
    if isinstance(group, str) and not GROUP_NAME.match(group):
        problems.append(f"capture.hot_folder_group: {group!r} is not a group name (lower-case letters, digits, _ and -)")
    if group in PRIVILEGED_GROUPS:
        problems.append(f"capture.hot_folder_group: {group} is a privileged group; name a group for the share, such as scan-share")
    if group and not capture.get("hot_folder"):
        problems.append("capture.hot_folder_group: set capture.hot_folder too, because the group owns that folder")

    profiles = answers.get("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(table, dict) for table in profiles.values()):
        problems.append("profiles: expected [profiles.NAME] tables")
    else:
        for name, table in profiles.items():
            problems += _check_table(f"profiles.{name}", table, PROFILE_KEYS)

    buttons = answers.get("buttons", [])
    if not isinstance(buttons, list) or not all(isinstance(table, dict) for table in buttons):
        problems.append("buttons: expected [[buttons]] tables")
    else:
        for index, table in enumerate(buttons):
            problems += _check_table(f"buttons[{index}]", table, BUTTON_KEYS)
    return problems


def check_hot_folder(folder: str) -> list[str]:
    """Return why ``folder`` cannot be the hot folder of a service under sohoa.service's sandbox, or nothing."""
    if not SAFE_PATH.match(folder) or ".." in folder.split("/"):
        return [f"capture.hot_folder: {folder!r} must be an absolute path of letters, digits and _ . - / without '..'"]
    path = PurePosixPath(folder)
    for hidden, reason in HIDDEN_FROM_SERVICE.items():
        if path == hidden or hidden in path.parents:
            return [f"capture.hot_folder: {folder} is under {hidden}, but {reason}; use a folder such as /srv/sohoa/inbox"]
    return []


def normalize_capture_answers(answers: dict[str, object]) -> dict[str, object]:
    """Convert flat answers given as text (``--set``) to their types; tables are left as TOML read them."""
    normalized = dict(answers)
    for name, (_section, _key, kind) in FLAT_KEYS.items():
        value = answers.get(name, "")
        normalized[name] = "" if value == "" else _from_text(value, kind)
    for name in TABLE_ANSWERS:
        normalized.setdefault(name, [] if name == "buttons" else {})
    return normalized


def render_capture_blocks(answers: dict[str, object]) -> dict[str, str]:
    """Return the template values that carry the capture answers: key lines per section and whole sections."""
    lines: dict[str, list[str]] = {"gpio": [], "pdf": [], "upload": [], "signing": []}
    for name, (section, key, _kind) in FLAT_KEYS.items():
        if answers[name] != "":
            lines[section].append(f"{key} = {toml_literal(answers[name])}")
    blocks = {f"{section}_extra_lines": "\n".join(section_lines) for section, section_lines in lines.items()}

    buttons = [f"[[gpio.buttons]]\n{_key_lines(button, BUTTON_KEYS)}" for button in answers["buttons"]]
    blocks["buttons_section"] = "\n\n".join(buttons)

    capture = {key: value for key, value in answers["capture"].items() if key in CAPTURE_KEYS}
    blocks["capture_section"] = "[capture]\n" + (_key_lines(capture, CAPTURE_KEYS) or "# every key at its default")

    profiles = [f"[profiles.{_table_key(name)}]\n{_key_lines(table, PROFILE_KEYS)}" for name, table in answers["profiles"].items()]
    blocks["profiles_section"] = "\n\n".join(profiles)
    return blocks


def toml_literal(value: object) -> str:
    """Return ``value`` as a TOML literal: a boolean, number, basic string, array or inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_table_key(key)} = {toml_literal(item)}" for key, item in value.items()) + " }"
    # A JSON string is a valid TOML basic string: the same quotes and escapes.
    return json.dumps(str(value), ensure_ascii=False)


def _key_lines(table: dict[str, object], keys: dict[str, str]) -> str:
    """Return ``key = value`` lines in the order of ``keys``, so the rendered file does not depend on the answers' order."""
    return "\n".join(f"{key} = {toml_literal(table[key])}" for key in keys if key in table)


def _table_key(name: str) -> str:
    return name if re.match(r"^[A-Za-z0-9_-]+$", name) else json.dumps(name, ensure_ascii=False)


def _check_table(where: str, table: dict[str, object], keys: dict[str, str]) -> list[str]:
    problems = [f"{where}.{key}: unknown key" for key in sorted(table) if key not in keys]
    for key, value in table.items():
        if key in keys:
            problems += _check_value(f"{where}.{key}", value, keys[key])
    return problems


def _check_value(where: str, value: object, kind: str) -> list[str]:
    valid = {
        BOOLEAN: isinstance(value, bool),
        WHOLE: isinstance(value, int) and not isinstance(value, bool),
        NUMBER: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        TEXT: isinstance(value, str),
        TEXT_LIST: isinstance(value, list) and all(isinstance(item, str) for item in value),
        TEXT_TABLE: isinstance(value, dict) and all(isinstance(item, str) for item in value.values()),
    }[kind]
    return [] if valid else [f"{where}: {value!r} is not a {kind}"]


def _from_text(value: object, kind: str) -> object:
    """Convert a ``--set`` string to ``kind``; a value of another type, or text that does not convert, is returned as it is."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if kind == BOOLEAN and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if kind == WHOLE and re.match(r"^-?\d+$", text):
        return int(text)
    if kind == NUMBER and re.match(r"^-?\d+(\.\d+)?$", text):
        return float(text)
    if kind == TEXT_LIST:
        return [item.strip() for item in text.split(",") if item.strip()]
    return value
