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


def write_config(tmp_path):
    path = tmp_path / "box.toml"
    path.write_text(
        f"""
[box]
site = "test"
device = "box-01"
unit = "Sở Giáo dục và Đào tạo"
operator = "Nguyễn Văn An"
agency_code = "H31.01"
data_dir = "{tmp_path / 'data'}"

[scanner]
device = "pnm:0"

[signing]
pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "t"
key_id = "01"

[upload]
url = "http://127.0.0.1:8080"
""",
        encoding="utf-8",
    )
    return path


def add_failed_job(config_path, **columns) -> str:
    """Record one failed job with the error ``columns`` in the journal of the configuration at ``config_path`` and return its id."""
    from sohoa.config import load_config
    from sohoa.journal import Journal

    config = load_config(config_path)
    config.spool_dir.mkdir(parents=True)
    journal = Journal(config.journal_path, manifests_dir=config.spool_dir)
    try:
        job = journal.create_job()
        journal.set_state(job.id, "failed", **columns)
    finally:
        journal.close()
    return job.id


def test_status_shows_job_error_in_user_language(tmp_path, capsys):
    from sohoa.errors import JobFinding
    from sohoa.i18n import N_
    from sohoa.journal import error_columns

    config_path = write_config(tmp_path)
    error = JobFinding("page_lost", N_("Page files {pages} are missing or changed on disk. Scan these pages again."), pages=[2])
    job_id = add_failed_job(config_path, **error_columns(error))

    assert main(["--config", str(config_path), "--lang", "vi", "status"]) == 0
    vietnamese = capsys.readouterr().out
    assert main(["--config", str(config_path), "--lang", "en", "status"]) == 0
    english = capsys.readouterr().out

    assert f"{job_id} : page_lost Các tệp trang [2] bị mất hoặc đã bị thay đổi trên đĩa." in vietnamese
    assert "Page files [2] are missing or changed on disk." in english


def test_status_falls_back_to_logged_message(tmp_path, capsys):
    config_path = write_config(tmp_path)
    # A job recorded by an earlier version: English message, no error_detail.
    add_failed_job(config_path, error_code="page_lost", error_message="Page files [3] are missing or changed on disk")

    assert main(["--config", str(config_path), "--lang", "vi", "status"]) == 0

    assert "page_lost Page files [3] are missing or changed on disk" in capsys.readouterr().out
