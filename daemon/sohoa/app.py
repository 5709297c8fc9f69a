"""Assembly of the daemon from its configuration."""

from __future__ import annotations

import logging
from functools import partial

from sohoa.config import Config
from sohoa.daemon import Daemon
from sohoa.errors import JournalRebuiltError
from sohoa.i18n import N_
from sohoa.journal import Journal
from sohoa.pipeline import Pipeline
from sohoa.recovery import open_journal

log = logging.getLogger(__name__)


def build_pipeline(config: Config, journal: Journal) -> Pipeline:
    from sohoa.ocr import OcrEngine
    from sohoa.scanner import Scanner
    from sohoa.signing import TokenSigner
    from sohoa.upload import ArchiveClient

    return Pipeline(
        config,
        journal,
        scanner=Scanner(config.scanner),
        ocr=partial(OcrEngine.load, config.ocr.models_dir, config.ocr.threads),
        signer=TokenSigner(config.signing),
        archive=ArchiveClient(config.upload),
    )


def build_daemon(config: Config, *, with_panel: bool = True, with_reporter: bool = True) -> Daemon:
    """Create the daemon and everything it drives; nothing is started yet."""
    from sohoa.mqtt import StatusReporter
    from sohoa.panel import Panel

    journal, recovered = open_journal(config)
    reporter = StatusReporter(config.mqtt, config.box) if with_reporter else None
    try:
        import sdnotify

        notifier = sdnotify.SystemdNotifier()
    except ImportError:  # pragma: no cover - sdnotify is a declared dependency
        notifier = None
    daemon = Daemon(
        config,
        pipeline=build_pipeline(config, journal),
        journal=journal,
        reporter=reporter,
        panel_factory=Panel if with_panel else None,
        notifier=notifier,
    )
    if recovered.rebuilt and recovered.corrupt_copy is not None:
        daemon.raise_startup_alert(
            JournalRebuiltError(
                N_("The journal was damaged and has been rebuilt with {count} jobs; the damaged copy is {path}. Check the queue, then press the button to continue."),
                count=recovered.jobs_restored,
                path=recovered.corrupt_copy,
            )
        )
    elif recovered.rebuilt:
        daemon.raise_startup_alert(
            JournalRebuiltError(
                N_("The journal was missing and has been rebuilt with {count} jobs. Check the queue, then press the button to continue."),
                count=recovered.jobs_restored,
            )
        )
    return daemon
