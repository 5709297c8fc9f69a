#!/usr/bin/env python3
"""Turn a fresh Debian 12 / Raspberry Pi OS into an enrolled sohoa box, idempotently.

Run it as root from a checkout of this repository:

    sudo provisioning/provision.py --answers /boot/firmware/sohoa-answers.toml

The answers file contains this box's values (site, device id, operator, scanner,
token, broker, archive), the paths of its secret files and, optionally, its
capture settings, profiles, buttons and hot folder (``capture_answers.py``);
see ``provisioning/templates/answers.toml.example``. Every step compares what is
on disk with what it would write and only changes what differs, so a second
run reports 0 changes. ``--root DIR`` provisions the file tree under DIR
instead of ``/`` (for tests and image builds); it needs ``--skip-packages``
and ``--skip-python``, because apt-get and pip cannot install into a prefix.

Only the Python standard library is used, because this runs before the
package and its virtual environment exist.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import string
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from capture_answers import (
    FLAT_KEYS,
    TABLE_ANSWERS,
    check_capture_answers,
    normalize_capture_answers,
    render_capture_blocks,
    toml_literal,
)

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "provisioning" / "templates"
PACKAGES_FILE = REPO / "provisioning" / "box-packages.txt"

INSTALL_DIR = PurePosixPath("/opt/sohoa")
VENV_DIR = INSTALL_DIR / ".venv"
MODELS_DIR = INSTALL_DIR / "models"
DOCS_DIR = INSTALL_DIR / "docs"
SOURCE_STAMP = VENV_DIR / "sohoa-source.sha256"
DATA_DIR = PurePosixPath("/var/lib/sohoa")
CONFIG_DIR = PurePosixPath("/etc/sohoa")
CONFIG_FILE = CONFIG_DIR / "sohoa.toml"
CREDENTIALS_DIR = CONFIG_DIR / "credentials"
CA_DIR = CONFIG_DIR / "ca"
UNIT_DIR = PurePosixPath("/etc/systemd/system")
UNIT_NAME = "sohoa.service"
DROP_IN_DIR = UNIT_DIR / f"{UNIT_NAME}.d"
DATA_MOUNT_NAME = "var-lib-sohoa.mount"
UDEV_RULES = PurePosixPath("/etc/udev/rules.d/70-sohoa.rules")
SYSUSERS_FILE = PurePosixPath("/etc/sysusers.d/sohoa.conf")
HOT_FOLDER_SYSUSERS_FILE = PurePosixPath("/etc/sysusers.d/sohoa-hot-folder.conf")
HOT_FOLDER_DROP_IN = DROP_IN_DIR / "hot-folder.conf"
# setgid, so that files the share users save keep the folder's group; no access for others.
HOT_FOLDER_MODE = 0o2770
SERVICE_USER = "sohoa"

REQUIRED_ANSWERS = (
    "site", "device", "unit", "operator", "agency_code", "scanner_device",
    "token_module", "token_label", "key_id", "broker_host", "archive_url",
)  # fmt: skip
DEFAULT_ANSWERS: dict[str, object] = {
    "department": "",
    "language": "vi",
    "min_free_mb": 200,
    "scanner_source": "",
    "scanner_mode": "Color",
    "scanner_resolution": 300,
    "ocr_threads": 2,
    "broker_port": 8883,
    "broker_tls": True,
    "broker_username": "",
    "broker_prefix": "sohoa",
    "data_device": "",
    "buzzer_pin": "",
}
# Secrets copied into CREDENTIALS_DIR: answer key, credential name, whether the unit needs it to start.
CREDENTIALS = (
    ("token_pin_file", "token-pin", True),
    ("archive_token_file", "archive-token", True),
    ("broker_password_file", "mqtt-password", False),
    ("broker_keyfile", "mqtt-client-key", False),
    ("unit_pin_file", "unit-token-pin", False),
)
# Certificates copied into CA_DIR: answer key, file name.
CERTIFICATES = (
    ("trust_root_file", "signing-root.pem"),
    ("archive_ca_file", "archive-ca.pem"),
    ("broker_ca_file", "broker-ca.pem"),
    ("broker_certfile", "broker-client.pem"),
)
FILE_ANSWERS = tuple(key for key, _, _ in CREDENTIALS) + tuple(key for key, _ in CERTIFICATES)
KNOWN_ANSWERS = set(REQUIRED_ANSWERS) | set(DEFAULT_ANSWERS) | set(FILE_ANSWERS) | set(FLAT_KEYS) | set(TABLE_ANSWERS)


class ProvisioningError(Exception):
    """A problem that stops provisioning; its message names the value and the fix."""


@dataclass
class Report:
    """The changes of one run, in the order they were made, and the count of parts already right."""

    changed: list[str] = field(default_factory=list)
    unchanged: int = 0

    def record(self, changed: bool, what: str) -> bool:
        if changed:
            self.changed.append(what)
            print(f"changed: {what}", flush=True)
        else:
            self.unchanged += 1
        return changed


# answers


def load_answers(answers_file: Path | None, overrides: list[str]) -> dict[str, object]:
    """Merge the answers file, ``--set KEY=VALUE`` overrides and defaults, and check them all at once."""
    answers: dict[str, object] = {}
    if answers_file is not None:
        try:
            with open(answers_file, "rb") as handle:
                answers.update(tomllib.load(handle))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ProvisioningError(f"Cannot read the answers file {answers_file}: {exc}") from exc
    for item in overrides:
        key, separator, value = item.partition("=")
        if not separator:
            raise ProvisioningError(f"Invalid --set {item!r}: expected KEY=VALUE")
        answers[key.strip()] = value

    merged = {**DEFAULT_ANSWERS, **answers}
    problems = check_answers(merged)
    if problems:
        raise ProvisioningError("Invalid answers:\n" + "\n".join(f"  - {problem}" for problem in problems))
    return normalize_answers(merged)


def check_answers(answers: dict[str, object]) -> list[str]:
    problems = [f"{key}: unknown key" for key in sorted(answers) if key not in KNOWN_ANSWERS]
    problems += [f"{key}: missing" for key in REQUIRED_ANSWERS if not str(answers.get(key, "")).strip()]
    patterns = {
        "site": r"^[A-Za-z0-9_.-]+$",
        "device": r"^[A-Za-z0-9_.-]+$",
        "key_id": r"^([0-9A-Fa-f]{2})+$",
        "archive_url": r"^https?://\S+$",
        "language": r"^(vi|en)$",
        "broker_prefix": r"^[^#+]+$",
    }
    for key, pattern in patterns.items():
        value = str(answers.get(key, ""))
        if value and not re.match(pattern, value):
            problems.append(f"{key}: {value!r} does not match {pattern}")
    for key in ("min_free_mb", "scanner_resolution", "ocr_threads", "broker_port"):
        try:
            int(answers[key])
        except (TypeError, ValueError):
            problems.append(f"{key}: {answers[key]!r} is not a whole number")
    buzzer_pin = str(answers.get("buzzer_pin", ""))
    if buzzer_pin and not (buzzer_pin.isdigit() and int(buzzer_pin) <= 27):
        problems.append(f"buzzer_pin: {buzzer_pin!r} is not a BCM pin number from 0 to 27")
    if str(answers["broker_tls"]).lower() not in ("true", "false"):
        problems.append(f"broker_tls: {answers['broker_tls']!r} is not true or false")
    for key in FILE_ANSWERS:
        source = answers.get(key)
        if source and not Path(str(source)).is_file():
            problems.append(f"{key}: file {source} not found")
    if answers.get("broker_password_file") and not answers.get("broker_username"):
        problems.append("broker_password_file: set broker_username too, because MQTT 3.1.1 sends a password only with a user name")
    if bool(answers.get("broker_certfile")) != bool(answers.get("broker_keyfile")):
        problems.append("broker_certfile, broker_keyfile: give both for a client certificate, or neither")
    if answers.get("broker_certfile") and str(answers["broker_tls"]).lower() != "true":
        problems.append("broker_certfile: a client certificate needs broker_tls = true")
    problems += check_capture_answers(answers)
    return problems


def normalize_answers(answers: dict[str, object]) -> dict[str, object]:
    normalized = dict(answers)
    for key in ("min_free_mb", "scanner_resolution", "ocr_threads", "broker_port"):
        normalized[key] = int(answers[key])
    normalized["broker_tls"] = str(answers["broker_tls"]).lower() == "true"
    normalized["key_id"] = str(answers["key_id"]).lower()
    normalized["buzzer_pin"] = int(answers["buzzer_pin"]) if str(answers["buzzer_pin"]) else ""
    return normalize_capture_answers(normalized)


# the file tree under the root


class Tree:
    """Writes under ``root`` and reports each difference it fixes."""

    def __init__(self, root: Path, report: Report) -> None:
        self.root = root
        self.report = report

    def path(self, absolute: PurePosixPath) -> Path:
        return self.root / absolute.relative_to("/")

    def ensure_dir(self, absolute: PurePosixPath, mode: int, owner: tuple[int, int] = (0, 0)) -> bool:
        path = self.path(absolute)
        changed = False
        if not path.is_dir():
            path.mkdir(parents=True)
            changed = True
        changed |= _ensure_mode_and_owner(path, mode, owner)
        return self.report.record(changed, f"directory {absolute}")

    def ensure_file(self, absolute: PurePosixPath, content: bytes, mode: int, owner: tuple[int, int] = (0, 0)) -> bool:
        path = self.path(absolute)
        path.parent.mkdir(parents=True, exist_ok=True)
        changed = False
        if not path.is_file() or path.is_symlink() or path.read_bytes() != content:
            _write_atomic(path, content, mode)
            changed = True
        changed |= _ensure_mode_and_owner(path, mode, owner)
        return self.report.record(changed, f"file {absolute}")

    def ensure_absent(self, absolute: PurePosixPath) -> bool:
        path = self.path(absolute)
        if not path.exists() and not path.is_symlink():
            return self.report.record(False, f"absent {absolute}")
        path.unlink()
        return self.report.record(True, f"removed {absolute}")


def _write_atomic(path: Path, content: bytes, mode: int) -> None:
    """Write through a temporary file, fsync and rename, so a power cut leaves the old or the new file."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _ensure_mode_and_owner(path: Path, mode: int, owner: tuple[int, int]) -> bool:
    changed = False
    status = path.lstat()
    if status.st_mode & 0o7777 != mode:
        path.chmod(mode)
        changed = True
    # Ownership can only be set by root; an unprivileged run in a prefix keeps the caller's.
    if os.geteuid() == 0 and (status.st_uid, status.st_gid) != owner:
        os.chown(path, *owner)
        changed = True
    return changed


def read_account_ids(root: Path, user: str) -> tuple[int, int]:
    """Return the uid and primary gid of ``user`` from ``<root>/etc/passwd``, not from the running system."""
    passwd = root / "etc" / "passwd"
    try:
        for line in passwd.read_text(encoding="utf-8").splitlines():
            fields = line.split(":")
            if len(fields) >= 4 and fields[0] == user:
                return int(fields[2]), int(fields[3])
    except OSError as exc:
        raise ProvisioningError(f"Cannot read {passwd}: {exc}") from exc
    raise ProvisioningError(f"User {user} not found in {passwd}; systemd-sysusers did not create it")


def digest_tree(folder: Path, patterns: tuple[str, ...]) -> str:
    """Return a SHA-256 over the names and contents of the files under ``folder`` that match ``patterns``."""
    digest = hashlib.sha256()
    files = sorted({path for pattern in patterns for path in folder.glob(pattern) if path.is_file() and "__pycache__" not in path.parts})
    for path in files:
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run_command(command: list[str], what: str) -> str:
    """Run ``command``, returning its output, or raise ProvisioningError naming ``what`` failed."""
    try:
        result = subprocess.run(command, check=True, capture_output=True, text=True, timeout=1800)
    except FileNotFoundError as exc:
        raise ProvisioningError(f"{what} failed: {command[0]} not found; install it (it comes with Debian's systemd package)") from exc
    except subprocess.CalledProcessError as exc:
        raise ProvisioningError(f"{what} failed (exit status {exc.returncode}): {' '.join(command)}\n{exc.stderr.strip()}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ProvisioningError(f"{what} timed out after {exc.timeout} s: {' '.join(command)}") from exc
    return result.stdout


# steps


class Provisioner:
    """Each step brings one part of the box to the state the answers describe.

    NOTE: the apt-get, pip and running-system steps (install_packages,
    install_python_package, apply_to_running_system) run only on a real box;
    the tests provision a root prefix, which skips them.
    """

    def __init__(self, root: Path, answers: dict[str, object], options: argparse.Namespace) -> None:
        self.root = root
        self.live = root == Path("/")
        self.answers = answers
        self.options = options
        self.report = Report()
        self.tree = Tree(root, self.report)
        self.config_validated = False

    def run(self) -> Report:
        self.check_secrets_available()
        self.check_config()
        if not self.options.skip_packages:
            self.install_packages()
        self.create_accounts()
        self.install_system_files()
        if not self.options.skip_python:
            self.install_python_package()
        self.install_models()
        self.install_docs()
        self.create_data_dir()
        self.create_hot_folder()
        self.install_certificates()
        self.install_credentials()
        self.write_config()
        self.enable_units()
        if self.live and not self.options.no_start:
            self.apply_to_running_system()
        return self.report

    def check_secrets_available(self) -> None:
        """Fail before changing anything when a secret the unit needs is neither given nor already installed."""
        missing = [
            f"{key} (for {CREDENTIALS_DIR / name})"
            for key, name, required in CREDENTIALS
            if required and not self.answers.get(key) and not self.tree.path(CREDENTIALS_DIR / name).is_file()
        ]
        if missing:
            raise ProvisioningError(
                "Missing secrets: " + ", ".join(missing) + ". The service cannot start without them; give their files in the answers."
            )

    def install_packages(self) -> None:
        packages = [
            line.strip()
            for line in PACKAGES_FILE.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        missing = [package for package in packages if not _is_installed(package)]
        if missing:
            environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]):
                subprocess.run(command, check=True, env=environment, timeout=3600)
        self.report.record(bool(missing), "Debian packages " + " ".join(missing))

    def create_accounts(self) -> None:
        """Create the service user and its device groups with systemd-sysusers, inside the root."""
        self.tree.ensure_file(SYSUSERS_FILE, (REPO / "systemd" / "sysusers.d" / "sohoa.conf").read_bytes(), 0o644)
        account_files = [self.root / "etc" / name for name in ("passwd", "group", "shadow", "gshadow")]
        before = [_file_digest(path) for path in account_files]
        run_command(["systemd-sysusers", f"--root={self.root}", str(self.tree.path(SYSUSERS_FILE))], "Creating the sohoa user and groups")
        after = [_file_digest(path) for path in account_files]
        self.report.record(before != after, f"user {SERVICE_USER} and groups scanner, gpio, sohoa-token")

        group = self.hot_folder_group()
        if group == SERVICE_USER:
            self.tree.ensure_absent(HOT_FOLDER_SYSUSERS_FILE)
            return
        # The share group: its members (the Samba or FTP users) and sohoa read and write the hot folder.
        content = f"g {group} -\nm {SERVICE_USER} {group}\n"
        self.tree.ensure_file(HOT_FOLDER_SYSUSERS_FILE, content.encode(), 0o644)
        before = [_file_digest(path) for path in account_files]
        sysusers = ["systemd-sysusers", f"--root={self.root}", str(self.tree.path(HOT_FOLDER_SYSUSERS_FILE))]
        run_command(sysusers, f"Creating the group {group} of the hot folder")
        after = [_file_digest(path) for path in account_files]
        self.report.record(before != after, f"group {group} with member {SERVICE_USER}")

    def install_system_files(self) -> None:
        self.tree.ensure_file(UNIT_DIR / UNIT_NAME, (REPO / "systemd" / UNIT_NAME).read_bytes(), 0o644)
        self.tree.ensure_file(UDEV_RULES, (REPO / "systemd" / "udev" / "70-sohoa.rules").read_bytes(), 0o644)

        data_device = str(self.answers["data_device"])
        mount_unit = UNIT_DIR / DATA_MOUNT_NAME
        if data_device:
            content = render_template("var-lib-sohoa.mount.in", {"data_device": data_device}, toml=False)
            self.tree.ensure_file(mount_unit, content.encode(), 0o644)
        else:
            self.tree.ensure_absent(mount_unit)

        # The unit loads only the credentials every box has; a drop-in adds the optional ones present.
        drop_in = DROP_IN_DIR / "credentials.conf"
        optional = [name for key, name, required in CREDENTIALS if not required and self.has_credential(key, name)]
        if optional:
            lines = [f"LoadCredential={name}:{CREDENTIALS_DIR / name}" for name in optional]
            self.tree.ensure_file(drop_in, ("[Service]\n" + "\n".join(lines) + "\n").encode(), 0o644)
        else:
            self.tree.ensure_absent(drop_in)

        # ProtectSystem=strict makes everything but /var/lib/sohoa read-only for the daemon.
        # The "-" lets the service start without the folder: the daemon then raises the
        # hot_folder_unavailable alert instead of staying down.
        hot_folder = self.answers["capture"].get("hot_folder")
        if hot_folder:
            content = f"[Service]\nReadWritePaths=-{hot_folder}\n"
            self.tree.ensure_file(HOT_FOLDER_DROP_IN, content.encode(), 0o644)
        else:
            self.tree.ensure_absent(HOT_FOLDER_DROP_IN)

    def install_python_package(self) -> None:
        """Create the virtual environment and install the package when its source changed since the last install."""
        venv_python = self.tree.path(VENV_DIR / "bin" / "python")
        if not venv_python.exists():
            run_command([sys.executable, "-m", "venv", str(self.tree.path(VENV_DIR))], "Creating the virtual environment")
            self.report.record(True, f"virtual environment {VENV_DIR}")

        source_digest = digest_tree(REPO, ("pyproject.toml", "daemon/**/*"))
        stamp = self.tree.path(SOURCE_STAMP)
        if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == source_digest:
            self.report.record(False, "sohoa package")
            return
        run_command([str(venv_python), "-m", "pip", "install", "-q", "--upgrade", "pip"], "Upgrading pip")
        run_command([str(venv_python), "-m", "pip", "install", "-q", str(REPO)], "Installing the sohoa package")
        self.tree.ensure_file(SOURCE_STAMP, (source_digest + "\n").encode(), 0o644)
        self.report.record(True, "sohoa package")

    def install_models(self) -> None:
        """Copy the model files the manifest lists, with their licences."""
        source = REPO / "models"
        manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
        names = {"manifest.json"}
        for model in manifest["models"]:
            names.add(model["file"])
            if model.get("charset_file"):
                names.add(model["charset_file"])
        names.update(str(path.relative_to(source)) for path in (source / "LICENSES").rglob("*") if path.is_file())

        self.tree.ensure_dir(MODELS_DIR, 0o755)
        for name in sorted(names):
            self.tree.ensure_file(MODELS_DIR / name, (source / name).read_bytes(), 0o644)

    def install_docs(self) -> None:
        self.tree.ensure_dir(DOCS_DIR, 0o755)
        sources = sorted((REPO / "docs").rglob("*.md")) + sorted((REPO / "docs" / "images").glob("*.png"))
        sources += [REPO / "README.md", REPO / "README.vi.md"]
        for source in sources:
            relative = source.relative_to(REPO / "docs") if source.is_relative_to(REPO / "docs") else Path(source.name)
            self.tree.ensure_file(DOCS_DIR / relative.as_posix(), source.read_bytes(), 0o644)

    def create_data_dir(self) -> None:
        self.tree.ensure_dir(DATA_DIR, 0o750, read_account_ids(self.root, SERVICE_USER))

    def create_hot_folder(self) -> None:
        """Create the hot folder owned by sohoa and the share group; an existing folder keeps its files."""
        hot_folder = self.answers["capture"].get("hot_folder")
        if not hot_folder:
            return
        folder = PurePosixPath(hot_folder)
        # Missing parents get 0755 whatever the umask, so that sohoa and the share users can reach the folder.
        for parent in reversed(folder.parents):
            path = self.tree.path(parent)
            if not path.exists():
                path.mkdir()
                path.chmod(0o755)
        owner = (read_account_ids(self.root, SERVICE_USER)[0], read_group_id(self.root, self.hot_folder_group()))
        self.tree.ensure_dir(folder, HOT_FOLDER_MODE, owner)

    def hot_folder_group(self) -> str:
        return str(self.answers["capture"].get("hot_folder_group") or SERVICE_USER)

    def install_certificates(self) -> None:
        self.tree.ensure_dir(CONFIG_DIR, 0o755)
        self.tree.ensure_dir(CA_DIR, 0o755)
        for key, name in CERTIFICATES:
            if self.answers.get(key):
                self.tree.ensure_file(CA_DIR / name, Path(str(self.answers[key])).read_bytes(), 0o644)

    def install_credentials(self) -> None:
        """Copy the secrets root-only; systemd's LoadCredential= hands them to the service user at start."""
        self.tree.ensure_dir(CREDENTIALS_DIR, 0o700)
        for key, name, _required in CREDENTIALS:
            if self.answers.get(key):
                self.tree.ensure_file(CREDENTIALS_DIR / name, Path(str(self.answers[key])).read_bytes(), 0o600)

    def check_config(self) -> None:
        """Validate the configuration the answers give before changing anything, if sohoa can already be imported."""
        self.config_validated = validate_config(self.render_config(), self.validator_commands())

    def write_config(self) -> None:
        content = self.render_config()
        if not self.config_validated and not validate_config(content, self.validator_commands()):
            print(f"note: {CONFIG_FILE} was not checked, because the sohoa package cannot be imported yet", flush=True)
        owner = (0, read_account_ids(self.root, SERVICE_USER)[1])
        self.tree.ensure_file(CONFIG_FILE, content.encode("utf-8"), 0o640, owner)

    def validator_commands(self) -> list[tuple[list[str], dict[str, str]]]:
        """Return the Python commands that can run sohoa's parse_config: the box's environment, then this checkout's."""
        commands = []
        venv_python = self.tree.path(VENV_DIR / "bin" / "python")
        if venv_python.exists():
            commands.append(([str(venv_python), "-c", VALIDATE_SCRIPT, str(CONFIG_FILE)], {}))
        checkout = {"PYTHONPATH": str(REPO / "daemon")}
        commands.append(([sys.executable, "-c", VALIDATE_SCRIPT, str(CONFIG_FILE)], checkout))
        return commands

    def render_config(self) -> str:
        values = dict(self.answers)
        values["data_dir"] = str(DATA_DIR)
        values["models_dir"] = str(MODELS_DIR)
        values["scanner_source_line"] = _optional_line("source", self.answers["scanner_source"])
        values["buzzer_line"] = _optional_line("buzzer_pin", self.answers["buzzer_pin"])
        values["trust_roots"] = [str(CA_DIR / "signing-root.pem")] if self.has_certificate("trust_root_file", "signing-root.pem") else []
        values["archive_ca_line"] = _optional_line("ca_file", self.ca_path("archive_ca_file", "archive-ca.pem"))
        values["broker_ca_line"] = _optional_line("ca_file", self.ca_path("broker_ca_file", "broker-ca.pem"))
        values["broker_username_line"] = _optional_line("username", self.answers["broker_username"])
        has_password = self.has_credential("broker_password_file", "mqtt-password")
        values["broker_password_line"] = _optional_line("password_file", "mqtt-password" if has_password else "")
        values["broker_certfile_line"] = _optional_line("certfile", self.ca_path("broker_certfile", "broker-client.pem"))
        has_client_key = self.has_credential("broker_keyfile", "mqtt-client-key")
        values["broker_keyfile_line"] = _optional_line("keyfile", "mqtt-client-key" if has_client_key else "")
        has_unit_pin = self.has_credential("unit_pin_file", "unit-token-pin")
        values["unit_pin_line"] = _optional_line("unit_pin_file", "unit-token-pin" if has_unit_pin else "")
        values.update(render_capture_blocks(self.answers))
        values = {key: value for key, value in values.items() if key not in TABLE_ANSWERS}
        # Unset optional keys and sections leave empty lines; keep at most one between blocks.
        return re.sub(r"\n{3,}", "\n\n", render_template("sohoa.toml.in", values, toml=True))

    def enable_units(self) -> None:
        units = [UNIT_NAME] + ([DATA_MOUNT_NAME] if self.answers["data_device"] else [])
        for unit in units:
            prefix = [] if self.live else [f"--root={self.root}"]
            state = subprocess.run(["systemctl", *prefix, "is-enabled", unit], capture_output=True, text=True, timeout=60)
            if state.stdout.strip() == "enabled":
                self.report.record(False, f"{unit} enabled")
                continue
            run_command(["systemctl", *prefix, "enable", unit], f"Enabling {unit}")
            self.report.record(True, f"{unit} enabled")

    def apply_to_running_system(self) -> None:
        """Reload systemd and udev after a change and (re)start the service; only on a live, booted root."""
        if not Path("/run/systemd/system").is_dir():
            print("note: systemd is not running here, so the service starts at the next boot", flush=True)
            return
        if self.report.changed:
            run_command(["systemctl", "daemon-reload"], "Reloading systemd")
            run_command(["udevadm", "control", "--reload"], "Reloading udev rules")
            run_command(["udevadm", "trigger", "--action=change", "--subsystem-match=usb", "--subsystem-match=hidraw", "--subsystem-match=gpio"], "Applying udev rules")
            run_command(["systemctl", "restart", UNIT_NAME], "Restarting sohoa")
        else:
            run_command(["systemctl", "start", UNIT_NAME], "Starting sohoa")

    def has_credential(self, key: str, name: str) -> bool:
        return bool(self.answers.get(key)) or self.tree.path(CREDENTIALS_DIR / name).is_file()

    def has_certificate(self, key: str, name: str) -> bool:
        return bool(self.answers.get(key)) or self.tree.path(CA_DIR / name).is_file()

    def ca_path(self, key: str, name: str) -> str:
        return str(CA_DIR / name) if self.has_certificate(key, name) else ""


# Run by a Python that can import sohoa; exit status 3 means it cannot.
VALIDATE_SCRIPT = """
import sys, tomllib
try:
    from sohoa.config import parse_config
    from sohoa.errors import ConfigError
except ImportError as exc:
    print(exc)
    raise SystemExit(3)
try:
    parse_config(tomllib.loads(sys.stdin.read()), source=sys.argv[1])
except (ConfigError, tomllib.TOMLDecodeError) as exc:
    print(exc)
    raise SystemExit(1)
"""


def validate_config(content: str, commands: list[tuple[list[str], dict[str, str]]]) -> bool:
    """Check ``content`` with sohoa's parse_config through the first command that can import it.

    Returns False when none can, and raises ProvisioningError when the content is invalid.
    """
    for command, environment in commands:
        try:
            result = subprocess.run(
                command, input=content, capture_output=True, text=True, timeout=120, env={**os.environ, **environment}
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0:
            return True
        if result.returncode == 1:
            raise ProvisioningError(
                f"{result.stdout.strip() or result.stderr.strip()}\nThe answers give an invalid {CONFIG_FILE}; correct the answers that set these keys "
                "([[buttons]] sets gpio.buttons) and provision again."
            )
    return False


def render_template(name: str, values: dict[str, object], *, toml: bool) -> str:
    """Fill ``templates/<name>``; with ``toml`` each plain value becomes a TOML literal, line values stay as they are."""
    rendered = {}
    for key, value in values.items():
        rendered[key] = value if (not toml or key.endswith(("_line", "_lines", "_section"))) else toml_literal(value)
    return string.Template((TEMPLATES / name).read_text(encoding="utf-8")).substitute(rendered)


def _optional_line(key: str, value: object) -> str:
    """Return ``key = value`` for a set value, or a commented-out key, so the template keeps one shape."""
    if value:
        return f"{key} = {toml_literal(value)}"
    return f"# {key} ="


def read_group_id(root: Path, group: str) -> int:
    """Return the gid of ``group`` from ``<root>/etc/group``, not from the running system."""
    group_file = root / "etc" / "group"
    try:
        for line in group_file.read_text(encoding="utf-8").splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[0] == group:
                return int(fields[2])
    except OSError as exc:
        raise ProvisioningError(f"Cannot read {group_file}: {exc}") from exc
    raise ProvisioningError(f"Group {group} not found in {group_file}; systemd-sysusers did not create it")


def _file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _is_installed(package: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, timeout=60)
    return result.returncode == 0 and "install ok installed" in result.stdout


# command line


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Provision a sohoa box idempotently: packages, user, files, config, secrets, service.")
    parser.add_argument("--answers", type=Path, help="TOML file with this box's values (see provisioning/templates/answers.toml.example)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one answer; repeatable")
    parser.add_argument("--root", type=Path, default=Path("/"), help="provision the file tree under this directory instead of / (default: /)")
    parser.add_argument("--skip-packages", action="store_true", help="do not install Debian packages with apt-get")
    parser.add_argument("--skip-python", action="store_true", help="do not create the virtual environment or install the package")
    parser.add_argument("--no-start", action="store_true", help="on a running system, do not reload systemd and udev or (re)start the service")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_arguments(sys.argv[1:] if argv is None else argv)
    root = options.root.resolve()
    try:
        if root != Path("/") and not (options.skip_packages and options.skip_python):
            raise ProvisioningError(
                f"--root {root} needs --skip-packages and --skip-python: apt-get and pip cannot install into a prefix. "
                "Run the provisioner inside the chroot to install them."
            )
        if os.geteuid() != 0 and root == Path("/"):
            raise ProvisioningError("Provisioning / needs root: run it with sudo.")
        answers = load_answers(options.answers, options.set)
        root.mkdir(parents=True, exist_ok=True)
        report = Provisioner(root, answers, options).run()
    except ProvisioningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"sohoa provisioning of {root}: {len(report.changed)} changed, {report.unchanged} unchanged", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
