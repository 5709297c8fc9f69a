import sqlite3

import pytest

from sohoa.errors import JournalError
from sohoa.journal import Journal


@pytest.fixture
def journal(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    yield journal
    journal.close()


def test_journal_uses_wal_and_full_sync(journal):
    assert journal.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal.db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_job_lifecycle_recorded(journal, tmp_path):
    job = journal.create_job()
    assert job.state == "scanning"
    journal.add_page(job.id, 1, tmp_path / "p1.png", "ab" * 32, 100, 200, 300)
    journal.add_page(job.id, 2, tmp_path / "p2.png", "cd" * 32, 100, 200, 300)
    job = journal.set_state(job.id, "captured")
    assert job.page_count == 2
    assert [page.seq for page in journal.pages(job.id)] == [1, 2]
    assert journal.state_counts()["captured"] == 1


def test_fields_round_trip_unicode(journal):
    job = journal.create_job()
    journal.update_job(job.id, fields={"Subject": {"value": "Về việc công nhận", "confidence": 0.9, "sure": True}})
    assert journal.get_job(job.id).fields["Subject"]["value"] == "Về việc công nhận"


def test_sequence_survives_reopen(tmp_path):
    first = Journal(tmp_path / "j.sqlite")
    assert first.next_sequence("doc") == 1
    assert first.next_sequence("doc") == 2
    first.close()
    second = Journal(tmp_path / "j.sqlite")
    assert second.next_sequence("doc") == 3
    second.close()


def test_duplicate_page_rejected(journal, tmp_path):
    job = journal.create_job()
    journal.add_page(job.id, 1, tmp_path / "p1.png", "ab", 1, 1, 300)
    with pytest.raises(JournalError):
        journal.add_page(job.id, 1, tmp_path / "p1.png", "ab", 1, 1, 300)
    assert journal.get_job(job.id).page_count == 1


def test_unknown_job_is_error(journal):
    with pytest.raises(JournalError, match="not in the journal"):
        journal.get_job("missing")


def test_corrupt_database_is_journal_error(tmp_path):
    path = tmp_path / "j.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError, match="Cannot open the journal"):
        Journal(path)


def test_unknown_state_rejected(journal):
    job = journal.create_job()
    with pytest.raises(ValueError):
        journal.set_state(job.id, "teleported")
    assert sqlite3.sqlite_version
