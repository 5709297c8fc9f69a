"""provisioning/provision.py against a throwaway root prefix: the enrolled tree, its modes, and a second run changing nothing."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sohoa.config import load_config

REPO = Path(__file__).resolve().parents[1]
PROVISION = REPO / "provisioning" / "provision.py"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None or shutil.which("systemctl") is None,
    reason="systemd-sysusers and systemctl (Debian package systemd) are needed to provision a root prefix",
)


def write_answers(folder: Path, **overrides: object) -> Path:
    """Write an answers file with this box's values and secret files under ``folder``."""
    secrets = folder / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "token-pin").write_text("246810\n", encoding="utf-8")
    (secrets / "archive-token").write_text("archive-secret\n", encoding="utf-8")
    (secrets / "root.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", encoding="utf-8")
    answers = {
        "site": "sgddt-hanam",
        "device": "box-07",
        "unit": "Sở Giáo dục và Đào tạo tỉnh Hà Nam",
        "department": "Phòng Khảo thí và Quản lý chất lượng",
        "operator": "Trần Thị \"Bình\"",
        "agency_code": "H31.01",
        "scanner_device": "fujitsu:fi-7160:12345",
        "scanner_source": "ADF Duplex",
        "token_module": "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so",
        "token_label": "VGCA-TOKEN",
        "key_id": "0A1B",
        "token_pin_file": str(secrets / "token-pin"),
        "trust_root_file": str(secrets / "root.pem"),
        "archive_url": "https://luutru.example.gov.vn",
        "archive_token_file": str(secrets / "archive-token"),
        "broker_host": "mqtt.example.gov.vn",
        **overrides,
    }
    lines = []
    for key, value in answers.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        else:
            escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{key} = "{escaped}"')
    path = folder / "answers.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def provision(root: Path, answers: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(PROVISION), "--root", str(root), "--skip-packages", "--skip-python", "--answers", str(answers), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def summary_counts(output: str) -> tuple[int, int]:
    last = output.strip().splitlines()[-1]
    changed = int(last.split(": ")[1].split(" changed")[0])
    unchanged = int(last.split(", ")[-1].split(" unchanged")[0])
    return changed, unchanged


def account_entry(root: Path, file: str, name: str) -> list[str]:
    for line in (root / "etc" / file).read_text(encoding="utf-8").splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    raise AssertionError(f"{name} not in {root}/etc/{file}")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory):
    """Provision one root prefix and keep both runs' outputs."""
    folder = tmp_path_factory.mktemp("provision")
    root = folder / "root"
    answers = write_answers(folder)
    first = provision(root, answers)
    second = provision(root, answers)
    return root, first, second


def test_first_run_succeeds(provisioned):
    _, first, _ = provisioned

    assert first.returncode == 0, first.stderr
    changed, _ = summary_counts(first.stdout)
    assert changed > 10


def test_second_run_changes_nothing(provisioned):
    _, first, second = provisioned

    assert second.returncode == 0, second.stderr
    changed, unchanged = summary_counts(second.stdout)
    assert changed == 0, second.stdout
    assert "changed:" not in second.stdout
    assert unchanged == sum(summary_counts(first.stdout))


def test_user_and_groups(provisioned):
    root, _, _ = provisioned

    user = account_entry(root, "passwd", "sohoa")
    assert user[5] == "/var/lib/sohoa"
    assert user[6] == "/usr/sbin/nologin"
    for group in ("scanner", "gpio", "sohoa-token"):
        members = account_entry(root, "group", group)[3].split(",")
        assert "sohoa" in members, group
    assert account_entry(root, "group", "sohoa")[2] == user[3]


def test_config_rendered_and_valid(provisioned):
    root, _, _ = provisioned

    config = load_config(root / "etc/sohoa/sohoa.toml")

    assert config.box.device == "box-07"
    assert config.box.operator == 'Trần Thị "Bình"'
    assert config.box.data_dir == Path("/var/lib/sohoa")
    assert config.scanner.source == "ADF Duplex"
    assert config.signing.key_id == "0a1b"
    assert config.signing.pin_file == Path("token-pin")
    assert config.signing.trust_roots == [Path("/etc/sohoa/ca/signing-root.pem")]
    assert config.upload.token_file == Path("archive-token")
    assert config.mqtt.port == 8883
    assert config.mqtt.tls is True
    assert config.ocr.models_dir == Path("/opt/sohoa/models")
    assert config.gpio.buzzer_pin is None


def test_config_mode_and_group(provisioned):
    root, _, _ = provisioned
    path = root / "etc/sohoa/sohoa.toml"

    assert mode(path) == 0o640
    if os.geteuid() == 0:
        assert path.stat().st_uid == 0
        assert str(path.stat().st_gid) == account_entry(root, "passwd", "sohoa")[3]


def test_credentials_root_only(provisioned):
    root, _, _ = provisioned
    folder = root / "etc/sohoa/credentials"

    assert mode(folder) == 0o700
    assert (folder / "token-pin").read_text(encoding="utf-8") == "246810\n"
    assert (folder / "archive-token").read_text(encoding="utf-8") == "archive-secret\n"
    for name in ("token-pin", "archive-token"):
        assert mode(folder / name) == 0o600, name
        if os.geteuid() == 0:
            assert (folder / name).stat().st_uid == 0
    assert not (folder / "mqtt-password").exists()


def test_data_dir_owned_by_service(provisioned):
    root, _, _ = provisioned
    data = root / "var/lib/sohoa"

    assert data.is_dir()
    assert mode(data) == 0o750
    if os.geteuid() == 0:
        assert str(data.stat().st_uid) == account_entry(root, "passwd", "sohoa")[2]


def test_unit_installed_and_enabled(provisioned):
    root, _, _ = provisioned
    unit = root / "etc/systemd/system/sohoa.service"
    link = root / "etc/systemd/system/multi-user.target.wants/sohoa.service"

    assert unit.read_bytes() == (REPO / "systemd/sohoa.service").read_bytes()
    assert link.is_symlink()
    assert os.readlink(link) == "/etc/systemd/system/sohoa.service"
    assert (root / "etc/udev/rules.d/70-sohoa.rules").read_bytes() == (REPO / "systemd/udev/70-sohoa.rules").read_bytes()
    assert not (root / "etc/systemd/system/var-lib-sohoa.mount").exists()


def test_models_match_manifest(provisioned):
    root, _, _ = provisioned
    from sohoa.ocr.models import load_model_set

    models = load_model_set(root / "opt/sohoa/models")

    assert models.detector.is_file()
    assert models.recognizer.is_file()


def test_changed_answer_rewrites_config_only(tmp_path):
    root = tmp_path / "root"
    assert provision(root, write_answers(tmp_path)).returncode == 0

    result = provision(root, write_answers(tmp_path, operator="Lê Văn Cường"))

    assert result.returncode == 0, result.stderr
    assert summary_counts(result.stdout)[0] == 1
    assert "changed: file /etc/sohoa/sohoa.toml" in result.stdout
    assert load_config(root / "etc/sohoa/sohoa.toml").box.operator == "Lê Văn Cường"


def test_data_partition_and_broker_password(tmp_path):
    root = tmp_path / "root"
    password = tmp_path / "mqtt-password"
    password.write_text("broker-secret\n", encoding="utf-8")
    answers = write_answers(
        tmp_path, data_device="LABEL=sohoa-data", buzzer_pin=23, broker_username="box-07", broker_password_file=str(password), broker_port=1883, broker_tls=False
    )

    result = provision(root, answers)

    assert result.returncode == 0, result.stderr
    mount = (root / "etc/systemd/system/var-lib-sohoa.mount").read_text(encoding="utf-8")
    assert "What=LABEL=sohoa-data" in mount
    assert "Where=/var/lib/sohoa" in mount
    assert (root / "etc/systemd/system/local-fs.target.wants/var-lib-sohoa.mount").is_symlink()
    drop_in = (root / "etc/systemd/system/sohoa.service.d/credentials.conf").read_text(encoding="utf-8")
    assert "LoadCredential=mqtt-password:/etc/sohoa/credentials/mqtt-password" in drop_in
    assert mode(root / "etc/sohoa/credentials/mqtt-password") == 0o600
    config = load_config(root / "etc/sohoa/sohoa.toml")
    assert config.mqtt.username == "box-07"
    assert config.mqtt.password_file == Path("mqtt-password")
    assert config.mqtt.tls is False
    assert config.gpio.buzzer_pin == 23


def test_broker_client_certificate(tmp_path):
    root = tmp_path / "root"
    certificate = tmp_path / "box-07.pem"
    certificate.write_text("-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n", encoding="utf-8")
    key = tmp_path / "box-07.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n", encoding="utf-8")
    answers = write_answers(tmp_path, broker_certfile=str(certificate), broker_keyfile=str(key))

    result = provision(root, answers)

    assert result.returncode == 0, result.stderr
    config = load_config(root / "etc/sohoa/sohoa.toml")
    assert config.mqtt.certfile == Path("/etc/sohoa/ca/broker-client.pem")
    assert config.mqtt.keyfile == Path("mqtt-client-key")
    assert mode(root / "etc/sohoa/credentials/mqtt-client-key") == 0o600
    assert (root / "etc/sohoa/ca/broker-client.pem").read_bytes() == certificate.read_bytes()
    drop_in = (root / "etc/systemd/system/sohoa.service.d/credentials.conf").read_text(encoding="utf-8")
    assert drop_in == "[Service]\nLoadCredential=mqtt-client-key:/etc/sohoa/credentials/mqtt-client-key\n"


def test_client_key_without_certificate_rejected(tmp_path):
    key = tmp_path / "box-07.key"
    key.write_text("key\n", encoding="utf-8")

    result = provision(tmp_path / "root", write_answers(tmp_path, broker_keyfile=str(key)))

    assert result.returncode == 1
    assert "give both for a client certificate" in result.stderr


def test_invalid_answers_change_nothing(tmp_path):
    root = tmp_path / "root"
    answers = write_answers(tmp_path, key_id="xyz", site="", colour="blue")

    result = provision(root, answers)

    assert result.returncode == 1
    assert "key_id: 'xyz'" in result.stderr
    assert "site: missing" in result.stderr
    assert "colour: unknown key" in result.stderr
    assert not (root / "etc").exists()


def test_missing_secret_stops_before_changes(tmp_path):
    root = tmp_path / "root"
    answers = write_answers(tmp_path, token_pin_file="")

    result = provision(root, answers)

    assert result.returncode == 1
    assert "token_pin_file" in result.stderr
    assert not (root / "etc").exists()


def test_root_prefix_needs_skip_flags(tmp_path):
    command = [sys.executable, str(PROVISION), "--root", str(tmp_path / "root"), "--answers", str(write_answers(tmp_path))]

    result = subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert result.returncode == 1
    assert "--skip-packages and --skip-python" in result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is missing: install the Debian package systemd")
def test_provisioned_units_verify(tmp_path):
    root = tmp_path / "root"
    password = tmp_path / "mqtt-password"
    password.write_text("broker-secret\n", encoding="utf-8")
    answers = write_answers(tmp_path, data_device="LABEL=sohoa-data", broker_username="box-07", broker_password_file=str(password))
    assert provision(root, answers).returncode == 0
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    # verify checks that ExecStart= names an executable; --skip-python left the venv out.
    executable = root / "opt/sohoa/.venv/bin/sohoa"
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    executable.chmod(0o755)

    command = ["systemd-analyze", "verify", f"--root={root}", "--man=no", "--generators=no", "sohoa.service", "var-lib-sohoa.mount"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
