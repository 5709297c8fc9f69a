"""Probable-duplicate detection: the rules on a real journal, the panel signal on gpiozero's
MockFactory, and the whole box scanning the same paper twice."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPin

from sohoa import panel as panel_module
from sohoa.app import build_daemon
from sohoa.config import GpioConfig
from sohoa.duplicates import (
    NEAR_IDENTICAL_SIMILARITY,
    REASON_SAME_NUMBER,
    REASON_SAME_NUMBER_DIFFERENT_TEXT,
    REASON_SAME_TEXT,
    duplicate_key,
    shingles,
    similarity,
)
from sohoa.journal import Journal
from sohoa.panel import Panel
from sohoa.search import fold
from sohoa.testbed.demo import build_testbed, load_feeder, press_button, sample_pages, wait_for_state
from sohoa.testbed.mosquitto import MessageRecorder
from sohoa.testbed.search import pipeline_config, recognize_text, sample_text, text_pipeline

JOB_TIMEOUT = 600
TIMEOUT = 5.0
BUTTON, GREEN, RED, BUZZER = 17, 22, 27, 5


@pytest.fixture
def journal(tmp_path):
    journal = Journal(tmp_path / "data" / "journal.sqlite")
    yield journal
    journal.close()


@pytest.fixture
def pipeline(tmp_path, journal):
    return text_pipeline(pipeline_config(tmp_path / "data"), journal)


def field(value: str | None) -> dict:
    return {"value": value, "confidence": 0.95 if value else 0.0, "sure": value is not None}


def without_number(pages: list[str]) -> list[str]:
    """Return the pages without the "Số: ..." line, as when OCR misses the document number."""
    return ["\n".join(line for line in page.splitlines() if not line.startswith("Số:")) for page in pages]


def with_ocr_errors(pages: list[str], replacements: dict[str, str]) -> list[str]:
    """Return the pages with a few words misread, each replaced once."""
    changed = []
    for page in pages:
        for wrong, right in replacements.items():
            page = page.replace(wrong, right, 1)
        changed.append(page)
    return changed


# The rules


def test_duplicate_key_normalizes_parts():
    fields = {"CodeNumber": field("0123"), "CodeNotation": field("QĐ - SGDĐT"), "IssuedDate": field("2024-01-15")}
    same = {"CodeNumber": field("123"), "CodeNotation": field("qđ-sgdđt"), "IssuedDate": field("2024-01-15")}

    assert duplicate_key(fields) == "123|qd-sgddt|2024-01-15"
    assert duplicate_key(same) == duplicate_key(fields)


def test_duplicate_key_needs_all_parts():
    assert duplicate_key({"CodeNumber": field("123"), "CodeNotation": field("QĐ-SGDĐT"), "IssuedDate": field(None)}) is None
    assert duplicate_key({"CodeNumber": field("123"), "IssuedDate": field("2024-01-15")}) is None


def test_similarity_of_texts():
    decision = shingles(fold("\n".join(sample_text("quyet-dinh"))))
    licence = shingles(fold("\n".join(sample_text("giay-phep"))))

    assert similarity(decision, decision) == 1.0
    assert similarity(decision, licence) < 0.3
    assert similarity(shingles("quyet dinh so 1"), decision) is None


def test_misread_words_stay_near_identical():
    pages = sample_text("quyet-dinh")
    misread = with_ocr_errors(pages, {"phổ thông": "phỗ thông", "Căn cứ": "Căn cú", "tỉnh": "tinh", "nhiệm vụ": "nhiêm vụ"})

    score = similarity(shingles(fold("\n".join(pages))), shingles(fold("\n".join(misread))))

    assert score is not None
    assert score >= NEAR_IDENTICAL_SIMILARITY


# On the journal, through the recognize step


def test_same_paper_twice_marked(journal, pipeline):
    first = recognize_text(pipeline, sample_text("quyet-dinh"))
    recognize_text(pipeline, sample_text("giay-phep"))
    second = recognize_text(pipeline, sample_text("quyet-dinh"))

    assert first.duplicate_of is None
    assert second.duplicate_of == first.id
    assert second.duplicate_reason == REASON_SAME_NUMBER
    assert [job.id for job in journal.jobs_in("recognized")].count(second.id) == 1
    assert journal.state_counts()["recognized"] == 3


def test_third_copy_points_to_first(pipeline):
    first = recognize_text(pipeline, sample_text("quyet-dinh"))
    recognize_text(pipeline, sample_text("quyet-dinh"))
    third = recognize_text(pipeline, sample_text("quyet-dinh"))

    assert third.duplicate_of == first.id


def test_corrected_rescan_flagged_not_merged(journal, pipeline):
    original = sample_text("quyet-dinh")
    header = "\n".join(original[0].splitlines()[:9])
    corrected_body = "\n".join(sample_text("giay-phep")[0].splitlines()[9:])
    first = recognize_text(pipeline, original)

    corrected = recognize_text(pipeline, [header + "\n" + corrected_body])

    assert corrected.fields["CodeNumber"]["value"] == "123"
    assert corrected.duplicate_of == first.id
    assert corrected.duplicate_reason == REASON_SAME_NUMBER_DIFFERENT_TEXT
    assert {job.id for job in journal.jobs_in("recognized")} == {first.id, corrected.id}


def test_unnumbered_copy_matched_by_text(pipeline):
    first = recognize_text(pipeline, sample_text("ban-sao-bang"))
    misread = with_ocr_errors(without_number(sample_text("ban-sao-bang")), {"Giới tính": "Giói tính", "Xếp loại": "Xếp loai"})

    second = recognize_text(pipeline, misread)

    assert second.fields["CodeNumber"]["value"] is None
    assert second.duplicate_of == first.id
    assert second.duplicate_reason == REASON_SAME_TEXT


def test_unnumbered_other_document_not_marked(pipeline):
    recognize_text(pipeline, sample_text("quyet-dinh"))

    licence = recognize_text(pipeline, without_number(sample_text("giay-phep")))

    assert licence.duplicate_of is None


def test_same_form_other_owner_not_marked(pipeline):
    first = recognize_text(pipeline, without_number(sample_text("ban-sao-bang")))
    other_owner = with_ocr_errors(
        without_number(sample_text("ban-sao-bang")),
        {"Lê Thị Thu Trang": "Võ Văn Khánh", "049306001234": "049206004321", "14/03/2006": "02/09/2006"},
    )

    second = recognize_text(pipeline, other_owner)

    assert first.fields["OwnerIdentity"]["value"] == "049306001234"
    assert second.fields["OwnerIdentity"]["value"] == "049206004321"
    assert second.duplicate_of is None


def test_other_number_same_text_not_marked(pipeline):
    recognize_text(pipeline, sample_text("quyet-dinh"))
    renumbered = with_ocr_errors(sample_text("quyet-dinh"), {"Số: 123/QĐ-SGDĐT": "Số: 124/QĐ-SGDĐT"})

    second = recognize_text(pipeline, renumbered)

    assert second.fields["CodeNumber"]["value"] == "124"
    assert second.duplicate_of is None


def test_upload_metadata_names_original(journal, pipeline):
    first = recognize_text(pipeline, sample_text("quyet-dinh"))
    journal.update_job(first.id, doc_code="H31.01_QD_000001_V1")
    second = recognize_text(pipeline, sample_text("quyet-dinh"))
    second = journal.update_job(second.id, doc_code="H31.01_QD_000002_V1")

    metadata = pipeline.upload_metadata(second)

    assert metadata["x_duplicate_of"] == {"DocCode": "H31.01_QD_000001_V1", "job_id": first.id, "reason": REASON_SAME_NUMBER}
    assert "x_duplicate_of" not in pipeline.upload_metadata(journal.get_job(first.id))


# The panel signal


class NotifyingMockPin(MockPin):
    """A MockPin that wakes up the tests waiting in wait_for_states on every change."""

    changed = threading.Condition()

    def _change_state(self, value: bool) -> bool:
        with self.changed:
            result = super()._change_state(value)
            self.changed.notify_all()
        return result


def wait_for_states(pin: MockPin, predicate: Callable[[list[bool]], bool]) -> list[bool]:
    def history() -> list[bool]:
        return [entry.state for entry in pin.states]

    with NotifyingMockPin.changed:
        matched = NotifyingMockPin.changed.wait_for(lambda: predicate(history()), TIMEOUT)
    assert matched, f"pin {pin} states within {TIMEOUT} s: {history()}"
    return history()


@pytest.fixture
def factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockFactory]:
    for name in ("DUPLICATE_BEEP_SECONDS", "DUPLICATE_BEEP_PAUSE_SECONDS", "DUPLICATE_FLASH_SECONDS"):
        monkeypatch.setattr(panel_module, name, 0.01)
    previous = Device.pin_factory
    mock_factory = MockFactory(pin_class=NotifyingMockPin)
    Device.pin_factory = mock_factory
    yield mock_factory
    mock_factory.reset()
    Device.pin_factory = previous


@pytest.fixture
def front_panel(factory: MockFactory) -> Iterator[Panel]:
    front = Panel(GpioConfig(button_pin=BUTTON, green_led_pin=GREEN, red_led_pin=RED, buzzer_pin=BUZZER), lambda: None)
    yield front
    front.close()


def test_duplicate_signal_beeps_twice(front_panel: Panel, factory: MockFactory):
    front_panel.signal_duplicate()

    states = wait_for_states(factory.pin(BUZZER), lambda states: len(states) >= 5)
    assert states == [False, True, False, True, False]


def test_duplicate_signal_flashes_red(front_panel: Panel, factory: MockFactory):
    front_panel.show("busy")
    factory.pin(RED).clear_states()

    front_panel.signal_duplicate()

    states = wait_for_states(factory.pin(RED), lambda states: len(states) >= 5)
    assert states == [False, True, False, True, False]


def test_duplicate_signal_keeps_error_led(front_panel: Panel, factory: MockFactory):
    front_panel.show("error")
    factory.pin(RED).clear_states()

    front_panel.signal_duplicate()

    wait_for_states(factory.pin(BUZZER), lambda states: len(states) >= 5)
    assert [entry.state for entry in factory.pin(RED).states] == [True]


# The whole box


def test_same_paper_scanned_twice(tmp_path):
    with build_testbed(tmp_path / "bed") as bed:
        recorder = MessageRecorder(bed.broker.host, bed.broker.port, "sohoa/demo/box-01/event")
        daemon = build_daemon(bed.config())
        daemon.start()
        try:
            assert recorder.wait_subscribed(10)
            press_button(daemon)
            state = wait_for_state(daemon, lambda s: s["totals"]["documents_uploaded"] >= 1 or s["state"] == "alert", JOB_TIMEOUT)
            assert state is not None, "the first scan did not reach the archive in time"
            assert state["state"] != "alert", state

            load_feeder(bed.feeder_dir, sample_pages())
            press_button(daemon)
            state = wait_for_state(daemon, lambda s: s["totals"]["documents_uploaded"] >= 2 or s["state"] == "alert", JOB_TIMEOUT)
            assert state is not None, "the second scan did not reach the archive in time"
            assert state["state"] != "alert", state

            event = recorder.wait_for(lambda m: json.loads(m.payload).get("event") == "probable_duplicate", timeout=10)
        finally:
            daemon.stop()
            recorder.stop()

        journal = Journal(bed.config().journal_path)
        try:
            first, second = journal.jobs_in("uploaded")
        finally:
            journal.close()
        assert first.duplicate_of is None
        assert second.duplicate_of == first.id
        assert second.duplicate_reason == REASON_SAME_NUMBER
        assert first.doc_code != second.doc_code

        payload = json.loads(event.payload)
        assert payload["job_id"] == second.id
        assert payload["doc_code"] == second.doc_code
        assert payload["duplicate_of_job_id"] == first.id
        assert payload["duplicate_of_doc_code"] == first.doc_code
        assert payload["reason"] == REASON_SAME_NUMBER

        records = {record["DocCode"]: record for record in bed.receiver.records()}
        assert set(records) == {first.doc_code, second.doc_code}
        assert records[second.doc_code]["metadata"]["x_duplicate_of"]["DocCode"] == first.doc_code
        assert "x_duplicate_of" not in records[first.doc_code]["metadata"]
