from pathlib import Path

import pytest

from sohoa.config import load_config, parse_config, read_secret
from sohoa.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def minimal() -> dict:
    return {
        "box": {
            "site": "demo",
            "device": "box-01",
            "unit": "Sở Giáo dục và Đào tạo",
            "operator": "Nguyễn Văn An",
            "agency_code": "H31.01",
            "data_dir": "/tmp/sohoa",
        },
        "scanner": {"device": "pnm:0"},
        "signing": {"pkcs11_module": "/usr/lib/softhsm/libsofthsm2.so", "token_label": "t", "key_id": "0A"},
        "upload": {"url": "http://127.0.0.1:8080"},
    }


def test_example_config_is_valid():
    config = load_config(REPO / "provisioning" / "sohoa.toml.example")
    assert config.box.language == "vi"
    assert config.signing.key_id == "01"


def test_minimal_config_gets_defaults():
    config = parse_config(minimal())
    assert config.gpio.button_pin == 17
    assert config.signing.key_id == "0a"
    assert config.spool_dir == Path("/tmp/sohoa/spool")


def test_every_problem_listed_at_once():
    data = minimal()
    data["box"]["colour"] = "red"
    del data["box"]["operator"]
    data["scanner"]["resolution"] = "high"
    data["upload"]["url"] = "ftp://archive"
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source="box.toml")
    message = str(caught.value)
    assert "box.colour: unknown key" in message
    assert "box.operator: missing" in message
    assert "scanner.resolution" in message
    assert "upload.url" in message
    assert "box.toml" in message


@pytest.mark.parametrize("value", ["yes", "true", 1])
def test_switch_given_as_text_or_number_is_refused(value):
    # A quoted "yes" in TOML is a string; it must not silently turn a switch on.
    data = minimal()
    data["capture"] = {"separator_sheets": value}
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source="box.toml")
    assert "capture.separator_sheets" in str(caught.value)


def test_switch_given_as_boolean_is_accepted():
    data = minimal()
    data["capture"] = {"separator_sheets": False, "deskew": True}
    config = parse_config(data)
    assert config.capture.separator_sheets is False
    assert config.capture.deskew is True


def test_invalid_toml_names_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[box\nsite=", encoding="utf-8")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_config(path)


def test_missing_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_config_error_translated_for_users(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")
    assert "Configuration file not found" in str(caught.value)
    assert "Không tìm thấy tệp cấu hình" in caught.value.user_message()


def test_secret_from_credentials_directory(tmp_path, monkeypatch):
    (tmp_path / "token-pin").write_text("123456\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_secret(Path("token-pin"), None, "token PIN") == "123456"


def test_secret_from_environment(monkeypatch):
    monkeypatch.setenv("PIN_FOR_TEST", "999")
    assert read_secret(None, "PIN_FOR_TEST", "token PIN") == "999"


def test_secret_env_unset_is_error(monkeypatch):
    monkeypatch.delenv("PIN_FOR_TEST", raising=False)
    with pytest.raises(ConfigError, match="PIN_FOR_TEST"):
        read_secret(None, "PIN_FOR_TEST", "token PIN")


def test_secret_file_unreadable(tmp_path):
    with pytest.raises(ConfigError, match="credential file"):
        read_secret(tmp_path / "nope", None, "token PIN")


def test_profiles_and_buttons_load():
    data = minimal()
    data["profiles"] = {"bang": {"label": "Văn bằng", "type_code": "VB", "mode": "Color", "flatbed": False}}
    data["gpio"] = {"buttons": [{"pin": 5, "profile": "bang"}]}

    config = parse_config(data)

    assert config.profiles["bang"].type_code == "VB"
    assert config.gpio.buttons[0].profile == "bang"
    assert config.capture.separator_sheets is True


def test_button_with_unknown_profile_is_rejected():
    data = minimal()
    data["gpio"] = {"buttons": [{"pin": 5, "profile": "bang"}]}

    with pytest.raises(ConfigError, match=r"profile 'bang' has no \[profiles.bang\] section"):
        parse_config(data)


def test_shared_gpio_pin_is_rejected():
    data = minimal()
    data["profiles"] = {"bang": {"label": "Văn bằng"}}
    data["gpio"] = {"buttons": [{"pin": 17, "profile": "bang"}]}

    with pytest.raises(ConfigError, match=r"BCM pin 17 is used by button_pin and buttons\[0\]\.pin") as caught:
        parse_config(data)

    assert "Value error" not in str(caught.value)


def test_every_missing_profile_listed_at_once():
    data = minimal()
    data["gpio"] = {"buttons": [{"pin": 5, "profile": "bang"}]}
    data["capture"] = {"hot_folder_profile": "nope"}

    with pytest.raises(ConfigError) as caught:
        parse_config(data)

    assert "profile 'bang' has no [profiles.bang] section" in str(caught.value)
    assert "capture.hot_folder_profile: profile 'nope'" in str(caught.value)
