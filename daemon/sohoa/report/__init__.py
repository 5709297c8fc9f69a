"""Progress toward the digitization plan: ``sohoa report``.

A box summarizes its journal into a :class:`BoxSummary`: counts per document
type and month, the plan, and the queued and failed jobs. :func:`aggregate`
turns any number of summaries into a :class:`Report`, and
:func:`write_report` renders it as a text table, CSV, XLSX or PDF. The fleet
monitor passes :func:`aggregate` the summaries that boxes publish over MQTT.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TextIO

from sohoa.errors import ReportError
from sohoa.i18n import N_, gettext as _
from sohoa.report.aggregate import CountRow, ProgressRow, Report, aggregate
from sohoa.report.collect import JobRecord, build_summary, read_jobs, summarize_jobs
from sohoa.report.summary import SUMMARY_TOPIC, BoxSummary, JobEntry, MonthCount, PlanSummary, Tally, YearCount

__all__ = [
    "FORMATS",
    "SUMMARY_TOPIC",
    "BoxSummary",
    "CountRow",
    "JobEntry",
    "JobRecord",
    "MonthCount",
    "PlanSummary",
    "ProgressRow",
    "Report",
    "Tally",
    "YearCount",
    "add_parser",
    "add_report_arguments",
    "aggregate",
    "build_summary",
    "default_output",
    "read_jobs",
    "summarize_jobs",
    "summary_topic",
    "write_report",
]

log = logging.getLogger(__name__)

FORMATS = ("table", "csv", "xlsx", "pdf", "json")
BINARY_FORMATS = ("xlsx", "pdf")


def summary_topic(prefix: str, site: str, device: str) -> str:
    """Return the MQTT topic of a box's retained summary."""
    return f"{prefix}/{site}/{device}/{SUMMARY_TOPIC}"


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(_("invalid date {value}; write it as YYYY-MM-DD").format(value=text)) from exc


def check_period(date_from: date | None, date_to: date | None) -> None:
    if date_from and date_to and date_from > date_to:
        raise ReportError(
            N_("The report period starts on {start}, after it ends on {end}; swap --from and --to."),
            start=date_from.isoformat(),
            end=date_to.isoformat(),
        )


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the period, format and output options, shared with the fleet monitor's report."""
    parser.add_argument("--from", dest="date_from", type=parse_date, metavar="DATE", help=_("first day of the period, YYYY-MM-DD"))
    parser.add_argument("--to", dest="date_to", type=parse_date, metavar="DATE", help=_("last day of the period, YYYY-MM-DD"))
    parser.add_argument("--year", type=int, help=_("plan year to compare against (default: the year in which the period ends)"))
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help=_("output format; json prints the summary that a box publishes (default: table)"),
    )
    parser.add_argument(
        "--output", metavar="FILE", help=_("file to write; default: standard output for text, a dated file name for xlsx and pdf")
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help=_("report the documents digitized per department, type and month, and progress against the plan")
    )
    add_report_arguments(parser)
    parser.set_defaults(func=run)


def default_output(fmt: str, name: str, today: date) -> Path:
    """Return the file name used for a binary format when no --output is given."""
    return Path(f"sohoa-report-{name}-{today.isoformat()}.{fmt}")


def write_report(report: Report, fmt: str, output: Path | None, name: str, stdout: TextIO | None = None) -> Path | None:
    """Render ``report`` in ``fmt`` to ``output``, or to ``stdout`` for a text format without one.

    Returns the path of the file written, or None when the report went to
    standard output. ``name`` goes into the default file name (a device or "fleet").
    """
    stdout = stdout or sys.stdout
    if fmt in BINARY_FORMATS:
        path = output or default_output(fmt, name, date.today())
        if fmt == "xlsx":
            from sohoa.report.xlsx import write_xlsx

            write_xlsx(report, path)
        else:
            from sohoa.report.pdf import write_pdf

            write_pdf(report, path)
        return path

    from sohoa.fsutil import write_atomic
    from sohoa.report.text import render_csv, render_table

    text = render_csv(report) if fmt == "csv" else render_table(report)
    if output is None:
        stdout.write(text)
        stdout.flush()
        return None
    write_atomic(output, text.encode("utf-8"))
    return output


def run(args: argparse.Namespace) -> int:
    from sohoa.cli import _load

    config = _load(args)
    check_period(args.date_from, args.date_to)
    output = Path(args.output) if args.output else None

    if not config.journal_path.exists():
        log.info("No journal at %s, so the report is empty", config.journal_path)
    summary = build_summary(config, args.date_from, args.date_to, now=datetime.now(timezone.utc))

    if args.format == "json":
        payload = summary.to_json()
        if output is None:
            sys.stdout.buffer.write(payload + b"\n")
            sys.stdout.flush()
        else:
            from sohoa.fsutil import write_atomic

            write_atomic(output, payload)
        return 0

    report = aggregate([summary], args.date_from, args.date_to, args.year)
    written = write_report(report, args.format, output, config.box.device)
    if written is not None:
        print(_("Report written to {path}").format(path=written))
    return 0
