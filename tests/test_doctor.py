"""`sohoa doctor` against the real testbed: everything OK, then one broken part at a time."""

from __future__ import annotations

import copy
import json
import re
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from sohoa import doctor, i18n
from sohoa.cli import main
from sohoa.testbed.demo import build_testbed, write_toml
from sohoa.testbed.legal import issue_tsa_identity, run_local_tsa

PACKAGE = Path(i18n.__file__).parent
FRAGMENTS_DIR = PACKAGE / "locale" / "fragments"
MAIN_CATALOG = PACKAGE / "locale" / "vi" / "LC_MESSAGES" / "sohoa.po"
ALL_CHECKS = ["config", "scanner", "token", "models", "broker", "archive", "disk", "clock"]


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    with build_testbed(tmp_path_factory.mktemp("doctor")) as testbed:
        yield testbed


@pytest.fixture(autouse=True)
def english(monkeypatch):
    monkeypatch.setenv("SOHOA_LANG", "en")
    i18n.set_language("en")
    yield
    i18n.set_language()


def closed_port() -> int:
    """Return a port on 127.0.0.1 with nothing listening, so connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def config_with(bed, folder: Path, section: str, **values: object) -> Path:
    """Write a copy of the testbed's config with ``values`` changed in ``section``."""
    sections = copy.deepcopy(bed.sections)
    sections.setdefault(section, {}).update(values)
    path = folder / "sohoa.toml"
    write_toml(path, sections)
    return path


def by_check(results) -> dict[str, doctor.CheckResult]:
    return {result.check: result for result in results}


def run_doctor(capsys, config_path: Path, *extra: str) -> tuple[int, str]:
    status = main(["--lang", "en", "--config", str(config_path), "doctor", "--timeout", "5", *extra])
    return status, capsys.readouterr().out


def test_testbed_all_checks_ok(bed, capsys):
    status, output = run_doctor(capsys, bed.config_path)

    assert status == 0, output
    for title in ("Configuration", "Scanner", "Signing token", "OCR models", "MQTT broker", "Archive", "Disk space", "Clock"):
        assert re.search(rf"^\[\s*OK\s*\] {title}: ", output, re.MULTILINE), output
    assert "8 OK, 0 warnings, 0 problems, 0 skipped." in output


def test_json_lists_every_check(bed, capsys):
    status, output = run_doctor(capsys, bed.config_path, "--format", "json")

    results = json.loads(output)
    assert status == 0
    assert [result["check"] for result in results] == ALL_CHECKS
    assert {result["status"] for result in results} == {"ok"}


def test_wrong_token_label(bed, tmp_path, capsys):
    path = config_with(bed, tmp_path, "signing", token_label="NO-SUCH-TOKEN")

    status, output = run_doctor(capsys, path)
    results = by_check(doctor.run_checks(path, timeout=5))

    assert status == 1
    assert results["token"].status == doctor.PROBLEM
    assert "NO-SUCH-TOKEN" in results["token"].message
    assert "Plug the signing token in" in results["token"].fix
    assert "[PROBLEM] Signing token: " in output
    assert "To fix: Plug the signing token in" in output
    assert results["scanner"].status == doctor.OK


def test_wrong_pin(bed, tmp_path):
    pin_file = tmp_path / "token-pin"
    pin_file.write_text("000000\n", encoding="utf-8")
    path = config_with(bed, tmp_path, "signing", pin_env=None, pin_file=str(pin_file))

    result = by_check(doctor.run_checks(path, only={"token"}))["token"]

    assert result.status == doctor.PROBLEM
    assert "token-pin" in result.fix


def test_archive_down(bed, tmp_path, capsys):
    url = f"http://127.0.0.1:{closed_port()}"
    path = config_with(bed, tmp_path, "upload", url=url)

    status, output = run_doctor(capsys, path)
    result = by_check(doctor.run_checks(path, only={"archive"}, timeout=5))["archive"]

    assert status == 1
    assert result.status == doctor.PROBLEM
    assert url in result.message
    assert "[PROBLEM] Archive:" in output


def test_missing_archive_token(bed, tmp_path):
    path = config_with(bed, tmp_path, "upload", token_file=str(tmp_path / "absent-token"))

    result = by_check(doctor.run_checks(path, only={"archive"}))["archive"]

    assert result.status == doctor.PROBLEM
    assert "absent-token" in result.message
    assert "archive-token" in result.fix


def test_models_dir_missing(bed, tmp_path, capsys):
    missing = tmp_path / "no-models"
    path = config_with(bed, tmp_path, "ocr", models_dir=str(missing))

    status, output = run_doctor(capsys, path)
    result = by_check(doctor.run_checks(path, only={"models"}))["models"]

    assert status == 1
    assert result.status == doctor.PROBLEM
    assert str(missing) in result.message
    assert "[PROBLEM] OCR models:" in output


def test_corrupt_model_file(bed, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    source = Path(bed.sections["ocr"]["models_dir"])
    manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
    for name in [entry["file"] for entry in manifest["models"]] + ["manifest.json", "asternet_vi_charset.json"]:
        (models / name).write_bytes((source / name).read_bytes())
    detector = next(entry["file"] for entry in manifest["models"] if entry["name"] == "detector")
    (models / detector).write_bytes(b"truncated")
    path = config_with(bed, tmp_path, "ocr", models_dir=str(models))

    result = by_check(doctor.run_checks(path, only={"models"}))["models"]

    assert result.status == doctor.PROBLEM
    assert detector in result.message


def test_broker_down(bed, tmp_path):
    path = config_with(bed, tmp_path, "mqtt", port=closed_port())

    result = by_check(doctor.run_checks(path, only={"broker"}, timeout=5))["broker"]

    assert result.status == doctor.PROBLEM
    assert "Cannot connect to the MQTT broker" in result.message


def test_broker_client_certificate_missing(bed, tmp_path):
    path = config_with(bed, tmp_path, "mqtt", tls=True, certfile=str(tmp_path / "absent.pem"), keyfile=str(tmp_path / "absent.key"))

    result = by_check(doctor.run_checks(path, only={"broker"}, timeout=5))["broker"]

    assert result.status == doctor.PROBLEM
    assert "absent.pem" in result.message
    assert "certificate and key files" in result.fix


def test_disk_below_reserve(bed, tmp_path):
    path = config_with(bed, tmp_path, "box", min_free_mb=10**9)

    result = by_check(doctor.run_checks(path, only={"disk"}))["disk"]

    assert result.status == doctor.PROBLEM
    assert "reserve 1000000000 MB" in result.message


def test_invalid_config_skips_the_rest(bed, tmp_path, capsys):
    path = config_with(bed, tmp_path, "box", site="bad site/name")

    status, output = run_doctor(capsys, path)
    results = by_check(doctor.run_checks(path))

    assert status == 1
    assert results["config"].status == doctor.PROBLEM
    assert "box.site" in results["config"].message
    for name in ("scanner", "token", "models", "broker", "archive", "disk"):
        assert results[name].status == doctor.SKIPPED
    assert "[PROBLEM] Configuration:" in output


def test_certificate_expiry(bed):
    from sohoa.signing import TokenSigner

    config = bed.config()
    valid = doctor.check_token(config)
    expiry = TokenSigner(config.signing).probe().not_after

    soon = doctor.check_token(config, now=expiry - timedelta(days=10), warning_days=30)
    expired = doctor.check_token(config, now=expiry + timedelta(days=1))
    later = doctor.check_token(config, now=expiry - timedelta(days=60), warning_days=30)

    assert valid.status == doctor.OK
    assert "valid until" in valid.message
    assert soon.status == doctor.WARNING
    assert "in 10 days" in soon.message
    assert expired.status == doctor.PROBLEM
    assert "expired" in expired.message
    assert later.status == doctor.OK


@pytest.mark.parametrize(
    ("now", "ntp", "expected"),
    [
        (datetime(2020, 1, 1, tzinfo=timezone.utc), True, doctor.PROBLEM),
        (datetime(2027, 3, 1, tzinfo=timezone.utc), False, doctor.WARNING),
        (datetime(2027, 3, 1, tzinfo=timezone.utc), True, doctor.OK),
        (datetime(2027, 3, 1, tzinfo=timezone.utc), None, doctor.OK),
    ],
)
def test_clock_states(now, ntp, expected):
    result = doctor.check_clock(now=now, read_ntp_status=lambda: ntp)

    assert result.status == expected


def test_warning_keeps_exit_zero(bed, capsys, monkeypatch):
    monkeypatch.setattr(doctor, "read_timedatectl_ntp_status", lambda: False)

    status, output = run_doctor(capsys, bed.config_path, "--only", "clock")

    assert status == 0
    assert "[WARNING] Clock:" in output


def doctor_messages() -> set[str]:
    keywords = {"_": None, "N_": None, "gettext": None}
    return {message for _, message, _, _ in extract_from_file("python", doctor.__file__, keywords=keywords)}


def vietnamese_catalog():
    """Return the main catalog with every fragment laid over it, while the fragments are not yet merged."""
    with open(MAIN_CATALOG, "rb") as handle:
        catalog = read_po(handle)
    for fragment in sorted(FRAGMENTS_DIR.glob("*.po")):
        with open(fragment, "rb") as handle:
            for message in read_po(handle):
                if message.id:
                    catalog[message.id] = message
    return catalog


def test_every_message_translated():
    catalog = vietnamese_catalog()

    missing = [message for message in sorted(doctor_messages()) if not (catalog.get(message) and catalog.get(message).string)]

    assert not missing, "add Vietnamese translations to a fragment in locale/fragments/:\n" + "\n".join(missing)


def test_vietnamese_output(bed, capsys, tmp_path, monkeypatch):
    mo_path = tmp_path / "locale" / "vi" / "LC_MESSAGES" / "sohoa.mo"
    mo_path.parent.mkdir(parents=True)
    with open(mo_path, "wb") as handle:
        write_mo(handle, vietnamese_catalog())
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path / "locale")
    monkeypatch.delenv("SOHOA_LANG")
    path = config_with(bed, tmp_path, "signing", token_label="NO-SUCH-TOKEN")

    status = main(["--config", str(path), "doctor", "--only", "token", "--only", "disk"])
    output = capsys.readouterr().out

    assert status == 1
    assert re.search(r"^\[\s*LỖI\s*\] Thiết bị ký số \(token\): ", output, re.MULTILINE), output
    assert "Cách khắc phục: Hãy cắm thiết bị ký số (token) vào." in output
    assert "Dung lượng đĩa:" in output


def test_unit_token_checked_when_configured(bed, tmp_path):
    path = config_with(bed, tmp_path, "signing", unit_key_id=bed.token.key_id)

    results = by_check(doctor.run_checks(path, only={"token", "unit_token"}))

    assert results["token"].status == doctor.OK
    assert results["unit_token"].status == doctor.OK
    assert bed.token.label in results["unit_token"].message


def test_unit_token_missing_key(bed, tmp_path):
    path = config_with(bed, tmp_path, "signing", unit_key_id="7f")

    results = by_check(doctor.run_checks(path, only={"token", "unit_token"}))

    assert results["token"].status == doctor.OK
    assert results["unit_token"].status == doctor.PROBLEM
    assert "signing.unit_key_id" in results["unit_token"].fix


def test_unit_token_skipped_without_unit_key(bed):
    results = by_check(doctor.run_checks(bed.config_path))

    assert "unit_token" not in results


@pytest.fixture(scope="module")
def tsa(bed, tmp_path_factory):
    with run_local_tsa(issue_tsa_identity(bed.pki, tmp_path_factory.mktemp("tsa"))) as authority:
        yield authority


def test_tsa_reachable(bed, tsa, tmp_path, capsys):
    path = config_with(bed, tmp_path, "signing", tsa_url=tsa.url)
    before = tsa.requests

    status, output = run_doctor(capsys, path, "--only", "tsa")

    assert status == 0, output
    assert tsa.requests == before + 1
    line = re.search(r"^\[\s*OK\s*\] Time-stamping authority: (.*)$", output, re.MULTILINE)
    assert line, output
    assert tsa.url in line.group(1)
    offset = re.search(r", ([+-][0-9.]+) s from the box clock", line.group(1))
    assert offset, line.group(1)
    assert abs(float(offset.group(1))) < doctor.MAX_TSA_OFFSET_SECONDS


def test_tsa_unreachable_is_warning(bed, tmp_path, capsys):
    url = f"http://127.0.0.1:{closed_port()}/tsa"
    path = config_with(bed, tmp_path, "signing", tsa_url=url)

    status, output = run_doctor(capsys, path, "--only", "tsa")
    result = by_check(doctor.run_checks(path, only={"tsa"}, timeout=5))["tsa"]

    assert status == 0, output
    assert "[WARNING] Time-stamping authority:" in output
    assert result.status == doctor.WARNING
    assert url in result.message
    assert "PAdES B-B" in result.fix


def test_tsa_down_is_warning(bed, tsa, tmp_path):
    path = config_with(bed, tmp_path, "signing", tsa_url=tsa.url)
    tsa.available = False
    try:
        result = by_check(doctor.run_checks(path, only={"tsa"}, timeout=5))["tsa"]
    finally:
        tsa.available = True

    assert result.status == doctor.WARNING
    assert "503" in result.message or "did not return a timestamp" in result.message


def test_tsa_clock_offset_is_warning(bed, tsa, tmp_path):
    path = config_with(bed, tmp_path, "signing", tsa_url=tsa.url)
    tsa.stamper.fixed_dt = datetime.now(timezone.utc) - timedelta(hours=2)
    try:
        result = by_check(doctor.run_checks(path, only={"tsa"}, timeout=5))["tsa"]
    finally:
        tsa.stamper.fixed_dt = None

    assert result.status == doctor.WARNING
    offset = float(re.search(r", ([+-][0-9.]+) s from the box clock", result.message).group(1))
    assert -7300 < offset < -7100
    assert "timedatectl" in result.fix


def test_tsa_skipped_without_url(bed):
    results = by_check(doctor.run_checks(bed.config_path))

    assert "tsa" not in results


def test_hot_folder_missing(bed, tmp_path):
    path = config_with(bed, tmp_path, "capture", hot_folder=str(tmp_path / "no-such-inbox"))

    result = by_check(doctor.run_checks(path, only={"hot_folder"}))["hot_folder"]

    assert result.status == doctor.PROBLEM
    assert "no-such-inbox" in result.message
    assert "capture.hot_folder" in result.fix


def test_hot_folder_ready(bed, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = config_with(bed, tmp_path, "capture", hot_folder=str(inbox))

    result = by_check(doctor.run_checks(path, only={"hot_folder"}))["hot_folder"]

    assert result.status == doctor.OK
    assert not (inbox / "done").exists(), "the check must not create anything"


def test_hot_folder_skipped_when_unset(bed):
    results = by_check(doctor.run_checks(bed.config_path))

    assert "hot_folder" not in results
