"""Full-text search on a real SQLite journal, fed through the real recognize step."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

import pytest

from sohoa import cli
from sohoa import search as searchlib
from sohoa.errors import JournalError
from sohoa.journal import Journal
from sohoa.search import fold, rebuild_index, search, unindexed_jobs
from sohoa.testbed.search import pipeline_config, recognize_text, sample_text, text_pipeline



@pytest.fixture
def config(tmp_path):
    return pipeline_config(tmp_path / "data")


@pytest.fixture
def journal(config):
    journal = Journal(config.journal_path)
    yield journal
    journal.close()


@pytest.fixture
def pipeline(config, journal):
    return text_pipeline(config, journal)


@pytest.fixture
def documents(pipeline):
    """Three recognized sample documents: a decision, a licence and a diploma copy."""
    return {name: recognize_text(pipeline, sample_text(name)) for name in ("quyet-dinh", "giay-phep", "ban-sao-bang")}


def found(journal, query="", **filters) -> list[str]:
    return [result.job_id for result in search(journal, query, **filters)]


def check_index_integrity(journal) -> None:
    # FTS5 raises "database disk image is malformed" when the index and its content table disagree.
    journal.db.execute("INSERT INTO search_index(search_index, rank) VALUES ('integrity-check', 1)")


def test_fold_removes_diacritics():
    assert fold("Quyết Định") == "quyet dinh"
    assert fold("ĐÀO TẠO") == "dao tao"
    assert fold("đợt bổ sung") == "dot bo sung"
    assert fold("123/QĐ-SGDĐT") == "123/qd-sgddt"


def test_fold_decomposed_input():
    decomposed = "Quye\u0302\u0301t đi\u0323nh"  # "Quyết định" in NFD, as some keyboards type it
    assert fold(decomposed) == "quyet dinh"


@pytest.mark.parametrize("query", ["quyet dinh", "QUYẾT ĐỊNH", "Quyết định", "quyêt đinh", "QUYET DINH"])
def test_search_ignores_diacritics_and_case(journal, documents, query):
    assert documents["quyet-dinh"].id in found(journal, query)


def test_search_requires_every_word(journal, documents):
    assert found(journal, "dạy thêm học thêm") == [documents["giay-phep"].id]
    assert found(journal, "day them dot bo sung") == []


def test_search_prefix_word(journal, documents):
    assert found(journal, "thu trang") == [documents["ban-sao-bang"].id]
    assert found(journal, "mi*") == [documents["giay-phep"].id]
    assert sorted(found(journal, "tran*")) == sorted([documents["giay-phep"].id, documents["ban-sao-bang"].id])


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("123/QĐ-SGDĐT", "quyet-dinh"),
        ("123/qd-sgddt", "quyet-dinh"),
        ("45/GP-SGDĐT", "giay-phep"),
        ("15/01/2024", "quyet-dinh"),
        ("2024-02-12", "giay-phep"),
        ("12/2/2024", "giay-phep"),
        ("049306001234", "ban-sao-bang"),
        ("Lê Thị Thu Trang", "ban-sao-bang"),
        ("le thi thu trang", "ban-sao-bang"),
    ],
)
def test_search_finds_fields(journal, documents, query, name):
    assert found(journal, query)[0] == documents[name].id


def test_search_by_doc_code_and_job_id(journal, documents):
    job = journal.update_job(documents["quyet-dinh"].id, doc_code="H31.01_QĐ_000002_V1")

    assert found(journal, "H31.01_QĐ_000002_V1") == [job.id]
    assert found(journal, "h31.01_qđ_000002_v1") == [job.id]
    assert found(journal, job.id) == [job.id]


def test_search_query_syntax_is_literal(journal, documents):
    for query in ['"', "AND OR NOT", "(quyet", "dinh)", "NEAR(a b)", "-", "col:quyet", "*"]:
        search(journal, query)

    assert documents["quyet-dinh"].id in found(journal, "(quyết")


def test_filter_by_type(journal, documents):
    decision = documents["quyet-dinh"].id
    assert found(journal, document_type="QĐ") == [decision]
    assert found(journal, document_type="qd") == [decision]
    assert found(journal, document_type="quyết định") == [decision]
    assert found(journal, "sở giáo dục", document_type="Giấy phép") == [documents["giay-phep"].id]


def test_filter_by_issue_date(journal, documents):
    in_february = found(journal, issued_from=date(2024, 2, 1), issued_to=date(2024, 2, 29))
    assert in_february == [documents["giay-phep"].id]

    from_first_day = found(journal, "giáo dục", issued_from=date(2024, 1, 15))
    assert len(from_first_day) == 3
    assert found(journal, issued_to=date(2024, 1, 14)) == []


def test_result_shows_state_and_receipt(journal, documents):
    job_id = documents["quyet-dinh"].id
    [queued] = search(journal, "123/QĐ-SGDĐT")
    assert queued.state == "queued"
    assert queued.type_name == "Quyết định"
    assert queued.number_notation == "123/QĐ-SGDĐT"
    assert queued.issued_date == "2024-01-15"
    assert queued.subject.startswith("Về việc công nhận tốt nghiệp")
    assert queued.archive_id is None

    journal.set_state(job_id, "signed")
    assert search(journal, "123/QĐ-SGDĐT")[0].state == "signed"

    receipt = {"DocCode": "H31.01_QD_000001_V1", "sha256": "ab" * 32, "archive_id": "arch-1", "stored_at": "2026-12-04T21:00:00+00:00"}
    journal.set_state(job_id, "uploaded", receipt=receipt)
    [uploaded] = search(journal, "123/QĐ-SGDĐT")
    assert uploaded.state == "uploaded"
    assert uploaded.archive_id == "arch-1"
    assert uploaded.receipt == receipt


def test_index_written_with_recognized_state(journal, pipeline, monkeypatch):
    def fail_after_indexing(db, job_id, fields, text):
        searchlib.index_document(db, job_id, fields, text)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr("sohoa.pipeline.index_document", fail_after_indexing)
    with pytest.raises(JournalError, match="disk I/O error"):
        recognize_text(pipeline, sample_text("giay-phep"))

    [job] = journal.jobs_in("captured")
    assert found(journal, "giay phep") == []
    assert journal.db["search_documents"].count == 0

    monkeypatch.undo()
    recognized = pipeline.recognize(job)
    assert recognized.state == "recognized"
    assert found(journal, "giay phep") == [job.id]
    check_index_integrity(journal)


def test_recognize_again_indexes_once(journal, pipeline):
    job = recognize_text(pipeline, sample_text("giay-phep"))
    journal.set_state(job.id, "captured")

    pipeline.recognize(journal.get_job(job.id))

    assert journal.db["search_documents"].count == 1
    assert found(journal, "giay phep") == [job.id]
    check_index_integrity(journal)


def test_rebuild_after_journal_replaced(config, journal, documents):
    # A copy of the journal as a version without search would have written it.
    journal_path = config.journal_path
    restored = journal_path.with_name("restored.sqlite")
    with sqlite3.connect(restored) as old_copy:
        journal.db.conn.backup(old_copy)
        old_copy.executescript(
            "DROP TABLE search_index; DROP TABLE search_documents;"
            "ALTER TABLE jobs DROP COLUMN duplicate_of; ALTER TABLE jobs DROP COLUMN duplicate_reason;"
        )
    old_copy.close()
    journal.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{journal_path}{suffix}").unlink(missing_ok=True)
    restored.replace(journal_path)

    journal = Journal(journal_path)
    try:
        assert found(journal, "quyet dinh") == []
        assert sorted(unindexed_jobs(journal)) == sorted(job.id for job in documents.values())

        report = rebuild_index(journal)

        assert report.documents == 3
        assert report.incomplete == {}
        assert found(journal, "quyet dinh") == [documents["quyet-dinh"].id]
        assert found(journal, "049306001234") == [documents["ban-sao-bang"].id]
        assert unindexed_jobs(journal) == []
        check_index_integrity(journal)
    finally:
        journal.close()


def test_rebuild_reports_missing_ocr_file(journal, documents):
    licence = documents["giay-phep"]
    assert found(journal, "08/11/1985") == [licence.id]  # the owner's birth date, only in the body text
    Path(journal.pages(licence.id)[0].ocr_path).unlink()

    report = rebuild_index(journal)

    assert report.incomplete == {licence.id: [1]}
    assert found(journal, "45/GP-SGDĐT") == [licence.id]
    assert found(journal, "08/11/1985") == []


def test_dropped_fts_table_rebuilt_on_open(config, documents):
    with sqlite3.connect(config.journal_path) as connection:
        connection.execute("DROP TABLE search_index")

    journal = Journal(config.journal_path)
    try:
        assert found(journal, "quyet dinh") == [documents["quyet-dinh"].id]
        check_index_integrity(journal)
    finally:
        journal.close()


def write_config_file(config, path: Path) -> Path:
    path.write_text(
        "\n".join(
            [
                "[box]",
                'site = "test"',
                'device = "box-01"',
                'unit = "Sở Giáo dục và Đào tạo"',
                'operator = "Nguyễn Văn An"',
                'agency_code = "H31.01"',
                f'data_dir = "{config.box.data_dir}"',
                "[scanner]",
                'device = "pnm:0"',
                "[signing]",
                'pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so"',
                'token_label = "unused"',
                'key_id = "01"',
                "[upload]",
                'url = "http://127.0.0.1:9"',
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return path


def test_command_prints_json(config, documents, tmp_path, capsys):
    config_path = write_config_file(config, tmp_path / "sohoa.toml")

    status = cli.main(["--config", str(config_path), "--lang", "en", "search", "quyet dinh", "--format", "json"])

    assert status == 0
    output = json.loads(capsys.readouterr().out)
    assert [result["job_id"] for result in output["results"]] == [documents["quyet-dinh"].id]
    assert output["results"][0]["state"] == "queued"
    assert output["unindexed"] == []


def test_command_prints_table(config, documents, tmp_path, capsys):
    config_path = write_config_file(config, tmp_path / "sohoa.toml")

    status = cli.main(["--config", str(config_path), "search", "giay phep", "--type", "GP", "--from", "01/02/2024"])

    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert documents["giay-phep"].id in lines[1]
    assert "45/GP-SGDĐT" in lines[1]


def test_command_rebuild(config, documents, tmp_path, capsys):
    config_path = write_config_file(config, tmp_path / "sohoa.toml")

    status = cli.main(["--config", str(config_path), "--lang", "en", "search", "--rebuild"])

    assert status == 0
    assert "3 documents" in capsys.readouterr().out


def test_command_rejects_bad_date(config, tmp_path, capsys):
    config_path = write_config_file(config, tmp_path / "sohoa.toml")

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--config", str(config_path), "--lang", "en", "search", "x", "--from", "2024-13-01"])

    assert exit_info.value.code == 2
    assert "2024-13-01" in capsys.readouterr().err
