"""provisioning/provision.py against a throwaway root prefix: the enrolled tree, its modes, and a second run changing nothing."""

from __future__ import annotations

import os
import re
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
    answers = write_capture_answers(tmp_path, data_device="LABEL=sohoa-data", broker_username="box-07", broker_password_file=str(password))
    assert provision(root, answers).returncode == 0
    assert (root / "etc/systemd/system/sohoa.service.d/hot-folder.conf").is_file()
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


CAPTURE_TABLES = """
long_press_seconds = 3.5
attach_fields = true
max_rejections = 5
tsa_url = "http://tsa.example.gov.vn/tsa"
unit_key_id = "02"
unit_sign_types = ["VB", "GCN"]

[capture]
scanner_buttons = true
auto_start = true
poll_seconds = 0.5
scanner_button_options = ["scan", "email"]
scanner_button_profiles = { scan = "vanbang", email = "sotay" }
separator_sheets = false
hot_folder = "/srv/sohoa/inbox"
hot_folder_group = "scan-share"
hot_folder_profile = "vanbang"
hot_folder_settle_seconds = 4
remove_blank_pages = false
deskew = false

[profiles.vanbang]
label = "Văn bằng, chứng chỉ"
type_code = "VB"
mode = "Color"
resolution = 400

[profiles.sotay]
label = "Sổ, tài liệu đóng quyển"
source = "Flatbed"
flatbed = true

[[buttons]]
pin = 5
profile = "vanbang"

[[buttons]]
pin = 6
profile = "sotay"
"""


def write_capture_answers(folder: Path, tables: str = CAPTURE_TABLES, **overrides: object) -> Path:
    """Write an answers file whose capture, profile and button tables follow the flat answers."""
    path = write_answers(folder, **overrides)
    path.write_text(path.read_text(encoding="utf-8") + tables, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def provisioned_capture(tmp_path_factory):
    """Provision one root prefix with capture answers and a hot folder, twice."""
    folder = tmp_path_factory.mktemp("provision-capture")
    root = folder / "root"
    answers = write_capture_answers(folder)
    first = provision(root, answers)
    second = provision(root, answers)
    return root, first, second


def test_capture_answers_rendered(provisioned_capture):
    root, first, _ = provisioned_capture
    assert first.returncode == 0, first.stderr

    config = load_config(root / "etc/sohoa/sohoa.toml")

    capture = config.capture
    assert capture.scanner_buttons is True
    assert capture.auto_start is True
    assert capture.poll_seconds == 0.5
    assert capture.scanner_button_options == ["scan", "email"]
    assert capture.scanner_button_profiles == {"scan": "vanbang", "email": "sotay"}
    assert capture.separator_sheets is False
    assert capture.hot_folder == Path("/srv/sohoa/inbox")
    assert capture.hot_folder_profile == "vanbang"
    assert capture.hot_folder_settle_seconds == 4
    assert capture.remove_blank_pages is False
    assert capture.deskew is False
    assert capture.crop is True
    assert "page-loaded" in capture.paper_sensor_options


def test_profiles_and_buttons_rendered(provisioned_capture):
    root, _, _ = provisioned_capture

    config = load_config(root / "etc/sohoa/sohoa.toml")

    assert set(config.profiles) == {"vanbang", "sotay"}
    assert config.profiles["vanbang"].label == "Văn bằng, chứng chỉ"
    assert config.profiles["vanbang"].type_code == "VB"
    assert config.profiles["vanbang"].resolution == 400
    assert config.profiles["sotay"].source == "Flatbed"
    assert config.profiles["sotay"].flatbed is True
    assert [(button.pin, button.profile) for button in config.gpio.buttons] == [(5, "vanbang"), (6, "sotay")]
    assert config.gpio.long_press_seconds == 3.5


def test_flat_capture_answers_rendered(provisioned_capture):
    root, _, _ = provisioned_capture

    config = load_config(root / "etc/sohoa/sohoa.toml")

    assert config.pdf.attach_fields is True
    assert config.upload.max_rejections == 5
    assert config.signing.tsa_url == "http://tsa.example.gov.vn/tsa"
    assert config.signing.unit_key_id == "02"
    assert config.signing.unit_sign_types == ["VB", "GCN"]
    assert config.signing.unit_pin_file is None


def test_capture_defaults_without_answers(provisioned):
    root, _, _ = provisioned

    config = load_config(root / "etc/sohoa/sohoa.toml")

    assert config.capture == type(config.capture)()
    assert config.profiles == {}
    assert config.gpio.buttons == []
    assert config.gpio.long_press_seconds == 2.0
    assert config.pdf.attach_fields is False
    assert config.upload.max_rejections == 3
    assert config.signing.tsa_url is None
    assert not (root / "etc/systemd/system/sohoa.service.d/hot-folder.conf").exists()


def test_hot_folder_created_with_share_group(provisioned_capture):
    root, _, _ = provisioned_capture
    folder = root / "srv/sohoa/inbox"

    assert folder.is_dir()
    assert mode(folder) == 0o2770
    share_group = account_entry(root, "group", "scan-share")
    assert "sohoa" in share_group[3].split(",")
    if os.geteuid() == 0:
        assert str(folder.stat().st_uid) == account_entry(root, "passwd", "sohoa")[2]
        assert str(folder.stat().st_gid) == share_group[2]


def test_hot_folder_drop_in_written(provisioned_capture):
    root, _, _ = provisioned_capture

    drop_in = (root / "etc/systemd/system/sohoa.service.d/hot-folder.conf").read_text(encoding="utf-8")

    assert drop_in == "[Service]\nReadWritePaths=-/srv/sohoa/inbox\n"


def test_capture_second_run_changes_nothing(provisioned_capture):
    _, first, second = provisioned_capture

    assert second.returncode == 0, second.stderr
    changed, unchanged = summary_counts(second.stdout)
    assert changed == 0, second.stdout
    assert unchanged == sum(summary_counts(first.stdout))


def test_hot_folder_keeps_files_and_drop_in_removed(tmp_path):
    root = tmp_path / "root"
    assert provision(root, write_capture_answers(tmp_path)).returncode == 0
    saved = root / "srv/sohoa/inbox/scan-0001.pdf"
    saved.write_bytes(b"%PDF-1.7\n")

    result = provision(root, write_answers(tmp_path))

    assert result.returncode == 0, result.stderr
    assert "changed: removed /etc/systemd/system/sohoa.service.d/hot-folder.conf" in result.stdout
    assert "changed: removed /etc/sysusers.d/sohoa-hot-folder.conf" in result.stdout
    assert saved.read_bytes() == b"%PDF-1.7\n"
    assert load_config(root / "etc/sohoa/sohoa.toml").capture.hot_folder is None


@pytest.mark.parametrize("folder", ["/home/scan/inbox", "/root/inbox", "/tmp/inbox"])
def test_hidden_hot_folder_rejected(tmp_path, folder):
    root = tmp_path / "root"
    tables = CAPTURE_TABLES.replace('hot_folder = "/srv/sohoa/inbox"', f'hot_folder = "{folder}"')

    result = provision(root, write_capture_answers(tmp_path, tables))

    assert result.returncode == 1
    assert f"capture.hot_folder: {folder} is under" in result.stderr
    assert "/srv/sohoa/inbox" in result.stderr
    assert not (root / "etc").exists()


def test_hot_folder_relative_path_rejected(tmp_path):
    tables = CAPTURE_TABLES.replace('hot_folder = "/srv/sohoa/inbox"', 'hot_folder = "inbox"')

    result = provision(tmp_path / "root", write_capture_answers(tmp_path, tables))

    assert result.returncode == 1
    assert "capture.hot_folder: 'inbox' must be an absolute path" in result.stderr


def test_hot_folder_parents_reachable(tmp_path):
    root = tmp_path / "root"
    tables = CAPTURE_TABLES.replace('hot_folder = "/srv/sohoa/inbox"', 'hot_folder = "/srv/scans/sohoa/inbox"')
    command = f"umask 077 && exec {sys.executable} {PROVISION} --root {root} --skip-packages --skip-python --answers {write_capture_answers(tmp_path, tables)}"

    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr
    assert mode(root / "srv/scans") == 0o755
    assert mode(root / "srv/scans/sohoa") == 0o755
    assert mode(root / "srv/scans/sohoa/inbox") == 0o2770


def test_privileged_share_group_rejected(tmp_path):
    tables = CAPTURE_TABLES.replace('hot_folder_group = "scan-share"', 'hot_folder_group = "sudo"')

    result = provision(tmp_path / "root", write_capture_answers(tmp_path, tables))

    assert result.returncode == 1
    assert "capture.hot_folder_group: sudo is a privileged group" in result.stderr


def test_capture_answer_types_checked(tmp_path):
    tables = '\n[capture]\nauto_start = "yes"\nspeed = 3\n\n[[buttons]]\npin = "five"\nprofile = "vanbang"\n'

    result = provision(tmp_path / "root", write_capture_answers(tmp_path, tables))

    assert result.returncode == 1
    assert "capture.auto_start: 'yes' is not a boolean" in result.stderr
    assert "capture.speed: unknown key" in result.stderr
    assert "buttons[0].pin: 'five' is not a whole number" in result.stderr


def test_button_without_profile_rejected_by_config(tmp_path):
    root = tmp_path / "root"
    tables = '\n[[buttons]]\npin = 5\nprofile = "vanbang"\n'

    result = provision(root, write_capture_answers(tmp_path, tables))

    assert result.returncode == 1
    assert "profile 'vanbang' has no [profiles.vanbang] section" in result.stderr
    assert "correct the answers" in result.stderr
    assert not (root / "etc").exists()


def test_flat_capture_answers_from_set(tmp_path):
    root = tmp_path / "root"
    extra = ("--set", "max_rejections=7", "--set", "attach_fields=true", "--set", "long_press_seconds=1.5")

    result = provision(root, write_answers(tmp_path), *extra)

    assert result.returncode == 0, result.stderr
    config = load_config(root / "etc/sohoa/sohoa.toml")
    assert config.upload.max_rejections == 7
    assert config.pdf.attach_fields is True
    assert config.gpio.long_press_seconds == 1.5


def test_unit_pin_file_loaded_as_credential(tmp_path):
    root = tmp_path / "root"
    unit_pin = tmp_path / "unit-pin"
    unit_pin.write_text("135790\n", encoding="utf-8")

    result = provision(root, write_answers(tmp_path, unit_key_id="02", unit_token_label="UNIT-TOKEN", unit_pin_file=str(unit_pin)))

    assert result.returncode == 0, result.stderr
    assert mode(root / "etc/sohoa/credentials/unit-token-pin") == 0o600
    drop_in = (root / "etc/systemd/system/sohoa.service.d/credentials.conf").read_text(encoding="utf-8")
    assert drop_in == "[Service]\nLoadCredential=unit-token-pin:/etc/sohoa/credentials/unit-token-pin\n"
    config = load_config(root / "etc/sohoa/sohoa.toml")
    assert config.signing.unit_key_id == "02"
    assert config.signing.unit_token_label == "UNIT-TOKEN"
    assert config.signing.unit_pin_file == Path("unit-token-pin")


def test_answers_example_with_options_provisions(tmp_path):
    """The example answers file, with every optional setting switched on, provisions a valid box."""
    example = (REPO / "provisioning/templates/answers.toml.example").read_text(encoding="utf-8")
    start = example.index("# Optional settings")
    required, optional = example[:start], example[start:]
    optional = re.sub(r"^# (?=\[|[a-z_]+ = )", "", optional, flags=re.MULTILINE)
    secret = tmp_path / "secret"
    secret.write_text("secret\n", encoding="utf-8")
    text = re.sub(r'^(\w+_file = )"[^"]*"', lambda match: f'{match.group(1)}"{secret}"', required + optional, flags=re.MULTILINE)
    answers = tmp_path / "answers.toml"
    answers.write_text(text, encoding="utf-8")
    root = tmp_path / "root"

    result = provision(root, answers)

    assert result.returncode == 0, result.stderr
    config = load_config(root / "etc/sohoa/sohoa.toml")
    assert config.capture.hot_folder == Path("/srv/sohoa/inbox")
    assert set(config.profiles) == {"vanbang", "sotay"}
    assert [(button.pin, button.profile) for button in config.gpio.buttons] == [(5, "vanbang")]
    assert config.signing.unit_pin_file == Path("unit-token-pin")
    assert config.signing.rsa_padding == "pkcs1v15"
    assert (root / "etc/systemd/system/sohoa.service.d/hot-folder.conf").is_file()
