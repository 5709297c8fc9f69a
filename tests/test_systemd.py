"""The systemd unit, udev rules and sysusers file: systemd's own checks, the exposure score, and sd_notify from the daemon."""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sohoa.testbed.demo import build_testbed, write_toml

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "sohoa.service"
UDEV_RULES = REPO / "systemd" / "udev" / "70-sohoa.rules"
SYSUSERS = REPO / "systemd" / "sysusers.d" / "sohoa.conf"
CONFIG_TEMPLATE = REPO / "provisioning" / "templates" / "sohoa.toml.in"
MOUNT_TEMPLATE = REPO / "provisioning" / "templates" / "var-lib-sohoa.mount.in"
HOST_UNITS = Path("/usr/lib/systemd/system")
# docs/systemd.md states the score that systemd 252's `systemd-analyze security --offline=true` gives.
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is missing: install the Debian package systemd"
)


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Return each ``Key`` of the unit with all its values, in file order; systemd allows repeated keys."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def make_verify_root(folder: Path) -> Path:
    """Build a root with the host's system units, the sohoa unit and an executable at its ExecStart path."""
    root = folder / "root"
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copyfile(UNIT, root / "etc/systemd/system/sohoa.service")
    # verify checks that ExecStart= names an executable; the real one comes from pip in the venv.
    executable = root / "opt/sohoa/.venv/bin/sohoa"
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    executable.chmod(0o755)
    return root


def verify(root: Path, unit: str) -> subprocess.CompletedProcess:
    command = ["systemd-analyze", "verify", f"--root={root}", "--man=no", "--generators=no", unit]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@needs_analyze
def test_unit_passes_verify(tmp_path):
    root = make_verify_root(tmp_path)

    result = verify(root, "sohoa.service")

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", "systemd-analyze verify warned:\n" + result.stderr


@needs_analyze
def test_mount_template_passes_verify(tmp_path):
    root = make_verify_root(tmp_path)
    mount = string.Template(MOUNT_TEMPLATE.read_text(encoding="utf-8")).substitute(data_device="LABEL=sohoa-data")
    (root / "etc/systemd/system/var-lib-sohoa.mount").write_text(mount, encoding="utf-8")

    result = verify(root, "var-lib-sohoa.mount")

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@needs_analyze
def test_verify_catches_unknown_key(tmp_path):
    root = make_verify_root(tmp_path)
    unit = root / "etc/systemd/system/sohoa.service"
    unit.write_text(unit.read_text(encoding="utf-8").replace("[Service]\n", "[Service]\nWatchDogSecs=10\n"), encoding="utf-8")

    result = verify(root, "sohoa.service")

    assert "Unknown key" in result.stderr


@needs_analyze
def test_security_exposure_low():
    command = ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)

    match = re.search(r"Overall exposure level for sohoa\.service: (\d+\.\d+)", result.stdout)
    assert result.returncode == 0, result.stderr
    assert match, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_unit_contract():
    settings = unit_settings(UNIT)

    assert settings["Type"] == ["notify"]
    assert settings["Restart"] == ["on-failure"]
    assert int(settings["WatchdogSec"][0]) > 0
    assert settings["User"] == ["sohoa"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["ReadWritePaths"] == ["/var/lib/sohoa"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["PrivateTmp"] == ["yes"]
    assert settings["CapabilityBoundingSet"] == [""]
    assert settings["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
    assert "@system-service" in settings["SystemCallFilter"]


def test_watchdog_longer_than_heartbeat():
    settings = unit_settings(UNIT)
    heartbeat = re.search(r"^heartbeat_seconds = (\d+)", CONFIG_TEMPLATE.read_text(encoding="utf-8"), re.MULTILINE)

    # The main loop pings once per heartbeat, so one late ping must not trip the watchdog.
    assert int(settings["WatchdogSec"][0]) >= 2 * int(heartbeat.group(1))


def test_credentials_match_config_template():
    credentials = {value.split(":")[0]: value.split(":", 1)[1] for value in unit_settings(UNIT)["LoadCredential"]}
    template = CONFIG_TEMPLATE.read_text(encoding="utf-8")

    assert credentials == {
        "token-pin": "/etc/sohoa/credentials/token-pin",
        "archive-token": "/etc/sohoa/credentials/archive-token",
    }
    assert 'pin_file = "token-pin"' in template
    assert 'token_file = "archive-token"' in template


def test_groups_match_sysusers_and_udev():
    groups = set(unit_settings(UNIT)["SupplementaryGroups"][0].split())
    members = {line.split()[2] for line in SYSUSERS.read_text(encoding="utf-8").splitlines() if line.startswith("m ")}
    udev_groups = set(re.findall(r'GROUP="([^"]+)"', UDEV_RULES.read_text(encoding="utf-8")))

    assert groups == {"scanner", "gpio", "sohoa-token"}
    assert members == groups
    assert udev_groups == groups


UDEV_KEY = re.compile(r'^(?P<key>[A-Z]+)(\{(?P<attribute>[^}]+)\})?(?P<operator>==|!=|\+=|-=|:=|=)"(?P<value>[^"]*)"$')
UDEV_MATCH_KEYS = {"ACTION", "SUBSYSTEM", "SUBSYSTEMS", "KERNEL", "ENV", "ATTR", "ATTRS", "TEST"}
UDEV_ASSIGN_KEYS = {"GROUP", "MODE", "OWNER", "ENV", "TAG", "GOTO", "LABEL", "RUN"}


def test_udev_rules_syntax():
    problems = []
    for number, line in enumerate(UDEV_RULES.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        for token in (part.strip() for part in line.split(",")):
            match = UDEV_KEY.match(token)
            if match is None:
                problems.append(f"line {number}: cannot parse {token!r}")
                continue
            key, operator = match["key"], match["operator"]
            allowed = UDEV_MATCH_KEYS if operator in ("==", "!=") else UDEV_ASSIGN_KEYS
            if key not in allowed:
                problems.append(f"line {number}: {key} with {operator}")
            if key == "MODE" and not re.fullmatch(r"0[0-7]{3}", match["value"]):
                problems.append(f"line {number}: MODE {match['value']}")

    labels = re.findall(r'LABEL="([^"]+)"', UDEV_RULES.read_text(encoding="utf-8"))
    gotos = re.findall(r'GOTO="([^"]+)"', UDEV_RULES.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)
    assert set(gotos) <= set(labels)


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers is missing: install the Debian package systemd")
def test_sysusers_creates_accounts(tmp_path):
    (tmp_path / "etc").mkdir()
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)], check=True, capture_output=True, timeout=60)

    passwd = (tmp_path / "etc/passwd").read_text(encoding="utf-8")
    group = (tmp_path / "etc/group").read_text(encoding="utf-8")
    assert re.search(r"^sohoa:x:\d+:\d+:sohoa scanner box:/var/lib/sohoa:/usr/sbin/nologin$", passwd, re.MULTILINE)
    for name in ("scanner", "gpio", "sohoa-token"):
        assert re.search(rf"^{name}:x:\d+:sohoa$", group, re.MULTILINE), group


# sd_notify from the running daemon


@pytest.fixture
def notify_socket():
    """A datagram socket where the daemon sends its sd_notify messages, as systemd's NOTIFY_SOCKET."""
    folder = tempfile.mkdtemp(prefix="sohoa-notify-", dir="/tmp")
    path = os.path.join(folder, "notify")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    try:
        yield server, path
    finally:
        server.close()
        shutil.rmtree(folder)


def receive_until(server: socket.socket, wanted, timeout: float) -> list[str]:
    """Collect notify messages until ``wanted(messages)`` holds; fail after ``timeout`` seconds."""
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while not wanted(messages):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out; received {messages}"
        server.settimeout(remaining)
        try:
            messages.append(server.recv(4096).decode("utf-8"))
        except socket.timeout:
            continue
    return messages


def test_daemon_notifies_systemd(tmp_path, notify_socket):
    server, path = notify_socket
    with build_testbed(tmp_path / "bed") as bed:
        sections = copy.deepcopy(bed.sections)
        sections["mqtt"]["heartbeat_seconds"] = 0.5
        config = tmp_path / "sohoa.toml"
        write_toml(config, sections)
        environment = {**os.environ, "NOTIFY_SOCKET": path, "SOHOA_LANG": "en", "PYTHONPATH": str(REPO / "daemon")}
        log_path = tmp_path / "daemon.log"
        with open(log_path, "wb") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "sohoa", "--config", str(config), "run"], env=environment, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            started = receive_until(server, lambda seen: "READY=1" in seen and "WATCHDOG=1" in seen, timeout=60)
            daemon.send_signal(signal.SIGTERM)
            stopped = receive_until(server, lambda seen: "STOPPING=1" in seen, timeout=30)
            status = daemon.wait(timeout=90)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(timeout=30)

    assert status == 0, log_path.read_text(encoding="utf-8")
    assert "STATUS=Ready: load the paper and press the button." in started
    assert started.index("READY=1") < started.index("WATCHDOG=1")
    assert "STOPPING=1" in stopped
