"""A whole box on one machine, for the demo and the end-to-end tests.

:func:`build_testbed` starts real local services: mosquitto and the reference
archive receiver on 127.0.0.1. It creates a SoftHSM2 token with a test CA and a
signer certificate, and a private SANE configuration whose ``pnm`` device feeds
the sample pages like a document feeder. Then it writes a config file for them.
:func:`run_demo` then presses the (mock) button and follows the document to
the archive's receipt.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sohoa.i18n import N_, gettext as _

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parents[3]
SAMPLES_DIR = REPO_DIR / "samples" / "pages"
MODELS_DIR = REPO_DIR / "models"
# The sample document the demo scans: every page of the decision.
DEMO_DOCUMENT = "quyet-dinh"
TOKEN_PIN = "246810"
# Labels of the national metadata fields, as the metadata standard names them in Vietnamese.
FIELD_LABELS = {
    "TypeName": N_("Document type"),
    "CodeNumber": N_("Number"),
    "CodeNotation": N_("Notation"),
    "IssuedDate": N_("Issue date"),
    "OrganName": N_("Issuing body"),
    "Subject": N_("Subject"),
    "Position": N_("Signer's position"),
    "FullName": N_("Signer"),
    "OwnerName": N_("Owner"),
    "OwnerIdentity": N_("Owner's identity number"),
}
PIN_ENV = "SOHOA_TOKEN_PIN"


def sample_pages(document: str = DEMO_DOCUMENT) -> list[Path]:
    pages = sorted(SAMPLES_DIR.glob(f"{document}-p*.png"))
    if not pages:
        raise FileNotFoundError(f"no sample pages for {document!r} in {SAMPLES_DIR}")
    return pages


def load_feeder(feeder_dir: Path, pages: Sequence[Path], *, jam_at: int | None = None) -> None:
    """Fill the virtual feeder with ``pages``; ``jam_at`` (1-based) makes the feeder jam at that page."""
    if feeder_dir.exists():
        shutil.rmtree(feeder_dir)
    feeder_dir.mkdir(parents=True)
    for index, page in enumerate(pages, start=1):
        if jam_at == index:
            (feeder_dir / f"{index:03d}.jam").touch()
        else:
            shutil.copyfile(page, feeder_dir / f"{index:03d}{page.suffix}")


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago, so a service can start there later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def write_toml(path: Path, sections: dict[str, dict[str, object]]) -> None:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None)
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


@dataclass
class Testbed:
    folder: Path
    config_path: Path
    feeder_dir: Path
    env: dict[str, str]
    broker: object
    receiver: object
    token: object
    pki: object
    sections: dict[str, dict[str, object]] = field(default_factory=dict)

    def config(self):
        from sohoa.config import load_config

        return load_config(self.config_path)

    def rewrite_config(self, section: str, **values: object) -> None:
        self.sections.setdefault(section, {}).update(values)
        write_toml(self.config_path, self.sections)

    def stop(self) -> None:
        for service in (self.receiver, self.broker):
            try:
                service.stop()
            except Exception:
                log.exception("Stopping %r failed", service)


@contextmanager
def build_testbed(folder: Path, *, pages: Sequence[Path] | None = None, start_receiver: bool = True) -> Iterator[Testbed]:
    """Start the local services and write a config for them; stop the services on exit.

    The process environment gets ``SANE_CONFIG_DIR``, ``SOFTHSM2_CONF`` and the
    token PIN variable, because libsane and SoftHSM read them when they load.
    """
    from sohoa.receiver import ArchiveReceiver
    from sohoa.testbed.mosquitto import start_mosquitto
    from sohoa.testbed.pki import create_test_pki
    from sohoa.testbed.sane import make_sane_config_dir
    from sohoa.testbed.softhsm import create_test_token

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    sane_dir = make_sane_config_dir(folder / "sane")
    pki = create_test_pki(folder / "pki")
    token = create_test_token(folder / "softhsm", pki, pin=TOKEN_PIN)
    env = {"SANE_CONFIG_DIR": str(sane_dir), PIN_ENV: TOKEN_PIN, **token.env}
    os.environ.update(env)

    feeder_dir = folder / "feeder"
    load_feeder(feeder_dir, pages if pages is not None else sample_pages())
    archive_token = folder / "archive.token"
    archive_token.write_text("demo-archive-token\n", encoding="utf-8")
    archive_token.chmod(0o600)

    broker = start_mosquitto(folder / "mosquitto")
    receiver = ArchiveReceiver(folder / "archive", port=_free_port(), token="demo-archive-token")
    if start_receiver:
        receiver.start()
    sections: dict[str, dict[str, object]] = {
        "box": {
            "site": "demo",
            "device": "box-01",
            "unit": "Sở Giáo dục và Đào tạo tỉnh Hà Nam (thử nghiệm)",
            "department": "Phòng Khảo thí và Quản lý chất lượng",
            "operator": "Nguyễn Văn An",
            "agency_code": "H31.01",
            "data_dir": str(folder / "data"),
            "min_free_mb": 50,
        },
        "gpio": {"pin_factory": "mock"},
        "scanner": {"device": "pnm:0", "feeder_dir": str(feeder_dir), "resolution": 300, "mode": "Color"},
        "ocr": {"models_dir": str(MODELS_DIR), "threads": 2},
        "signing": {
            "pkcs11_module": str(token.module),
            "token_label": token.label,
            "key_id": token.key_id,
            "pin_env": PIN_ENV,
            "trust_roots": [str(pki.ca_cert_path)],
            "retry_seconds": 2.0,
        },
        "upload": {
            "url": f"http://127.0.0.1:{receiver.port}",
            "token_file": str(archive_token),
            "timeout_seconds": 10.0,
            "retry_min_seconds": 0.5,
            "retry_max_seconds": 5.0,
        },
        "mqtt": {"host": broker.host, "port": broker.port, "prefix": "sohoa", "heartbeat_seconds": 60.0},
    }
    config_path = folder / "sohoa.toml"
    write_toml(config_path, sections)
    bed = Testbed(folder, config_path, feeder_dir, env, broker, receiver, token, pki, sections)
    try:
        yield bed
    finally:
        bed.stop()


def press_button(daemon, profile: str | None = None) -> None:
    """Press and release the panel's scan button, or the extra button of ``profile``, through gpiozero's mock pin."""
    pin = daemon.panel.button_for(profile).pin
    pin.drive_low()
    pin.drive_high()


def hold_button(daemon, profile: str | None = None, timeout: float = 10.0) -> None:
    """Hold a panel button through its mock pin until gpiozero reports a long press, then release it.

    Raises TimeoutError if gpiozero reports no long press within ``timeout`` seconds.
    """
    button = daemon.panel.button_for(profile)
    long_press_seen = threading.Event()
    handler = button.when_held

    def on_held() -> None:
        handler()
        long_press_seen.set()

    button.when_held = on_held
    try:
        button.pin.drive_low()
        if not long_press_seen.wait(timeout):
            raise TimeoutError(f"no long press reported within {timeout} s")
    finally:
        button.pin.drive_high()
        button.when_held = handler


def wait_for_state(daemon, predicate, timeout: float) -> dict | None:
    """Wait until a published state satisfies ``predicate``; return it, or None on timeout."""
    condition = threading.Condition()
    seen: list[dict] = []

    def on_state(state: dict) -> None:
        with condition:
            seen.append(state)
            condition.notify_all()

    daemon.on_state = on_state
    try:
        with condition:
            current = daemon.last_state
            if current is not None and predicate(current):
                return current
            matched = condition.wait_for(lambda: any(predicate(state) for state in seen), timeout=timeout)
            return next(state for state in seen if predicate(state)) if matched else None
    finally:
        daemon.on_state = None


def run_demo(workdir: Path, *, keep_running: bool = False) -> int:
    """Scan the sample decision from button press to the archive's receipt, and show the result."""
    from sohoa.app import build_daemon
    from sohoa.journal import Journal
    from sohoa.signing import verify_pdf

    workdir = Path(workdir).resolve()
    if (workdir / "data").exists():
        shutil.rmtree(workdir)
    with build_testbed(workdir) as bed:
        config = bed.config()
        print(_("Test services are running: broker {broker}, archive {archive}.").format(
            broker=f"{bed.broker.host}:{bed.broker.port}", archive=bed.receiver.url))
        daemon = build_daemon(config)
        daemon.start()
        try:
            print(_("Pressing the scan button; the feeder holds {count} pages.").format(count=len(list(bed.feeder_dir.iterdir()))))
            press_button(daemon)
            state = wait_for_state(daemon, lambda s: s["totals"]["documents_uploaded"] >= 1 or s["state"] == "alert", timeout=900)
            journal = Journal(config.journal_path)
            jobs = journal.jobs_in("uploaded")
            if not jobs:
                print(_("The document did not reach the archive. Last state: {state}").format(
                    state=json.dumps(state or daemon.state(), ensure_ascii=False)))
                return 1
            job = jobs[-1]
            result = verify_pdf(Path(job.signed_path), config.signing.trust_roots)
            print()
            print(_("Signed PDF: {path}").format(path=job.signed_path))
            print(_("Document code: {code}").format(code=job.doc_code))
            print(_("Recognized text (first lines):"))
            texts = [json.loads(Path(page.ocr_path).read_text(encoding="utf-8")) for page in journal.pages(job.id)]
            lines = [line["text"] for text in texts for line in text["lines"]][:15]
            for line in lines:
                print(f"    {line}")
            print(_("Fields:"))
            for name, value in job.fields.items():
                if value.get("value"):
                    label = _(FIELD_LABELS[name]) if name in FIELD_LABELS else name
                    print(f"    {label} ({name}): {value['value']}")
            print(_("Signature: {summary}").format(
                summary=_("valid, signed by {signer}").format(signer=result.signer) if result.valid and result.intact and result.trusted
                else _("NOT valid: {detail}").format(detail=result.summary)))
            print(_("Archive receipt: {receipt}").format(receipt=json.dumps(job.receipt, ensure_ascii=False)))
            if keep_running:
                print(_("Services keep running; press Ctrl+C to stop."))
                threading.Event().wait()
            return 0 if result.valid and result.intact else 1
        finally:
            daemon.stop()
