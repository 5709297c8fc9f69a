"""The ``sohoa`` command."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

from sohoa import __version__
from sohoa.errors import SohoaError, user_message_from_detail
from sohoa.i18n import gettext as _, set_language

DEFAULT_CONFIG = Path("/etc/sohoa/sohoa.toml")
SUBCOMMAND_MODULES = ("sohoa.ocr.cli", "sohoa.receiver", "sohoa.doctor", "sohoa.search", "sohoa.report", "sohoa.monitor", "sohoa.verify", "sohoa.separator")
log = logging.getLogger("sohoa")


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("SOHOA_CONFIG") or DEFAULT_CONFIG)


def _load(args: argparse.Namespace):
    from sohoa.config import load_config

    config = load_config(_config_path(args))
    if not args.lang:
        set_language(os.environ.get("SOHOA_LANG") or config.box.language)
    return config


def cmd_run(args: argparse.Namespace) -> int:
    from sohoa.app import build_daemon

    config = _load(args)
    daemon = build_daemon(config)
    daemon.run_forever()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from sohoa.journal import Journal

    config = _load(args)
    journal = Journal(config.journal_path)
    counts = journal.state_counts()
    if args.format == "json":
        print(json.dumps({"jobs": counts, "totals": journal.totals()}, ensure_ascii=False, indent=2))
        return 0
    labels = {
        "scanning": _("scanning"),
        "interrupted": _("interrupted (waiting for the next press)"),
        "collecting": _("flatbed document open (waiting for more pages)"),
        "captured": _("waiting for text recognition"),
        "recognized": _("waiting for the PDF to be built"),
        "built": _("waiting for signature"),
        "signed": _("waiting for upload"),
        "uploaded": _("uploaded to the archive"),
        "failed": _("failed, needs a person"),
        "cancelled": _("cancelled by staff (pages kept)"),
    }
    print(_("Documents by state:"))
    for state, count in counts.items():
        print(f"  {labels[state]}: {count}")
    for job in journal.jobs_in("failed", "interrupted", "built"):
        if job.error_code:
            # Jobs recorded before error_detail existed only have the English message.
            message = user_message_from_detail(job.error_detail) or job.error_message or ""
            print(f"  {job.id} {job.doc_code or ''}: {job.error_code} {message}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sohoa.testbed.demo import run_demo

    return run_demo(Path(args.workdir), keep_running=args.keep_running)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sohoa", description=_("Digitize paper records: scan, recognize, sign, archive."))
    parser.add_argument("--version", action="version", version=f"sohoa {__version__}")
    _add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("run", help=_("run the daemon: the button starts a scan")).set_defaults(func=cmd_run)

    status = sub.add_parser("status", help=_("show the documents in the journal by state"))
    status.add_argument("--format", choices=["table", "json"], default="table")
    status.set_defaults(func=cmd_status)

    demo = sub.add_parser("demo", help=_("run the whole path on the sample pages with local test services"))
    demo.add_argument("--workdir", default="demo-data", help=_("folder for the demo's token, services and documents"))
    demo.add_argument("--keep-running", action="store_true", help=_("keep the daemon and services running after the demo"))
    demo.set_defaults(func=cmd_demo)

    # Subcommands that live beside the code they drive; each module has add_parser(subparsers).
    for module_name in SUBCOMMAND_MODULES:
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).add_parser(sub)
    # The global options also work after the command name (`sohoa sheets --lang en`).
    for subparser in sub.choices.values():
        _add_global_options(subparser, default=argparse.SUPPRESS)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, default: object = None) -> None:
    """Add --config, --lang and --verbose; a command's parser uses SUPPRESS so it keeps a value given before the command."""
    parser.add_argument("--config", default=default, help=_("configuration file (default: $SOHOA_CONFIG or /etc/sohoa/sohoa.toml)"))
    parser.add_argument("--lang", choices=["vi", "en"], default=default, help=_("language of messages (default: vi)"))
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=False if default is None else default, help=_("log debug messages")
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The language must be known before the parser's help texts are translated.
    lang = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--lang"), None)
    set_language(lang)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s",
    )
    # fontTools logs every table it prunes when the PDF fonts are subset.
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except SohoaError as exc:
        # The user reads the translated message below; the log keeps the English one for support.
        log.debug("%s (%s)", exc, exc.code)
        print(_("Error: {message}").format(message=exc.user_message()), file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
