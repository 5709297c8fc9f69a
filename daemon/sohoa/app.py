"""Assembly of the daemon from its configuration."""

from __future__ import annotations

import logging
from functools import partial

from sohoa.config import Config
from sohoa.daemon import Daemon
from sohoa.journal import Journal
from sohoa.pipeline import Pipeline

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

    config.spool_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(config.journal_path)
    reporter = StatusReporter(config.mqtt, config.box) if with_reporter else None
    try:
        import sdnotify

        notifier = sdnotify.SystemdNotifier()
    except ImportError:  # pragma: no cover - sdnotify is a declared dependency
        notifier = None
    return Daemon(
        config,
        pipeline=build_pipeline(config, journal),
        journal=journal,
        reporter=reporter,
        panel_factory=Panel if with_panel else None,
        notifier=notifier,
    )
