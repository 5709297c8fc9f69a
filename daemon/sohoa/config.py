"""The box's configuration: one TOML file, loaded into frozen, typed models.

Every problem in a file (unknown keys, missing keys, wrong types) is reported
at once in one :class:`~sohoa.errors.ConfigError`. Secrets (the token PIN, the
archive's bearer token, the broker password) are never written in the file:
the file names a credential file or an environment variable that contains them.
"""

from __future__ import annotations

import os
import tomllib
from datetime import date
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, ValidationError, field_validator, model_validator

from sohoa.errors import ConfigError
from sohoa.i18n import N_

# The models/ folder of a source checkout; provisioning sets ocr.models_dir explicitly.
CHECKOUT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A document-type abbreviation as DocCode uses it: QĐ, GCN, VB, KHAC...
TypeCode = Annotated[str, StringConstraints(pattern=r"^[A-ZĐ0-9]{1,10}$")]


class BoxConfig(_Section):
    """Identity of the box and of its operator; these names appear in the conversion mark."""

    site: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    device: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    unit: str = Field(min_length=1, description="Full name of the converting unit")
    department: str = ""
    operator: str = Field(min_length=1, description="Full name of the operator who scans")
    agency_code: str = Field(min_length=1, max_length=13, description="Agency code, the first part of DocCode")
    data_dir: Path
    language: Literal["vi", "en"] = "vi"
    min_free_mb: int = Field(default=200, ge=0, description="Disk reserve below which new scans are refused")
    retention_days: float = Field(
        default=30.0, ge=0, description="Days an uploaded document stays in the spool after the archive confirmed it"
    )
    cancelled_retention_days: float = Field(
        default=30.0, ge=0, description="Days the pages of a job cancelled by staff stay in the spool"
    )
    worker_stall_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Seconds the worker may go without progress (a page, a step, a loop) before the systemd watchdog pings stop",
    )


class ButtonConfig(_Section):
    """One extra GPIO button: a press scans with ``profile``."""

    pin: int = Field(ge=0, le=27)
    profile: str = Field(min_length=1, description="Name of a [profiles.NAME] section")


class GpioConfig(_Section):
    """BCM pin numbers of the panel; ``pin_factory = "mock"`` uses gpiozero's mock pins."""

    pin_factory: str = ""
    button_pin: int = Field(default=17, ge=0, le=27)
    button_bounce_ms: int = Field(default=50, ge=0, le=1000)
    green_led_pin: int = Field(default=22, ge=0, le=27)
    red_led_pin: int = Field(default=27, ge=0, le=27)
    buzzer_pin: int | None = Field(default=None, ge=0, le=27)
    buttons: list[ButtonConfig] = Field(
        default_factory=list, description="Extra buttons, each starting a scan with its own capture profile"
    )
    long_press_seconds: float = Field(
        default=2.0, gt=0, le=30, description="Holding a button this long cancels the running job (finishes it in flatbed mode)"
    )

    @model_validator(mode="after")
    def _pins_distinct(self) -> GpioConfig:
        uses: dict[int, list[str]] = {}
        named = [("button_pin", self.button_pin), ("green_led_pin", self.green_led_pin), ("red_led_pin", self.red_led_pin)]
        if self.buzzer_pin is not None:
            named.append(("buzzer_pin", self.buzzer_pin))
        named += [(f"buttons[{index}].pin", button.pin) for index, button in enumerate(self.buttons)]
        for name, pin in named:
            uses.setdefault(pin, []).append(name)
        shared = [f"BCM pin {pin} is used by {' and '.join(names)}" for pin, names in uses.items() if len(names) > 1]
        if shared:
            raise ValueError("; ".join(shared) + "; give each a pin of its own")
        return self


class ScannerConfig(_Section):
    device: str = Field(min_length=1, description="SANE device name, as `scanimage -L` lists it")
    source: str | None = Field(default=None, description="SANE source option, e.g. 'ADF Duplex'")
    mode: str = "Color"
    resolution: int = Field(default=300, ge=75, le=1200)
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    feeder_dir: Path | None = Field(
        default=None,
        description="For the SANE pnm backend only: a folder of page images fed one per scan, like a feeder",
    )
    max_pages: int = Field(default=500, ge=1, le=10000)


class ProfileConfig(_Section):
    """A capture profile, chosen by a button or a cover sheet: what is scanned and how.

    Unset scanner settings keep the ``[scanner]`` values. ``type_code`` is
    the document type expected, used when the recognized text names no type.
    In ``flatbed`` mode each press scans one page into the same document,
    and a long press finishes it.
    """

    label: str = Field(default="", description="Name shown to staff, e.g. 'Văn bằng'")
    type_code: TypeCode | None = None
    source: str | None = None
    mode: str | None = None
    resolution: int | None = Field(default=None, ge=75, le=1200)
    flatbed: StrictBool = False


class CaptureConfig(_Section):
    """Capture settings: the triggers besides the panel button, and the separation and clean-up of scanned pages."""

    scanner_buttons: StrictBool = Field(default=False, description="Poll the scanner's own buttons, where its SANE backend exposes them")
    auto_start: StrictBool = Field(default=False, description="Start a scan when paper is placed in the feeder")
    poll_seconds: float = Field(default=1.0, gt=0, le=60, description="How often the scanner's buttons and feeder are polled")
    scanner_button_options: list[str] = Field(
        default_factory=list,
        description="SANE options read as scanner buttons; empty finds the read-only (soft-detect, not soft-select) bool options",
    )
    scanner_button_profiles: dict[str, str] = Field(
        default_factory=dict, description="Capture profile started by each scanner button, by SANE option name"
    )
    paper_sensor_options: list[str] = Field(
        default_factory=lambda: ["page-loaded", "adf-loaded", "document-loaded", "paper-loaded", "adf-paper", "feeder-loaded"],
        description="SANE options that report paper in the feeder, tried in order; the first the scanner has is used",
    )
    separator_sheets: StrictBool = Field(default=True, description="Start a new document at each sohoa separator or cover sheet")
    hot_folder: Path | None = Field(default=None, description="Folder where network scanners save files to import")
    hot_folder_profile: str | None = Field(
        default=None, description="Capture profile of files saved at the top of the hot folder; a subfolder named after a profile uses that profile"
    )
    hot_folder_settle_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds a file's size and modification time must stay unchanged before it is imported, when no close-after-write event reports it complete",
    )
    remove_blank_pages: StrictBool = True
    deskew: StrictBool = True
    crop: StrictBool = True


class OcrConfig(_Section):
    models_dir: Path = CHECKOUT_MODELS_DIR
    threads: int = Field(default=2, ge=1, le=16)


class SigningConfig(_Section):
    pkcs11_module: Path
    token_label: str = Field(min_length=1)
    key_id: str = Field(pattern=r"^([0-9A-Fa-f]{2})+$", description="CKA_ID of the key, in hex")
    pin_file: Path | None = None
    pin_env: str | None = None
    trust_roots: list[Path] = Field(default_factory=list, description="CA certificates that validate the signature")
    retry_seconds: float = Field(default=30.0, gt=0)
    # The converting unit's second signature, at the top right of page 1, for
    # the document types in unit_sign_types. It is off while unit_key_id is
    # unset. The key may sit on its own token or on the operator's token.
    unit_key_id: str | None = Field(default=None, pattern=r"^([0-9A-Fa-f]{2})+$", description="CKA_ID of the unit's key, in hex")
    unit_token_label: str | None = Field(default=None, min_length=1, description="Token of the unit's key; default token_label")
    unit_pin_file: Path | None = None
    unit_pin_env: str | None = None
    unit_signer_name: str = Field(default="", description="Name shown in the unit's signature; default box.unit")
    unit_sign_types: list[str] = Field(
        default_factory=lambda: ["GP", "GCN", "CC", "VB"],
        description="DocCode type abbreviations that the unit signs: licences, certificates, diplomas",
    )

    # RSA signatures use RSASSA-PSS, which the signature rules for state bodies
    # require; "pkcs1v15" is for tokens that lack PSS. ECDSA keys ignore it.
    rsa_padding: Literal["pss", "pkcs1v15"] = "pss"
    # RFC 3161 time-stamping authority for PAdES B-T signatures; without it signatures are B-B.
    tsa_url: str | None = Field(default=None, pattern=r"^https?://", description="URL of the RFC 3161 time-stamping authority")
    tsa_timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("key_id", "unit_key_id")
    @classmethod
    def _lower_hex(cls, value: str | None) -> str | None:
        return value.lower() if value is not None else None

    @property
    def unit_signing_enabled(self) -> bool:
        return self.unit_key_id is not None


class PdfConfig(_Section):
    """Options of the archive PDF."""

    # The fields as an embedded fields.json file. PDF/A-2 allows only PDF/A
    # files as attachments, so this makes the document PDF/A-3b. The rules
    # for converted records ask for PDF/A-1 or PDF/A-2, so it stays off
    # unless the archive accepts PDF/A-3.
    attach_fields: StrictBool = Field(default=False, description="Embed the fields as fields.json, which makes the PDF PDF/A-3b")


class UploadConfig(_Section):
    url: str = Field(pattern=r"^https?://")
    token_file: Path | None = None
    ca_file: Path | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    retry_min_seconds: float = Field(default=2.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    # A document the archive rejects (HTTP 400, 413, 422, a bad receipt...) is
    # sent again at the next rounds, in case the archive itself was at fault,
    # and marked failed at the max_rejections-th rejection. A rejected token or
    # address does not count, because the fix is on the box, not the document.
    max_rejections: int = Field(default=3, ge=1, le=100, description="Rejections of one document before it is marked failed")


class MqttConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    prefix: str = Field(default="sohoa", pattern=r"^[^#+]+$")
    username: str | None = None
    password_file: Path | None = None
    tls: StrictBool = False
    ca_file: Path | None = None
    keepalive_seconds: int = Field(default=30, ge=5, le=3600)
    heartbeat_seconds: float = Field(default=60.0, gt=0)
    certfile: Path | None = Field(default=None, description="PEM client certificate of this box, for brokers that require one")
    keyfile: Path | None = Field(default=None, description="PEM private key of the client certificate")
    homeassistant_discovery: StrictBool = False
    homeassistant_prefix: str = Field(default="homeassistant", pattern=r"^[^#+]+$")
    commands_enabled: StrictBool = Field(default=False, description="Accept scan, cancel, flush-uploads, reload and ping on the command topic")
    commands_per_minute: int = Field(default=6, ge=1, le=600, description="Commands accepted per minute; more are rejected")

    @model_validator(mode="after")
    def _client_certificate_pair(self) -> MqttConfig:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together; set both for a client certificate, or neither")
        if self.certfile is not None and not self.tls:
            raise ValueError("a client certificate needs tls = true")
        return self


class PlanConfig(_Section):
    """The digitization plan: the counted paper stock and the share to digitize each year.

    ``inventory`` maps a document-type code to the number of paper results
    counted at the initial stock-taking. ``start_year`` is the first year of
    the plan. By the end of year N the plan expects the sum of the yearly
    percentages from ``start_year`` to N digitized, at most 100%.
    """

    inventory: dict[TypeCode, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    start_year: int | None = Field(default=None, ge=2000, le=2100)
    yearly_target_percent: float = Field(default=20.0, gt=0, le=100, description="Share of the inventory to digitize each year")
    yearly_targets: dict[int, Annotated[float, Field(ge=0, le=100)]] = Field(
        default_factory=dict, description="Percent for particular years, overriding yearly_target_percent"
    )
    deadline: date | None = None
    timezone: str = Field(default="Asia/Ho_Chi_Minh", description="Time zone that decides the day and month of a scan")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'Asia/Ho_Chi_Minh'") from exc
        return value

    @model_validator(mode="after")
    def _start_year_with_inventory(self) -> PlanConfig:
        if self.inventory and self.start_year is None:
            raise ValueError("start_year is missing; set the first year of the plan next to the inventory")
        return self


class Config(_Section):
    box: BoxConfig
    gpio: GpioConfig = GpioConfig()
    scanner: ScannerConfig
    ocr: OcrConfig = OcrConfig()
    signing: SigningConfig
    pdf: PdfConfig = PdfConfig()
    upload: UploadConfig
    mqtt: MqttConfig = MqttConfig()
    plan: PlanConfig = PlanConfig()
    capture: CaptureConfig = CaptureConfig()
    profiles: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$")], ProfileConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _profiles_exist(self) -> Config:
        problems = [
            f"gpio.buttons: profile {button.profile!r} has no [profiles.{button.profile}] section"
            for button in self.gpio.buttons
            if button.profile not in self.profiles
        ]
        profile = self.capture.hot_folder_profile
        if profile is not None and profile not in self.profiles:
            problems.append(f"capture.hot_folder_profile: profile {profile!r} has no [profiles.{profile}] section")
        for option, profile in self.capture.scanner_button_profiles.items():
            if profile not in self.profiles:
                problems.append(
                    f"capture.scanner_button_profiles: {option} names profile {profile!r}, which has no [profiles.{profile}] section"
                )
        if problems:
            # One error that lists every missing profile, so that one edit fixes them all.
            raise ValueError("; ".join(problems))
        return self

    @property
    def spool_dir(self) -> Path:
        return self.box.data_dir / "spool"

    @property
    def journal_path(self) -> Path:
        return self.box.data_dir / "journal.sqlite"


def _describe(error: dict) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "(file)"
    if error["type"] == "extra_forbidden":
        return f"{location}: unknown key"
    if error["type"] == "missing":
        return f"{location}: missing"
    if error["type"] == "value_error":
        # pydantic prefixes the validator's own message with "Value error, ".
        return f"{location}: {error['ctx']['error']}"
    return f"{location}: {error['msg']}"


def parse_config(data: dict, source: str = "<config>") -> Config:
    """Validate ``data`` (as read from TOML) and return the frozen config."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "\n".join(f"  - {_describe(err)}" for err in exc.errors())
        raise ConfigError(
            N_("Invalid configuration in {source}:\n{problems}\nFix these keys and start again."),
            source=source,
            problems=problems,
        ) from exc


def load_config(path: Path) -> Config:
    """Read and validate the TOML file at ``path``."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(N_("Configuration file not found: {path}"), path=path) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(N_("Configuration file {path} is not valid TOML: {detail}"), path=path, detail=exc) from exc
    return parse_config(data, source=str(path))


def read_secret(file: Path | None, env: str | None, what: str) -> str | None:
    """Read a secret from a credential file, else from an environment variable.

    ``$CREDENTIALS_DIRECTORY`` (set by systemd's ``LoadCredential=``) is searched
    when ``file`` is a bare name. Returns None when neither is configured.
    """
    if file is not None:
        candidate = Path(file)
        credentials_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if not candidate.is_absolute() and credentials_dir:
            candidate = Path(credentials_dir) / candidate
        try:
            return candidate.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                N_("Cannot read the {what} from credential file {path}: {detail}"), what=what, path=candidate, detail=exc.strerror
            ) from exc
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(N_("Environment variable {env} holding the {what} is not set."), env=env, what=what)
        return value
    return None
