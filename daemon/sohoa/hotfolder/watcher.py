"""Watch the hot folder with watchdog and report each file once it is complete.

A file is complete when one of these happens:

- watchdog reports a close after writing (``FileClosedEvent``, from inotify's
  ``IN_CLOSE_WRITE`` on Linux) and the file is not empty. An empty file
  closed after writing can be a client that creates the file first and
  writes it in a second session, so it waits like the next case;
- a file is renamed to a name that is not temporary, because clients that
  write under a temporary name rename it when they are done;
- its size and modification time stay unchanged for ``settle_seconds``. This
  covers platforms and file systems that report no close events, events lost
  when the inotify queue overflowed, and files that arrived while the daemon
  was stopped.

The folder is listed again every ``settle_seconds``, so a file is found even
when no event about it arrived. A file is reported again only after its size
or modification time changed. The daemon's importer is the last line of
defence against repeats: it imports each content once (see
:mod:`sohoa.hotfolder.ledger`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from sohoa.hotfolder.names import RESERVED_DIRS, classify, is_temporary_name

log = logging.getLogger(__name__)

# Maximum wait between two checks of the files that are settling.
MAX_TICK_SECONDS = 1.0


@dataclass(frozen=True)
class CompleteFile:
    """A file the watcher found complete: its path, its capture profile and what showed it was complete."""

    path: Path
    profile: str | None
    reason: str  # "closed", "renamed" or "settled"


@dataclass
class _Settling:
    profile: str | None
    signature: tuple[int, int]  # size in bytes, modification time in ns
    stable_since: float


class _EventForwarder(FileSystemEventHandler):
    """Puts watchdog's events on a queue, so that the observer's thread never waits on the watcher's work."""

    def __init__(self, events: queue.Queue) -> None:
        self._events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._events.put(event)


def _file_signature(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    return status.st_size, status.st_mtime_ns


class HotFolderWatcher:
    """Reports complete files in ``root`` to ``on_complete``, on the watcher's own thread.

    ``profiles`` are the configured capture profile names: a subfolder with one
    of these names gives its files that profile. ``default_profile`` is the
    profile of files directly in ``root``.
    """

    def __init__(
        self,
        root: Path,
        *,
        profiles: Collection[str],
        default_profile: str | None,
        settle_seconds: float,
        on_complete: Callable[[CompleteFile], None],
    ) -> None:
        self.root = Path(root)
        self._profiles = frozenset(profiles)
        self._default_profile = default_profile
        self._settle_seconds = settle_seconds
        self._on_complete = on_complete
        self._events: queue.Queue = queue.Queue()
        self._settling: dict[Path, _Settling] = {}
        # Files already reported, with the signature they had then.
        self._reported: dict[Path, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._observer = None
        self._thread: threading.Thread | None = None
        self._next_listing_at = 0.0
        # Subfolder names already reported as not matching a capture profile, so each is logged once.
        self._unknown_folders: set[str] = set()

    def start(self) -> None:
        """Start the observer and the watcher's thread; files already in the folder are found by the first listing."""
        observer = Observer()
        observer.schedule(_EventForwarder(self._events), str(self.root), recursive=True)
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._run, name="sohoa-hotfolder", daemon=True)
        self._thread.start()
        log.info("Watching the hot folder %s (settle time %.1f s)", self.root, self._settle_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                log.warning("The hot folder watcher did not stop within 10 s")

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # the watcher's thread

    def _run(self) -> None:
        tick = min(MAX_TICK_SECONDS, self._settle_seconds / 4)
        while not self._stop.is_set():
            try:
                self._handle(self._events.get(timeout=tick))
                while True:
                    self._handle(self._events.get_nowait())
            except queue.Empty:
                pass
            try:
                now = time.monotonic()
                if now >= self._next_listing_at:
                    self._next_listing_at = now + self._settle_seconds
                    self._list_folder()
                self._check_settling(now)
            except Exception:
                # The watcher must outlive any one bad file or folder; the next round tries again.
                log.exception("Checking the hot folder %s failed", self.root)

    def _handle(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileMovedEvent):
            self._forget(Path(os.fsdecode(event.src_path)))
            self._report_now(Path(os.fsdecode(event.dest_path)), "renamed")
        elif isinstance(event, FileClosedEvent):
            self._report_now(Path(os.fsdecode(event.src_path)), "closed")
        elif isinstance(event, (FileCreatedEvent, FileModifiedEvent)):
            self._settle(Path(os.fsdecode(event.src_path)))
        elif isinstance(event, FileDeletedEvent):
            self._forget(Path(os.fsdecode(event.src_path)))
        elif isinstance(event, (DirCreatedEvent, DirMovedEvent)):
            # A folder moved in brings files that produce no event of their own.
            self._next_listing_at = 0.0

    def _classify(self, path: Path) -> tuple[bool, str | None]:
        return classify(path, self.root, self._profiles, self._default_profile)

    def _report_now(self, path: Path, reason: str) -> None:
        candidate, profile = self._classify(path)
        signature = _file_signature(path)
        if not candidate or signature is None:
            return
        if signature[0] == 0:
            self._settle(path)
            return
        self._report(path, profile, signature, reason)

    def _settle(self, path: Path) -> None:
        candidate, profile = self._classify(path)
        signature = _file_signature(path)
        if not candidate or signature is None:
            return
        current = self._settling.get(path)
        if current is None or current.signature != signature:
            self._settling[path] = _Settling(profile, signature, time.monotonic())

    def _check_settling(self, now: float) -> None:
        for path, settling in list(self._settling.items()):
            signature = _file_signature(path)
            if signature is None:
                del self._settling[path]
            elif signature != settling.signature:
                self._settling[path] = _Settling(settling.profile, signature, now)
            elif now - settling.stable_since >= self._settle_seconds:
                self._report(path, settling.profile, signature, "settled")

    def _report(self, path: Path, profile: str | None, signature: tuple[int, int], reason: str) -> None:
        self._settling.pop(path, None)
        if self._reported.get(path) == signature:
            return
        self._reported[path] = signature
        log.info("Hot folder: %s is complete (%s, %d bytes)", path, reason, signature[0])
        self._on_complete(CompleteFile(path, profile, reason))

    def _forget(self, path: Path) -> None:
        self._settling.pop(path, None)
        self._reported.pop(path, None)

    def _list_folder(self) -> None:
        """Start settling every candidate file not yet seen, and forget reported files that are gone."""
        for path in list(self._reported):
            if not path.exists():
                del self._reported[path]
        for path in self._candidate_paths():
            signature = _file_signature(path)
            if signature is None or self._reported.get(path) == signature:
                continue
            self._settle(path)

    def _candidate_paths(self) -> list[Path]:
        paths = []
        for entry in self.root.iterdir():
            if entry.is_file():
                paths.append(entry)
            elif entry.is_dir() and entry.name in self._profiles and entry.name not in RESERVED_DIRS:
                paths.extend(child for child in entry.iterdir() if child.is_file())
            elif entry.is_dir():
                self._warn_unknown_folder(entry.name)
        return paths

    def _warn_unknown_folder(self, name: str) -> None:
        """Log once that files in subfolder ``name`` are not imported, because no capture profile has that name."""
        if name in RESERVED_DIRS or is_temporary_name(name) or name in self._unknown_folders:
            return
        self._unknown_folders.add(name)
        log.warning(
            "Hot folder: subfolder %s is not named after a configured capture profile (%s); its files are not imported "
            "and stay where they are. Rename the folder to a profile name or move the files up to %s",
            self.root / name,
            ", ".join(sorted(self._profiles)) or "none configured",
            self.root,
        )
