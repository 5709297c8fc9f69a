"""``sohoa doctor``: check every part the box depends on and print what to fix.

Each check returns a :class:`CheckResult`: ``ok``, ``warning`` (works now but
needs attention soon), ``problem`` (the box cannot do its job) or ``skipped``.
The command exits with status 1 when any check finds a problem. Checks only
read: the broker check connects under its own client id and publishes
nothing, so it does not disturb a running daemon's topics.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sohoa.config import Config
from sohoa.errors import (
    ConfigError,
    KeyNotFoundError,
    MqttError,
    PinError,
    ScannerNotFoundError,
    SohoaError,
    TokenNotFoundError,
)
from sohoa.i18n import N_, gettext as _

log = logging.getLogger(__name__)

OK, WARNING, PROBLEM, SKIPPED = "ok", "warning", "problem", "skipped"
CHECK_TITLES = {
    "config": N_("Configuration"),
    "scanner": N_("Scanner"),
    "token": N_("Signing token"),
    "unit_token": N_("Unit's signing token"),
    "tsa": N_("Time-stamping authority"),
    "models": N_("OCR models"),
    "broker": N_("MQTT broker"),
    "archive": N_("Archive"),
    "disk": N_("Disk space"),
    "hot_folder": N_("Hot folder"),
    "clock": N_("Clock"),
}
STATUS_LABELS = {OK: N_("OK"), WARNING: N_("WARNING"), PROBLEM: N_("PROBLEM"), SKIPPED: N_("SKIPPED")}
# A clock before this year was never set: the box has no battery-backed clock and NTP has not run yet.
MIN_CLOCK_YEAR = 2026
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_CERTIFICATE_WARNING_DAYS = 30
DEFAULT_CREDENTIALS_DIR = Path("/etc/sohoa/credentials")
# Signing times come from the box clock and timestamps from the authority's.
# An NTP-synchronized clock is usually within a second, so a minute apart means
# that one of the two clocks is wrong.
MAX_TSA_OFFSET_SECONDS = 60.0


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check; ``message`` and ``fix`` are already translated."""

    check: str
    status: str
    message: str
    fix: str = ""

    @property
    def title(self) -> str:
        return _(CHECK_TITLES[self.check])


# checks


def check_config(path: Path) -> tuple[CheckResult, Config | None]:
    """Load the configuration; the other checks need it and are skipped without it."""
    from sohoa.config import load_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        fix = _("Correct the configuration file {path}; provisioning/templates/answers.toml.example and the IT guide describe every key.")
        return CheckResult("config", PROBLEM, exc.user_message(), fix.format(path=path)), None
    return CheckResult("config", OK, _("{path} is valid.").format(path=path)), config


def check_scanner(config: Config) -> CheckResult:
    from sohoa.scanner import Scanner

    try:
        info = Scanner(config.scanner).probe()
    except ScannerNotFoundError as exc:
        fix = _(
            "Switch the scanner on and check its USB cable; `scanimage -L` must list scanner.device. "
            "If the daemon is scanning, try again when it is idle."
        )
        return CheckResult("scanner", PROBLEM, exc.user_message(), fix)
    except SohoaError as exc:
        fix = _("Check scanner.source, scanner.mode, scanner.resolution and scanner.options against `scanimage --help -d DEVICE`.")
        return CheckResult("scanner", PROBLEM, exc.user_message(), fix)
    model = " ".join(part for part in (info.vendor, info.model) if part) or info.device
    return CheckResult("scanner", OK, _("{model} responds as {device}.").format(model=model, device=info.device))


def check_token(
    config: Config, *, now: datetime | None = None, warning_days: int = DEFAULT_CERTIFICATE_WARNING_DAYS, unit: bool = False
) -> CheckResult:
    """Log in to the token, find the key and certificate, and check how long the certificate stays valid.

    With ``unit``, check the converting unit's key (the second signature on
    licences, certificates and diplomas) instead of the operator's.
    """
    from sohoa.signing import TokenSigner

    name = "unit_token" if unit else "token"
    try:
        signer = TokenSigner.for_unit(config.signing) if unit else TokenSigner(config.signing)
        info = signer.probe()
    except SohoaError as exc:
        fix = _unit_token_fix(exc) if unit else _token_fix(exc)
        return CheckResult(name, PROBLEM, exc.user_message(), fix)

    now = now or datetime.now(timezone.utc)
    expiry = info.not_after.date().isoformat()
    if info.not_after <= now:
        message = _("The signing certificate {subject} expired on {date}.").format(subject=info.subject, date=expiry)
        return CheckResult(name, PROBLEM, message, _("Have the certificate authority renew the certificate on the token."))
    days_left = (info.not_after - now).days
    if info.not_after - now < timedelta(days=warning_days):
        message = _("The signing certificate {subject} expires on {date}, in {days} days.").format(
            subject=info.subject, date=expiry, days=days_left
        )
        return CheckResult(name, WARNING, message, _("Ask the certificate authority for a renewal before it expires."))
    message = _("Token {label}: key {key_id} and certificate {subject}, valid until {date}.").format(
        label=info.label, key_id=info.key_id, subject=info.subject, date=expiry
    )
    return CheckResult(name, OK, message)


def _unit_token_fix(error: SohoaError) -> str:
    if isinstance(error, TokenNotFoundError):
        return _("Plug the unit's signing token in. If it is plugged in, check signing.unit_token_label.")
    if isinstance(error, KeyNotFoundError):
        return _("Set signing.unit_key_id to the CKA_ID of the unit's key (`pkcs11-tool --module MODULE -O` lists the objects).")
    return _token_fix(error)


def _token_fix(error: SohoaError) -> str:
    if isinstance(error, TokenNotFoundError):
        return _("Plug the signing token in. If it is plugged in, check signing.token_label and signing.pkcs11_module (`pkcs11-tool --module MODULE -L` lists the tokens).")
    if isinstance(error, PinError):
        return _("Write the right PIN to /etc/sohoa/credentials/token-pin. Too many wrong PINs lock the token.")
    if isinstance(error, KeyNotFoundError):
        return _("Set signing.key_id to the CKA_ID of the signing key (`pkcs11-tool --module MODULE -O` lists the objects).")
    if isinstance(error, ConfigError):
        return _("Write the token PIN to /etc/sohoa/credentials/token-pin (mode 0600, owner root).")
    return _("Check signing.pkcs11_module and that the token's driver is installed.")


def check_tsa(config: Config, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> CheckResult:
    """Request a real RFC 3161 timestamp and compare the authority's time with the box clock.

    An authority that does not respond is a warning, not a problem, because
    documents are then signed without a timestamp (PAdES B-B) and get a
    document timestamp before upload once it responds again.
    """
    from sohoa.errors import TimestampUnavailableError
    from sohoa.signing import make_timestamper, query_tsa_time

    signing = config.signing.model_copy(update={"tsa_timeout_seconds": min(timeout, config.signing.tsa_timeout_seconds)})
    try:
        reply = query_tsa_time(make_timestamper(signing))
    except TimestampUnavailableError as exc:
        fix = _(
            "Check the network and signing.tsa_url. Until the authority responds, documents are signed "
            "without a timestamp (PAdES B-B) and get a document timestamp before upload."
        )
        return CheckResult("tsa", WARNING, exc.user_message(), fix)

    shown = reply.gen_time.astimezone().isoformat(timespec="seconds")
    offset = f"{reply.offset_seconds:+.1f}"
    message = _("The time-stamping authority {url} responds. Its time is {time}, {offset} s from the box clock.").format(
        url=reply.url, time=shown, offset=offset
    )
    if abs(reply.offset_seconds) > MAX_TSA_OFFSET_SECONDS:
        fix = _(
            "The box clock and the authority's clock differ by more than {limit} s, so signing times and timestamps disagree. "
            "Check `timedatectl status` and NTP on the box."
        )
        return CheckResult("tsa", WARNING, message, fix.format(limit=int(MAX_TSA_OFFSET_SECONDS)))
    return CheckResult("tsa", OK, message)


def check_models(config: Config) -> CheckResult:
    """Verify each model file's SHA-256 against the manifest, without loading the models."""
    from sohoa.ocr.models import load_model_set

    try:
        models = load_model_set(config.ocr.models_dir)
    except SohoaError as exc:
        fix = _("Reinstall the models: run the provisioning again, or copy models/ from the release to {path}.")
        return CheckResult("models", PROBLEM, exc.user_message(), fix.format(path=config.ocr.models_dir))
    versions = ", ".join(f"{name} {digest}" for name, digest in models.versions.items())
    return CheckResult("models", OK, _("Models in {path} match the manifest ({versions}).").format(path=config.ocr.models_dir, versions=versions))


def check_broker(config: Config, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> CheckResult:
    """Connect and log in to the broker, then disconnect; publishes nothing."""
    mqtt = config.mqtt
    where = f"{mqtt.host}:{mqtt.port}"
    fix = _("Check the network, mqtt.host, mqtt.port, mqtt.tls and mqtt.ca_file, and that the broker runs. Scanning works without it.")
    try:
        reason = _connect_to_broker(config, timeout)
    except ConfigError as exc:
        return CheckResult("broker", PROBLEM, exc.user_message(), _("Correct the [mqtt] section and the password credential."))
    except MqttError as exc:
        return CheckResult("broker", PROBLEM, exc.user_message(), _("Install the certificate and key files that the [mqtt] section names."))
    except (OSError, ssl.SSLError) as exc:
        return CheckResult("broker", PROBLEM, _("Cannot connect to the MQTT broker {where}: {detail}").format(where=where, detail=exc), fix)
    if reason is None:
        message = _("The MQTT broker {where} did not respond within {seconds} s.").format(where=where, seconds=timeout)
        return CheckResult("broker", PROBLEM, message, fix)
    if reason:
        message = _("The MQTT broker {where} rejected the connection: {reason}.").format(where=where, reason=reason)
        return CheckResult("broker", PROBLEM, message, _("Check mqtt.username and the password credential with the broker's administrator."))
    return CheckResult("broker", OK, _("Connected to the MQTT broker {where}.").format(where=where))


def _connect_to_broker(config: Config, timeout: float) -> str | None:
    """Return "" when the broker accepts the login, its reason when it rejects it, None on timeout."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from sohoa.config import read_secret
    from sohoa.mqtt import set_up_tls

    mqtt = config.mqtt
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"sohoa-{config.box.site}-{config.box.device}-doctor",
        clean_session=True,
        protocol=paho.MQTTv311,
    )
    client.connect_timeout = timeout
    password = read_secret(mqtt.password_file, None, "MQTT password")
    if mqtt.username:
        client.username_pw_set(mqtt.username, password)
    if mqtt.tls:
        set_up_tls(client, mqtt)

    answered = threading.Event()
    outcome: list[str] = []

    def on_connect(client, userdata, flags, reason, properties) -> None:
        outcome.append(reason.getName() if reason.is_failure else "")
        answered.set()

    client.on_connect = on_connect
    client.connect(mqtt.host, mqtt.port, keepalive=mqtt.keepalive_seconds)
    client.loop_start()
    try:
        answered.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return outcome[0] if outcome else None


def check_archive(config: Config, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> CheckResult:
    from sohoa.upload import ArchiveClient

    upload = config.upload.model_copy(update={"timeout_seconds": min(timeout, config.upload.timeout_seconds)})
    try:
        client = ArchiveClient(upload)
    except ConfigError as exc:
        return CheckResult("archive", PROBLEM, exc.user_message(), _("Write the archive token to /etc/sohoa/credentials/archive-token (mode 0600, owner root)."))
    try:
        reachable = client.probe()
    finally:
        client.close()
    if not reachable:
        message = _("The archive at {url} does not respond.").format(url=upload.url)
        fix = _("Check the network and upload.url. Signed documents wait on the box and are uploaded when the archive answers again.")
        return CheckResult("archive", PROBLEM, message, fix)
    return CheckResult("archive", OK, _("The archive at {url} responds.").format(url=upload.url))


def check_disk(config: Config) -> CheckResult:
    data_dir = config.box.data_dir
    existing = next(path for path in (data_dir, *data_dir.parents) if path.exists())
    free_mb = shutil.disk_usage(existing).free // (1024 * 1024)
    reserve = config.box.min_free_mb
    message = _("{free} MB free on {path}, reserve {reserve} MB.").format(free=free_mb, path=data_dir, reserve=reserve)
    if free_mb < reserve:
        fix = _("Check with `sohoa status` that documents reach the archive, because unsent documents stay in {path}; then free space or use a larger card.")
        return CheckResult("disk", PROBLEM, message, fix.format(path=data_dir))
    return CheckResult("disk", OK, message)


def check_hot_folder(config: Config) -> CheckResult:
    """Check that the hot folder exists and that this user may write in it, without creating anything."""
    folder = config.capture.hot_folder
    if not folder.is_dir():
        message = _("The hot folder {path} does not exist or is not a folder.").format(path=folder)
        fix = _("Create it and share it with the network scanners, or change capture.hot_folder.")
        return CheckResult("hot_folder", PROBLEM, message, fix)
    if not os.access(folder, os.W_OK | os.X_OK):
        message = _("This user cannot write in the hot folder {path}.").format(path=folder)
        fix = _("Give the sohoa user write access to {path}, then run the check again as that user.").format(path=folder)
        return CheckResult("hot_folder", PROBLEM, message, fix)
    if Path("/home") in folder.resolve().parents:
        message = _("The hot folder {path} is under /home, which the service cannot see (ProtectHome=yes).").format(path=folder)
        return CheckResult("hot_folder", PROBLEM, message, _("Move the hot folder out of /home, for example to /srv/sohoa/inbox."))
    return CheckResult("hot_folder", OK, _("The hot folder {path} exists and is writable.").format(path=folder))


def check_clock(*, now: datetime | None = None, read_ntp_status: Callable[[], bool | None] | None = None) -> CheckResult:
    """Check that the clock was set at all, and whether NTP keeps it synchronized when systemd reports it."""
    now = now or datetime.now(timezone.utc)
    read_ntp_status = read_ntp_status or read_timedatectl_ntp_status
    shown = now.astimezone().isoformat(timespec="seconds")
    fix = _("Connect the box to a network with NTP, check `timedatectl status`, or set the time with `timedatectl set-time`.")
    if now.year < MIN_CLOCK_YEAR:
        message = _("The clock shows {time}, before {year}: it was never set, and signatures would carry a wrong time.")
        return CheckResult("clock", PROBLEM, message.format(time=shown, year=MIN_CLOCK_YEAR), fix)

    synchronized = read_ntp_status()
    if synchronized is None:
        return CheckResult("clock", OK, _("The clock shows {time}; the NTP status is not available here.").format(time=shown))
    if not synchronized:
        return CheckResult("clock", WARNING, _("The clock shows {time} but is not synchronized with NTP.").format(time=shown), fix)
    return CheckResult("clock", OK, _("The clock shows {time} and is synchronized with NTP.").format(time=shown))


def read_timedatectl_ntp_status() -> bool | None:
    """Return systemd's NTPSynchronized property, or None when timedatectl is missing or cannot reach systemd."""
    try:
        result = subprocess.run(
            ["timedatectl", "show", "--property=NTPSynchronized", "--value"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("timedatectl is not usable: %s", exc)
        return None
    value = result.stdout.strip()
    if result.returncode != 0 or value not in ("yes", "no"):
        log.debug("timedatectl returned %d: %s", result.returncode, result.stderr.strip())
        return None
    return value == "yes"


# running and reporting


def run_checks(config_path: Path, *, only: set[str] | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS, warning_days: int = DEFAULT_CERTIFICATE_WARNING_DAYS) -> list[CheckResult]:
    """Run the checks in ``only`` (all when None) in a fixed order; the configuration is always loaded."""
    result, config = check_config(config_path)
    results = [result]
    checks: dict[str, Callable[[Config], CheckResult]] = {
        "scanner": check_scanner,
        "token": lambda config: check_token(config, warning_days=warning_days),
        "unit_token": lambda config: check_token(config, warning_days=warning_days, unit=True),
        "tsa": lambda config: check_tsa(config, timeout=timeout),
        "models": check_models,
        "broker": lambda config: check_broker(config, timeout=timeout),
        "archive": lambda config: check_archive(config, timeout=timeout),
        "disk": check_disk,
        "hot_folder": check_hot_folder,
    }
    for name, check in checks.items():
        if only is not None and name not in only:
            continue
        if name == "unit_token" and (config is None or not config.signing.unit_signing_enabled):
            continue  # no second signature is configured, so there is nothing to check
        if name == "tsa" and (config is None or not config.signing.tsa_url):
            continue  # signatures are PAdES B-B by configuration, so there is no authority to ask
        if name == "hot_folder" and (config is None or config.capture.hot_folder is None):
            continue  # no hot folder is configured
        if config is None:
            results.append(CheckResult(name, SKIPPED, _("Skipped because the configuration is invalid.")))
            continue
        log.debug("Running check %s", name)
        results.append(check(config))
    if only is None or "clock" in only:
        results.append(check_clock())
    return results


def print_report(results: list[CheckResult], out=None) -> None:
    out = out or sys.stdout
    width = max(len(_(label)) for label in STATUS_LABELS.values())
    for result in results:
        print(f"[{_(STATUS_LABELS[result.status]):^{width}}] {result.title}: {result.message}", file=out)
        if result.fix:
            print(" " * (width + 3) + _("To fix: {fix}").format(fix=result.fix), file=out)
    counts = {status: sum(1 for result in results if result.status == status) for status in STATUS_LABELS}
    summary = _("{ok} OK, {warnings} warnings, {problems} problems, {skipped} skipped.")
    print(summary.format(ok=counts[OK], warnings=counts[WARNING], problems=counts[PROBLEM], skipped=counts[SKIPPED]), file=out)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("doctor", help=_("check scanner, token, time-stamping authority, models, broker, archive, disk and clock, and print what to fix"))
    parser.add_argument("--only", action="append", choices=[name for name in CHECK_TITLES if name != "config"], help=_("run only this check; repeatable"))
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, help=_("seconds to wait for the broker, the archive and the time-stamping authority (default: %(default)s)"))
    parser.add_argument("--certificate-warning-days", type=int, default=DEFAULT_CERTIFICATE_WARNING_DAYS, help=_("warn when the signing certificate expires within this many days (default: %(default)s)"))
    parser.add_argument(
        "--credentials-dir",
        type=Path,
        help=_("folder of the credential files when $CREDENTIALS_DIRECTORY is not set (default: {path})").format(path=DEFAULT_CREDENTIALS_DIR),
    )
    parser.add_argument("--format", choices=["text", "json"], default="text", help=_("output format (default: text)"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the checks and print them; exit status 1 when any check finds a problem."""
    from sohoa.cli import _config_path
    from sohoa.config import load_config
    from sohoa.i18n import set_language

    _use_credentials_dir(args.credentials_dir)
    config_path = _config_path(args)
    if not args.lang and not os.environ.get("SOHOA_LANG"):
        # Use the configured language when the file loads; check_config reports it when it does not.
        try:
            set_language(load_config(config_path).box.language)
        except ConfigError:
            pass

    only = set(args.only) if args.only else None
    results = run_checks(config_path, only=only, timeout=args.timeout, warning_days=args.certificate_warning_days)
    if args.format == "json":
        print(json.dumps([asdict(result) for result in results], ensure_ascii=False, indent=2))
    else:
        print(_("sohoa doctor, configuration {path}").format(path=config_path))
        print_report(results)
    return 1 if any(result.status == PROBLEM for result in results) else 0


def _use_credentials_dir(folder: Path | None) -> None:
    """Point bare credential names at ``folder``, or at the provisioned one when run outside systemd."""
    if folder is not None:
        os.environ["CREDENTIALS_DIRECTORY"] = str(folder)
    elif "CREDENTIALS_DIRECTORY" not in os.environ and DEFAULT_CREDENTIALS_DIR.is_dir():
        os.environ["CREDENTIALS_DIRECTORY"] = str(DEFAULT_CREDENTIALS_DIR)
