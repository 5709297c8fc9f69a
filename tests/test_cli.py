"""Global options of the command line: accepted before or after the command name."""

from __future__ import annotations

import pytest

from sohoa.cli import main


@pytest.mark.parametrize(
    "argv_before, argv_after",
    [
        (["--lang", "en"], ["status"]),
        ([], ["status", "--lang", "en"]),
    ],
    ids=["before", "after"],
)
def test_global_options_either_side(tmp_path, capsys, argv_before, argv_after):
    missing = tmp_path / "missing.toml"

    status = main([*argv_before, *argv_after, "--config", str(missing)])

    assert status == 78
    assert f"Configuration file not found: {missing}" in capsys.readouterr().err


def test_option_before_command_survives(tmp_path, capsys):
    missing = tmp_path / "missing.toml"

    status = main(["--config", str(missing), "--lang", "vi", "status"])

    assert status == 78
    assert f"Không tìm thấy tệp cấu hình: {missing}" in capsys.readouterr().err
