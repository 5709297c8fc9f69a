"""The progress report: counts from a real journal, the plan, every output format and fleet aggregation."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import tomllib
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import openpyxl
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sohoa import i18n
from sohoa.cli import main
from sohoa.config import Config, parse_config
from sohoa.errors import ConfigError, JournalError, ReportError
from sohoa.journal import Journal
from sohoa.report import BoxSummary, aggregate, build_summary, summary_topic, write_report
from sohoa.report import summary as summary_module
from sohoa.report.collect import job_type_code, read_jobs
from sohoa.report.summary import Tally
from sohoa.report.text import render_table
from sohoa.testbed.mosquitto import MessageRecorder, start_mosquitto

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPO / "provisioning" / "sohoa.toml.example"
NOW = datetime(2026, 12, 4, 9, 0, tzinfo=timezone.utc)

PLAN_TOML = """
[plan]
start_year = 2026
yearly_target_percent = 20
yearly_targets = { 2027 = 30 }
deadline = 2030-12-31
timezone = "Asia/Ho_Chi_Minh"
[plan.inventory]
"QĐ" = 100
VB = 50
GCN = 10
"""


@dataclass(frozen=True)
class JobSpec:
    created_at: str  # UTC
    state: str
    pages: int
    doc_code: str | None = None
    type_name: str | None = None
    error_code: str | None = None


# Scans in Asia/Ho_Chi_Minh (UTC+7). The VB scan at 2026-01-31T18:30Z is on
# 1 February there, so it belongs to February.
JOBS = (
    JobSpec("2025-11-15T02:00:00+00:00", "uploaded", 2, "H31.01_QĐ_000001_V1", "Quyết định"),
    JobSpec("2026-01-05T02:00:00+00:00", "uploaded", 3, "H31.01_QĐ_000002_V1", "Quyết định"),
    JobSpec("2026-01-20T02:00:00+00:00", "signed", 4, "H31.01_QĐ_000003_V1", "Quyết định"),
    JobSpec("2026-01-31T18:30:00+00:00", "uploaded", 1, "H31.01_VB_000004_V1", "Bằng tốt nghiệp"),
    JobSpec("2026-02-10T02:00:00+00:00", "uploaded", 2, "H31.01_VB_000005_V1", "Bằng tốt nghiệp"),
    JobSpec("2026-02-11T02:00:00+00:00", "built", 5, "H31.01_VB_000006_V1", "Bằng tốt nghiệp"),
    JobSpec("2026-03-03T02:00:00+00:00", "failed", 1, None, "Giấy chứng nhận", "ocr_failed"),
    JobSpec("2026-03-04T02:00:00+00:00", "captured", 2),
    JobSpec("2026-03-05T02:00:00+00:00", "uploaded", 1, "H31.01_CV_000009_V1", "Công văn"),
    JobSpec("2026-03-06T02:00:00+00:00", "interrupted", 1, None, "Quyết định"),
)


def config_text(data_dir: Path) -> str:
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    text = text.replace('data_dir = "/var/lib/sohoa"', f'data_dir = "{data_dir}"')
    return text.split("\n[plan]")[0] + PLAN_TOML


def make_config(data_dir: Path, **box_changes: str) -> Config:
    data = tomllib.loads(config_text(data_dir))
    data["box"].update(box_changes)
    return parse_config(data)


def add_jobs(journal: Journal, specs: tuple[JobSpec, ...], folder: Path) -> dict[JobSpec, str]:
    ids = {}
    for spec in specs:
        job = journal.create_job()
        for seq in range(1, spec.pages + 1):
            journal.add_page(job.id, seq, folder / f"{job.id}-{seq}.png", "ab" * 32, 2480, 3508, 300)
        fields = {"TypeName": {"value": spec.type_name, "confidence": 0.95, "sure": True}} if spec.type_name else {}
        journal.update_job(job.id, created_at=spec.created_at, doc_code=spec.doc_code, fields=fields)
        journal.set_state(job.id, spec.state, error_code=spec.error_code, error_message="Model file broken" if spec.error_code else None)
        ids[spec] = job.id
    return ids


@dataclass
class Box:
    config_path: Path
    config: Config
    journal: Journal
    ids: dict[JobSpec, str]


@pytest.fixture
def box(tmp_path):
    data_dir = tmp_path / "data"
    config_path = tmp_path / "sohoa.toml"
    config_path.write_text(config_text(data_dir), encoding="utf-8")
    journal = Journal(data_dir / "journal.sqlite")
    ids = add_jobs(journal, JOBS, data_dir / "spool")
    yield Box(config_path, parse_config(tomllib.loads(config_path.read_text(encoding="utf-8"))), journal, ids)
    journal.close()


def months_of(summary: BoxSummary) -> dict[tuple[str, str], dict[str, Tally]]:
    return {
        (count.type_code, count.month): {
            "signed": count.signed,
            "uploaded": count.uploaded,
            "queued": count.queued,
            "failed": count.failed,
        }
        for count in summary.months
    }


def progress_of(report, type_code):
    return next(row for row in report.progress if row.type_code == type_code)


def run_cli(box: Box, *arguments: str) -> int:
    return main(["--config", str(box.config_path), *arguments])


# Counting


def test_type_code_from_doc_code_then_fields(box):
    records = {record.job_id: record for record in read_jobs(box.config.journal_path)}
    types = {spec: job_type_code(records[job_id].doc_code, records[job_id].type_name) for spec, job_id in box.ids.items()}
    assert types[JOBS[0]] == "QĐ"
    assert types[JOBS[8]] == "CV"
    assert types[JOBS[6]] == "GCN"  # no DocCode yet: from TypeName
    assert types[JOBS[7]] == "KHAC"  # no DocCode and no TypeName


def test_summary_counts_by_type_and_month(box):
    summary = build_summary(box.config, now=NOW)
    months = months_of(summary)

    assert set(months) == {
        ("QĐ", "2025-11"),
        ("QĐ", "2026-01"),
        ("VB", "2026-02"),
        ("GCN", "2026-03"),
        ("KHAC", "2026-03"),
        ("CV", "2026-03"),
        ("QĐ", "2026-03"),
    }
    assert months[("QĐ", "2026-01")]["uploaded"] == Tally(1, 3)
    assert months[("QĐ", "2026-01")]["signed"] == Tally(1, 4)
    assert months[("VB", "2026-02")]["uploaded"] == Tally(2, 3)
    assert months[("VB", "2026-02")]["queued"] == Tally(1, 5)
    assert months[("GCN", "2026-03")]["failed"] == Tally(1, 1)
    assert months[("KHAC", "2026-03")]["queued"] == Tally(1, 2)
    assert months[("QĐ", "2026-03")]["queued"] == Tally(1, 1)
    assert summary.department == "Phòng Khảo thí và Quản lý chất lượng"


def test_progress_against_inventory_and_target(box):
    report = aggregate([build_summary(box.config, now=NOW)])
    assert report.year == 2026

    decisions = progress_of(report, "QĐ")
    assert decisions.inventory == 100
    assert decisions.digitized == Tally(3, 9)  # 2025 counts toward the inventory too
    assert decisions.uploaded == Tally(2, 5)
    assert decisions.percent_of_inventory == pytest.approx(3.0)
    assert decisions.year_target == 20
    assert decisions.year_digitized == Tally(2, 7)
    assert decisions.percent_of_year_target == pytest.approx(10.0)
    assert decisions.expected_percent == pytest.approx(20.0)

    diplomas = progress_of(report, "VB")
    assert diplomas.digitized == Tally(2, 3)
    assert diplomas.percent_of_inventory == pytest.approx(4.0)
    assert diplomas.year_target == 10
    assert diplomas.percent_of_year_target == pytest.approx(20.0)

    certificates = progress_of(report, "GCN")
    assert certificates.digitized == Tally(0, 0)
    assert certificates.year_target == 2
    assert certificates.percent_of_year_target == pytest.approx(0.0)

    letters = progress_of(report, "CV")  # digitized but not in the inventory
    assert letters.inventory is None
    assert letters.digitized == Tally(1, 1)
    assert letters.percent_of_inventory is None

    total = progress_of(report, None)
    assert total.inventory == 160
    assert total.digitized == Tally(6, 13)
    assert total.year_target == 32
    assert total.year_digitized.documents == 5
    assert total.percent_of_year_target == pytest.approx(100 * 5 / 32)


def test_year_with_its_own_target(box):
    report = aggregate([build_summary(box.config, now=NOW)], year=2027)
    decisions = progress_of(report, "QĐ")
    assert decisions.year_target == 30
    assert decisions.expected_percent == pytest.approx(50.0)
    assert decisions.year_digitized == Tally(0, 0)
    assert decisions.digitized == Tally(3, 9)


def test_queued_and_failed_listed(box):
    report = aggregate([build_summary(box.config, now=NOW)])
    queued = [(item.job.job_id, item.job.state, item.job.type_code) for item in report.queued]
    assert queued == [
        (box.ids[JOBS[5]], "built", "VB"),
        (box.ids[JOBS[7]], "captured", "KHAC"),
        (box.ids[JOBS[9]], "interrupted", "QĐ"),
    ]
    assert report.queued_total == 3
    assert [(item.job.job_id, item.job.error_code) for item in report.failed] == [(box.ids[JOBS[6]], "ocr_failed")]
    assert report.failed_total == 1
    assert report.failed[0].box == "sgddt-hanam/box-01"


def test_period_uses_local_days(box):
    february = build_summary(box.config, date(2026, 2, 1), date(2026, 2, 28), now=NOW)
    assert set(months_of(february)) == {("VB", "2026-02")}
    assert months_of(february)[("VB", "2026-02")]["uploaded"] == Tally(2, 3)

    january = build_summary(box.config, date(2026, 1, 1), date(2026, 1, 31), now=NOW)
    assert months_of(january)[("QĐ", "2026-01")]["uploaded"] == Tally(1, 3)
    assert ("VB", "2026-01") not in months_of(january)

    # Progress is cumulative up to the end of the period, whatever its start.
    report = aggregate([february], date(2026, 2, 1), date(2026, 2, 28))
    assert progress_of(report, "QĐ").digitized == Tally(3, 9)
    assert progress_of(report, "VB").digitized == Tally(2, 3)
    assert "CV" not in {row.type_code for row in report.progress}  # scanned in March, and not in the inventory
    assert report.period_from == "2026-02-01"
    assert report.period_to == "2026-02-28"


def test_empty_journal(tmp_path):
    config = make_config(tmp_path / "data")
    journal = Journal(tmp_path / "data" / "journal.sqlite")
    summary = build_summary(config, now=NOW)
    journal.close()
    report = aggregate([summary])

    assert report.counts == ()
    assert report.queued == ()
    assert report.failed == ()
    assert [row.type_code for row in report.progress] == ["GCN", "QĐ", "VB", None]
    assert all(row.digitized == Tally() for row in report.progress)
    assert progress_of(report, None).year_target == 32


def test_reads_beside_open_write_transaction(box):
    with box.journal.transaction() as db:
        db["jobs"].insert({"id": "uncommitted", "created_at": "2026-01-05T02:00:00+00:00", "updated_at": "x", "state": "uploaded"})
        summary = build_summary(box.config, now=NOW)  # would wait 30 s if the write lock blocked readers
    assert months_of(summary)[("QĐ", "2026-01")]["uploaded"] == Tally(1, 3)  # the uncommitted job is not seen
    assert "uncommitted" in {record.job_id for record in read_jobs(box.config.journal_path)}  # and is after commit


def test_corrupt_journal_reported(tmp_path, capsys):
    config_path = tmp_path / "sohoa.toml"
    config_path.write_text(config_text(tmp_path / "data"), encoding="utf-8")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "journal.sqlite").write_bytes(b"not a database" * 100)
    assert main(["--config", str(config_path), "report"]) == JournalError.exit_status
    assert "journal.sqlite" in capsys.readouterr().err


def test_every_format_without_plan_or_jobs(tmp_path):
    data = tomllib.loads(config_text(tmp_path / "data"))
    del data["plan"]
    report = aggregate([build_summary(parse_config(data), now=NOW)])
    assert report.progress == ()

    for fmt in ("table", "csv", "xlsx", "pdf"):
        assert write_report(report, fmt, tmp_path / f"empty.{fmt}", "box-01") == tmp_path / f"empty.{fmt}"
    assert "Chưa có kế hoạch và chưa có văn bản nào được số hóa." in (tmp_path / "empty.table").read_text(encoding="utf-8")
    assert "chưa khai báo số lượng tồn kho" in (tmp_path / "empty.table").read_text(encoding="utf-8")
    assert read_csv_sections((tmp_path / "empty.csv").read_text(encoding="utf-8-sig"))["Văn bản theo tháng quét"] == [
        ["Phòng", "Loại văn bản", "Tháng", "Đã ký, chờ tải lên", "Đã tải lên", "Văn bản đã số hóa", "Trang đã số hóa", "Đang chờ", "Bị lỗi"]
    ]
    assert openpyxl.load_workbook(tmp_path / "empty.xlsx")["Tiến độ"]._charts == []
    text = subprocess.run(["pdftotext", str(tmp_path / "empty.pdf"), "-"], capture_output=True, text=True, check=True, timeout=60).stdout
    assert "Không có văn bản nào bị lỗi." in text


def test_listed_jobs_capped_but_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(summary_module, "MAX_LISTED_JOBS", 3)
    config = make_config(tmp_path / "data")
    journal = Journal(tmp_path / "data" / "journal.sqlite")
    specs = tuple(JobSpec(f"2026-05-01T02:{minute:02d}:00+00:00", "failed", 1) for minute in range(5))
    ids = add_jobs(journal, specs, tmp_path / "spool")
    summary = build_summary(config, now=NOW)
    journal.close()

    assert summary.failed_total == 5
    assert [job.job_id for job in summary.failed] == [ids[spec] for spec in specs[:3]]  # the oldest first
    report = aggregate([summary])
    assert report.failed_total == 5
    assert "(chỉ liệt kê 3 văn bản đầu tiên)" in render_table(report)


# The summary a box publishes, and the fleet


def test_summary_json_round_trip(box):
    summary = build_summary(box.config, date(2026, 1, 1), None, now=NOW)
    payload = summary.to_json()
    assert "QĐ".encode() in payload  # UTF-8 as it is, no \u escapes
    assert BoxSummary.from_json(payload) == summary
    assert json.loads(payload)["schema"] == 1


@pytest.mark.parametrize(
    "change",
    [
        lambda data: "not json",
        lambda data: {**data, "schema": 99},
        lambda data: {key: value for key, value in data.items() if key != "months"},
        lambda data: {**data, "months": [{"type": "QĐ", "month": "2026-13", "signed": [0, 0], "uploaded": [0, 0], "queued": [0, 0], "failed": [0, 0]}]},
        lambda data: {**data, "months": [{"type": "QĐ", "month": "2026-01", "signed": [-1, 0], "uploaded": [0, 0], "queued": [0, 0], "failed": [0, 0]}]},
        lambda data: {**data, "timezone": "Mars/Olympus"},
        lambda data: [data],
    ],
    ids=["text", "schema", "no-months", "bad-month", "negative", "bad-zone", "array"],
)
def test_malformed_summary_rejected(box, change):
    data = json.loads(build_summary(box.config, now=NOW).to_json())
    changed = change(data)
    payload = changed if isinstance(changed, str) else json.dumps(changed)
    with pytest.raises(ReportError, match="Invalid box summary"):
        BoxSummary.from_json(payload)


def test_fleet_adds_boxes_of_one_department(box, tmp_path):
    first = build_summary(box.config, now=NOW)
    stale = build_summary(box.config, now=datetime(2026, 1, 1, tzinfo=timezone.utc))

    second_config = make_config(tmp_path / "second", device="box-02")
    second_journal = Journal(tmp_path / "second" / "journal.sqlite")
    add_jobs(second_journal, (JobSpec("2026-01-07T02:00:00+00:00", "uploaded", 6, "H31.01_QĐ_000001_V1"),), tmp_path)
    second = build_summary(second_config, now=NOW)
    second_journal.close()

    other_config = make_config(tmp_path / "other", device="box-09", department="Phòng Giáo dục Trung học")
    other_journal = Journal(tmp_path / "other" / "journal.sqlite")
    add_jobs(other_journal, (JobSpec("2026-01-08T02:00:00+00:00", "signed", 2, "H31.01_VB_000001_V1"),), tmp_path)
    other = build_summary(other_config, now=NOW)
    other_journal.close()

    report = aggregate([stale, first, second, other])

    assert report.boxes == ("sgddt-hanam/box-01", "sgddt-hanam/box-02", "sgddt-hanam/box-09")
    january = next(row for row in report.counts if row.type_code == "QĐ" and row.month == "2026-01" and row.department.startswith("Phòng Khảo"))
    assert january.uploaded == Tally(2, 9)
    assert january.signed == Tally(1, 4)

    decisions = next(row for row in report.progress if row.type_code == "QĐ" and row.department.startswith("Phòng Khảo"))
    assert decisions.inventory == 100  # shared by the department, not added per box
    assert decisions.digitized == Tally(4, 15)
    other_total = next(row for row in report.progress if row.type_code is None and row.department == "Phòng Giáo dục Trung học")
    assert other_total.digitized == Tally(1, 2)
    assert report.conflicting_plans == ()


def test_fleet_flags_conflicting_plans(box, tmp_path):
    first = build_summary(box.config, now=NOW)
    changed = tomllib.loads(config_text(tmp_path / "second"))
    changed["box"]["device"] = "box-02"
    changed["plan"]["inventory"]["QĐ"] = 500
    second = build_summary(parse_config(changed), now=datetime(2026, 12, 5, tzinfo=timezone.utc))

    report = aggregate([first, second])
    assert report.conflicting_plans == ("Phòng Khảo thí và Quản lý chất lượng",)
    assert progress_of(report, "QĐ").inventory == 500  # the newest summary's plan


def test_fleet_month_filter(box):
    summary = build_summary(box.config, now=NOW)
    report = aggregate([summary], date(2026, 2, 15), date(2026, 3, 1))
    assert {(row.type_code, row.month) for row in report.counts} == {
        ("VB", "2026-02"),
        ("GCN", "2026-03"),
        ("KHAC", "2026-03"),
        ("CV", "2026-03"),
        ("QĐ", "2026-03"),
    }


def test_summaries_travel_over_mqtt(box, tmp_path):
    second_config = make_config(tmp_path / "second", device="box-02")
    summaries = [build_summary(box.config, now=NOW), build_summary(second_config, now=NOW)]

    with start_mosquitto(tmp_path / "broker") as broker:
        publisher = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="report-publisher")
        publisher.connect(broker.host, broker.port)
        publisher.loop_start()
        try:
            for summary, config in zip(summaries, (box.config, second_config)):
                topic = summary_topic(config.mqtt.prefix, config.box.site, config.box.device)
                publisher.publish(topic, summary.to_json(), qos=1, retain=True).wait_for_publish(timeout=10)
        finally:
            publisher.disconnect()
            publisher.loop_stop()

        # A monitor that subscribes later still gets the retained summaries.
        with MessageRecorder(broker.host, broker.port, "sohoa/+/+/report") as recorder:
            recorder.wait_for(lambda message: message.topic.endswith("/box-02/report"), timeout=10)
            recorder.wait_for(lambda message: message.topic.endswith("/box-01/report"), timeout=10)
            received = [BoxSummary.from_json(message.payload) for message in recorder.messages]

    report = aggregate(received)
    assert report.boxes == ("sgddt-hanam/box-01", "sgddt-hanam/box-02")
    assert progress_of(report, "QĐ").digitized == Tally(3, 9)


# The command line


def test_cli_table_vietnamese_by_default(box, capsys):
    assert run_cli(box, "report") == 0
    output = capsys.readouterr().out
    assert "Báo cáo tiến độ số hóa" in output
    assert "Tiến độ so với kế hoạch năm 2026" in output
    assert "Tồn kho giấy" in output
    assert "Văn bản đang chờ xử lý trên thiết bị: 3" in output
    assert "Văn bản bị lỗi cần người xử lý: 1" in output
    assert "chờ ký số" in output  # the built job's state
    decisions = next(line for line in output.splitlines() if "  QĐ  " in line and "100" in line)
    assert decisions.split()[-9:] == ["100", "3", "9", "2", "3,0", "20,0", "20", "2", "10,0"]
    total = next(line for line in output.splitlines() if "Tất cả các loại" in line)
    assert total.split()[-9:] == ["160", "6", "13", "5", "3,8", "20,0", "32", "5", "15,6"]


def test_cli_table_english(box, capsys):
    assert run_cli(box, "--lang", "en", "report", "--from", "2026-02-01", "--to", "2026-02-28") == 0
    output = capsys.readouterr().out
    assert "Digitization progress report" in output
    assert "Period: 2026-02-01 to 2026-02-28" in output
    assert "Paper inventory" in output
    assert "from 2026, 20.0% of the inventory a year, deadline 2030-12-31." in output
    assert "2026-01" not in output.split("Documents by month of scan")[1].split("Documents still")[0]


def read_csv_sections(text: str) -> dict[str, list[list[str]]]:
    sections: dict[str, list[list[str]]] = {}
    rows = list(csv.reader(io.StringIO(text)))
    index = 0
    while index < len(rows):
        title = rows[index][0]
        end = rows.index([], index)
        sections[title] = rows[index + 1 : end]
        index = end + 1
    return sections


def test_cli_csv_with_bom_parses_back(box, tmp_path):
    output = tmp_path / "report.csv"
    assert run_cli(box, "report", "--format", "csv", "--output", str(output)) == 0
    raw = output.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")

    sections = read_csv_sections(raw.decode("utf-8-sig"))
    progress = sections["Tiến độ so với kế hoạch năm 2026"]
    assert progress[0][:3] == ["Phòng", "Loại văn bản", "Tồn kho giấy"]
    decisions = next(row for row in progress if row[1] == "QĐ")
    assert decisions[2:] == ["100", "3", "9", "2", "3.0", "20.0", "20", "2", "10.0"]
    months = sections["Văn bản theo tháng quét"]
    february = next(row for row in months if row[1] == "VB" and row[2] == "2026-02")
    assert february[3:] == ["0", "2", "2", "3", "1", "0"]
    assert len(sections["Văn bản đang chờ xử lý trên thiết bị: 3"]) == 4  # header and three jobs


def test_cli_xlsx_has_values_and_chart(box, tmp_path):
    output = tmp_path / "report.xlsx"
    assert run_cli(box, "report", "--format", "xlsx", "--output", str(output)) == 0

    workbook = openpyxl.load_workbook(output)
    assert workbook.sheetnames == ["Tiến độ", "Theo tháng", "Đang chờ", "Bị lỗi"]
    sheet = workbook["Tiến độ"]
    assert sheet["A1"].value == "Báo cáo tiến độ số hóa"
    rows = list(sheet.iter_rows(values_only=True))
    header_index = next(i for i, row in enumerate(rows) if row[0] == "Phòng")
    decisions = next(row for row in rows[header_index:] if row[1] == "QĐ")
    assert decisions[2:11] == (100, 3, 9, 2, 3.0, 20.0, 20, 2, 10.0)
    assert len(sheet._charts) == 1
    chart = sheet._charts[0]
    assert chart.tagname == "barChart"
    series_titles = [sheet[series.tx.strRef.f.split("!")[1].replace("$", "")].value for series in chart.series]
    assert series_titles == ["% tồn kho", "% kế hoạch đến hết năm 2026"]

    months = list(workbook["Theo tháng"].iter_rows(values_only=True))
    assert ("Phòng Khảo thí và Quản lý chất lượng", "VB", "2026-02", 0, 2, 2, 3, 1, 0) in months


def test_cli_pdf_text_is_vietnamese(box, tmp_path):
    output = tmp_path / "report.pdf"
    assert run_cli(box, "report", "--format", "pdf", "--output", str(output)) == 0
    assert output.read_bytes().startswith(b"%PDF-")

    text = subprocess.run(["pdftotext", "-layout", str(output), "-"], capture_output=True, text=True, check=True, timeout=60).stdout
    assert "Báo cáo tiến độ số hóa" in text
    assert "Tiến độ so với kế hoạch năm 2026" in text
    assert "Tồn kho giấy" in text
    assert "Tỷ lệ tồn kho đã số hóa và theo kế hoạch, đến hết năm 2026" in text
    assert "bị lỗi, cần người xử lý" in text


def test_cli_binary_default_file_name(box, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli(box, "report", "--format", "xlsx") == 0
    written = list(tmp_path.glob("sohoa-report-box-01-*.xlsx"))
    assert len(written) == 1
    assert "Đã ghi báo cáo vào" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.part"))


def test_cli_json_is_the_box_summary(box, capsys):
    assert run_cli(box, "report", "--format", "json", "--to", "2026-01-31") == 0
    summary = BoxSummary.from_json(capsys.readouterr().out)
    assert summary.period_to == "2026-01-31"
    assert {count.month for count in summary.months} == {"2025-11", "2026-01"}


def test_cli_without_journal_reports_empty(tmp_path, capsys):
    config_path = tmp_path / "sohoa.toml"
    config_path.write_text(config_text(tmp_path / "never-used"), encoding="utf-8")
    assert main(["--config", str(config_path), "report"]) == 0
    assert "Không có văn bản nào được quét trong kỳ này." in capsys.readouterr().out
    assert not (tmp_path / "never-used" / "journal.sqlite").exists()


def test_cli_rejects_reversed_period(box, capsys):
    assert run_cli(box, "report", "--from", "2026-03-01", "--to", "2026-02-01") == ReportError.exit_status
    assert "hãy đổi chỗ --from và --to" in capsys.readouterr().err


def test_cli_rejects_invalid_date(box, capsys):
    with pytest.raises(SystemExit) as raised:
        run_cli(box, "report", "--from", "2026-02-30")
    assert raised.value.code == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err


# Configuration


def test_example_config_has_plan():
    data = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    plan = parse_config(data).plan
    assert plan.start_year == 2026
    assert plan.inventory["QĐ"] > 0


def test_plan_defaults_keep_old_configs_valid(tmp_path):
    data = tomllib.loads(config_text(tmp_path))
    del data["plan"]
    plan = parse_config(data).plan
    assert plan.inventory == {}
    assert plan.yearly_target_percent == 20.0


@pytest.mark.parametrize(
    "plan, problem",
    [
        ({"inventory": {"QĐ": 10}}, "start_year"),
        ({"start_year": 2026, "inventory": {"QĐ": -1}}, "plan.inventory.QĐ"),
        ({"start_year": 2026, "inventory": {"quyết định": 1}}, "plan.inventory"),
        ({"timezone": "Asia/Nowhere"}, "plan.timezone"),
        ({"yearly_target_percent": 0}, "plan.yearly_target_percent"),
    ],
)
def test_invalid_plan_rejected(tmp_path, plan, problem):
    data = tomllib.loads(config_text(tmp_path))
    data["plan"] = plan
    with pytest.raises(ConfigError) as raised:
        parse_config(data)
    assert problem in str(raised.value)


def test_failed_job_message_in_user_language(tmp_path):
    from sohoa.errors import JobFinding
    from sohoa.i18n import N_
    from sohoa.journal import error_columns

    config = make_config(tmp_path / "data")
    journal = Journal(config.journal_path)
    job = journal.create_job()
    journal.update_job(job.id, created_at="2026-11-02T02:00:00+00:00")
    error = JobFinding("page_lost", N_("Page files {pages} are missing or changed on disk. Scan these pages again."), pages=[1])
    journal.set_state(job.id, "failed", **error_columns(error))
    journal.close()

    i18n.set_language("vi")
    try:
        vietnamese = aggregate([build_summary(config, now=NOW)]).failed[0].job.error_message
    finally:
        i18n.set_language("en")
    english = aggregate([build_summary(config, now=NOW)]).failed[0].job.error_message

    assert vietnamese.startswith("Các tệp trang [1] bị mất")
    assert english.startswith("Page files [1] are missing")


def test_journal_without_error_detail_column_reads(tmp_path):
    import sqlite3

    config = make_config(tmp_path / "data")
    journal = Journal(config.journal_path)
    job = journal.create_job()
    journal.update_job(job.id, created_at="2026-11-02T02:00:00+00:00")
    journal.set_state(job.id, "failed", error_code="ocr_failed", error_message="Model file broken")
    journal.close()
    with sqlite3.connect(config.journal_path) as connection:
        connection.execute("alter table jobs drop column error_detail")

    report = aggregate([build_summary(config, now=NOW)])

    assert report.failed[0].job.error_message == "Model file broken"
