"""Scanning through SANE: one batch from the feeder into lossless PNG pages.

:class:`Scanner` opens the configured SANE device for one batch, reads pages
until the feeder is empty, writes each page as ``page-0001.png``... durably the
moment it is read, and closes the device again, so that another program (or a
replugged scanner) can use it between batches. A paper jam, an open cover or
an I/O error ends the batch but keeps the pages read before it
(:class:`ScanOutcome`).

A source whose name contains "ADF", "Feeder", "Duplex" or "Automatic" is read
until the feeder reports it is empty. Any other source (a flatbed, or a device
without a ``source`` option) gives one page per batch.

Virtual feeder
--------------
When ``scanner.device`` starts with ``pnm:`` and ``scanner.feeder_dir`` is set,
the SANE pnm backend plays an ADF for pilots, demos and tests. Each scan takes
the next file of ``feeder_dir`` in name order (hidden files are skipped),
converts it to PPM (``mode = "Color"``) or PGM (other modes) in a private
temporary folder and sets the backend's ``filename`` option to it. After the
last file the batch ends as if the feeder were empty. A dotted marker in a
file's name injects a fault at that position through the pnm backend's own
status options, so the error really comes back from libsane:

* ``003.jam.png`` or an empty ``003.jam``: SANE_STATUS_JAMMED (``status-jammed``)
* ``003.ioerror``: SANE_STATUS_IO_ERROR (``status-ioerror``)
* ``003.coveropen``: SANE_STATUS_COVER_OPEN (``status-coveropen``)

The SANE ``test`` backend (``test:0``) with ``source = "Automatic Document
Feeder"`` works without any of this: it returns ten pages, then
SANE_STATUS_NO_DOCS.

libsane is initialised once per process, on first use, and reads
``SANE_CONFIG_DIR`` at that moment. libsane is not thread-safe, so every use
of it in sohoa takes :data:`SANE_LOCK`: a batch, a probe, a device listing
and a poll of the scanner's buttons.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import logging
import re
import tempfile
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import _sane
import numpy as np
import sane
from PIL import Image, UnidentifiedImageError

from sohoa.config import ProfileConfig, ScannerConfig
from sohoa.errors import (
    CoverOpenError,
    FeederEmptyError,
    PaperJamError,
    ScanCancelledError,
    ScannerError,
    ScannerIOError,
    ScannerNotFoundError,
)
from sohoa.fsutil import write_atomic_with
from sohoa.i18n import N_

log = logging.getLogger(__name__)

PAGE_NAME_TEMPLATE = "page-{index:04d}.png"
FEEDER_SOURCE_PATTERN = re.compile(r"adf|feeder|duplex|automatic", re.IGNORECASE)
VIRTUAL_FEEDER_PREFIX = "pnm:"


@dataclass(frozen=True)
class ScannedPage:
    """One page written to disk. ``mode`` is the PNG's Pillow mode ("RGB" or "L")."""

    index: int
    path: Path
    width: int
    height: int
    dpi: int
    mode: str


@dataclass(frozen=True)
class ScanOutcome:
    """The pages of one batch and the error that ended it, None when the feeder emptied."""

    pages: tuple[ScannedPage, ...]
    error: ScannerError | None


@dataclass(frozen=True)
class ScannerInfo:
    device: str
    vendor: str
    model: str
    type: str


class SaneStatus(enum.IntEnum):
    """SANE_Status values from sane/sane.h (SANE standard 1.0)."""

    GOOD = 0
    UNSUPPORTED = 1
    CANCELLED = 2
    DEVICE_BUSY = 3
    INVAL = 4
    EOF = 5
    JAMMED = 6
    NO_DOCS = 7
    COVER_OPEN = 8
    IO_ERROR = 9
    NO_MEM = 10
    ACCESS_DENIED = 11


_STATUS_ERRORS: dict[SaneStatus, tuple[type[ScannerError], str]] = {
    SaneStatus.NO_DOCS: (FeederEmptyError, N_("The feeder of scanner {device} is empty. Load the pages and press the button again.")),
    SaneStatus.JAMMED: (PaperJamError, N_("Paper jammed in scanner {device}. Remove the jammed sheet, put back the pages not yet scanned and scan them as a new batch.")),
    SaneStatus.COVER_OPEN: (CoverOpenError, N_("The cover of scanner {device} is open. Close it and scan the remaining pages as a new batch.")),
    SaneStatus.DEVICE_BUSY: (ScannerIOError, N_("Scanner {device} is busy. Wait until it is idle, then scan again.")),
    SaneStatus.ACCESS_DENIED: (ScannerIOError, N_("Access to scanner {device} was denied. Check that the daemon's user may use the scanner.")),
}
_DEFAULT_STATUS_ERROR = (
    ScannerIOError,
    N_("Scanner {device} failed: {detail}. Check the cable and the scanner, then scan the remaining pages as a new batch."),
)


class _FeederEmpty(Exception):
    """Raised inside a batch when the (real or virtual) feeder has no more pages."""


def _load_libsane() -> ctypes.CDLL:
    # dlopen returns the copy of libsane that the _sane extension already loaded.
    name = ctypes.util.find_library("sane") or "libsane.so.1"
    library = ctypes.CDLL(name)
    library.sane_strstatus.argtypes = [ctypes.c_int]
    library.sane_strstatus.restype = ctypes.c_char_p
    return library


_libsane: ctypes.CDLL | None = None
_init_lock = threading.Lock()
_initialized = False
# Held around every sequence of libsane calls, because libsane is not thread-safe.
# Reentrant, so that a holder may call a function that takes it again.
SANE_LOCK = threading.RLock()


def _holding_sane_lock(method: Callable) -> Callable:
    @functools.wraps(method)
    def locked(*arguments, **keywords):
        with SANE_LOCK:
            return method(*arguments, **keywords)

    return locked


def initialize_sane() -> None:
    """Call ``sane_init`` once per process, which is when libsane reads ``SANE_CONFIG_DIR``."""
    global _initialized, _libsane
    with _init_lock:
        if _initialized:
            return
        try:
            version = sane.init()
        except _sane.error as exc:
            raise ScannerNotFoundError(N_("Cannot initialise SANE: {detail}. Check the SANE installation."), detail=exc) from exc
        _libsane = _load_libsane()
        _initialized = True
        log.info("SANE initialised, version code %s", version[0])


def sane_status_of(exc: Exception) -> SaneStatus | None:
    """Return the SANE status behind a python-sane error, None if it is not one.

    NOTE: python-sane raises ``_sane.error`` with only the text of
    ``sane_strstatus()``, which libsane translates into the process locale.
    So the text of every status is asked from libsane itself, here and now,
    and compared; no English text is hard-coded.
    """
    if not isinstance(exc, _sane.error) or _libsane is None:
        return None
    message = str(exc)
    for status in SaneStatus:
        text = _libsane.sane_strstatus(int(status))
        if text is not None and text.decode("utf-8", errors="replace") == message:
            return status
    return None


def translate_sane_error(exc: Exception, device: str) -> ScannerError:
    """Return the sohoa error for a python-sane error raised while scanning on ``device``."""
    status = sane_status_of(exc)
    error_class, template = _STATUS_ERRORS.get(status, _DEFAULT_STATUS_ERROR)
    error = error_class(template, device=device, detail=exc)
    error.__cause__ = exc
    return error


def _list_devices() -> list[tuple[str, str, str, str]]:
    try:
        return list(sane.get_devices())
    except _sane.error as exc:
        log.warning("Listing SANE devices failed: %s", exc)
        return []


def _open_device(device_name: str) -> sane.SaneDev:
    initialize_sane()
    try:
        return sane.open(device_name)
    except (_sane.error, RuntimeError) as exc:
        seen = ", ".join(device[0] for device in _list_devices()) or "none"
        raise ScannerNotFoundError(
            N_("Cannot open scanner {device}: {detail}. Devices found: {devices}. Check cable and power, or set scanner.device to one of them."),
            device=device_name,
            detail=exc,
            devices=seen,
        ) from exc


def open_device(device_name: str) -> sane.SaneDev:
    """Open ``device_name``, raising ScannerNotFoundError when it cannot be opened. Close it with :func:`close_device`."""
    return _open_device(device_name)


def close_device(device: sane.SaneDev, device_name: str) -> None:
    """Cancel any operation on ``device`` and close it, logging rather than raising a SANE error."""
    _close_device(device, device_name)


def _close_device(device: sane.SaneDev, device_name: str) -> None:
    try:
        device.cancel()
    except _sane.error as exc:
        log.debug("sane_cancel on %s failed: %s", device_name, exc)
    try:
        device.close()
    except _sane.error as exc:
        log.warning("Closing scanner %s failed: %s", device_name, exc)


def _option_name(name: str) -> str:
    """Return python-sane's attribute name for a SANE option name ("read-limit" -> "read_limit")."""
    return name.replace("-", "_")


def _set_option(device: sane.SaneDev, device_name: str, name: str, value: object) -> None:
    """Set one SANE option, raising ScannerError with the valid values when the device rejects it."""
    key = _option_name(name)
    if key not in device.opt:
        raise ScannerError(
            N_("Scanner {device} has no option {option}. Its options are: {options}. Fix scanner.options in the configuration."),
            device=device_name,
            option=name,
            options=", ".join(sorted(option for option in device.opt if option)),
        )
    try:
        setattr(device, key, value)
    except (_sane.error, AttributeError, TypeError) as exc:
        raise ScannerError(
            N_("Scanner {device} rejected {option} = {value}: {detail}. Valid values: {valid}."),
            device=device_name,
            option=name,
            value=repr(value),
            detail=exc,
            valid=device.opt[key].constraint,
        ) from exc


def _read_option(device: sane.SaneDev, name: str) -> object | None:
    key = _option_name(name)
    if key not in device.opt or not device.opt[key].is_active():
        return None
    return getattr(device, key)


class _VirtualFeeder:
    """Feed the image files of a folder to the SANE pnm backend, one per scan."""

    FAULT_OPTIONS = {"jam": "status_jammed", "ioerror": "status_ioerror", "coveropen": "status_coveropen"}
    # The pnm backend keeps option values in globals across sane_open, so a batch starts from these.
    PNM_DEFAULTS = {
        "brightness": 0,
        "contrast": 0,
        "grayify": False,
        "three-pass": False,
        "hand-scanner": False,
        "custom-gamma": False,
        "status": True,
    }

    def __init__(self, folder: Path, work_dir: Path, mode: str) -> None:
        if not folder.is_dir():
            raise ScannerError(N_("Feeder folder {path} does not exist. Create it or fix scanner.feeder_dir."), path=folder)
        self.files = sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))
        self.work_dir = work_dir
        self.color = mode.lower().startswith("color")
        self.position = 0

    def reset_backend(self, device: sane.SaneDev, device_name: str) -> None:
        """Set the pnm backend's simulation options to their defaults, before the configured options."""
        for name, value in self.PNM_DEFAULTS.items():
            if _option_name(name) in device.opt:
                _set_option(device, device_name, name, value)

    def has_more(self) -> bool:
        return self.position < len(self.files)

    def load_next(self, device: sane.SaneDev, device_name: str) -> None:
        """Point the pnm backend at the next file, with its fault marker if any."""
        if not self.has_more():
            raise _FeederEmpty
        source = self.files[self.position]
        self.position += 1
        fault = self._fault_of(source)
        log.debug("Virtual feeder: position %d, file %s, fault %s", self.position, source, fault)

        _set_option(device, device_name, "status", True)
        if fault is None:
            _set_option(device, device_name, "filename", str(self._convert(source)))
        else:
            _set_option(device, device_name, "filename", str(self._blank_page()))
            _set_option(device, device_name, self.FAULT_OPTIONS[fault], True)

    def _fault_of(self, path: Path) -> str | None:
        markers = [part.lower() for part in path.name.split(".")[1:]]
        for marker in self.FAULT_OPTIONS:
            if marker in markers:
                return marker
        return None

    def _convert(self, source: Path) -> Path:
        """Write ``source`` as PPM or PGM for the pnm backend, raising ScannerIOError for an unreadable file."""
        target = self.work_dir / ("page.ppm" if self.color else "page.pgm")
        try:
            with Image.open(source) as image:
                image.convert("RGB" if self.color else "L").save(target)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            raise ScannerIOError(
                N_("Feeder image {path} cannot be read: {detail}. Replace or remove the file and scan the remaining pages."),
                path=source,
                detail=exc,
            ) from exc
        return target

    def _blank_page(self) -> Path:
        target = self.work_dir / "fault.pgm"
        if not target.exists():
            Image.new("L", (8, 8), 255).save(target)
        return target


def _snap_image(device: sane.SaneDev, cancel: threading.Event | None = None) -> Image.Image:
    """Read the started page and return it as an 8-bit "L" or "RGB" image.

    NOTE: python-sane 2.9.2's ``SaneDev.snap()`` without 16-bit support
    misreads a 16-bit frame as an 8-bit one of twice the height, so the raw
    samples are read and reduced to 8 bits here.

    When ``cancel`` is set during the read, ``sane_cancel`` is called from
    python-sane's per-line progress callback, so on this same thread, and the
    read ends with SANE_STATUS_CANCELLED. NOTE: the callback must not raise,
    because python-sane 2.9.2 then releases a NULL result and the process
    crashes with a segmentation fault.
    """
    progress = None
    if cancel is not None:
        cancelled = False

        def progress(_line: int, _lines: int) -> None:
            nonlocal cancelled
            if cancel.is_set() and not cancelled:
                cancelled = True
                device.dev.cancel()

    # no_cancel=True: an ADF backend keeps feeding only if no sane_cancel comes between pages.
    data, width, height, samples, sample_size = device.dev.snap(True, True, progress)
    if not data:
        raise RuntimeError("Scanner returned no data")
    if sample_size == 2:
        pixels = (np.frombuffer(data, dtype=np.uint16) >> 8).astype(np.uint8)
    else:
        pixels = np.frombuffer(data, dtype=np.uint8)
    if samples == 3:
        return Image.fromarray(pixels.reshape(height, width, 3))
    return Image.fromarray(pixels.reshape(height, width))


class Scanner:
    """One SANE scanner, opened for the length of a probe or a batch."""

    def __init__(self, config: ScannerConfig) -> None:
        self.config = config

    @property
    def uses_virtual_feeder(self) -> bool:
        return self.config.device.startswith(VIRTUAL_FEEDER_PREFIX) and self.config.feeder_dir is not None

    @_holding_sane_lock
    def probe(self) -> ScannerInfo:
        """Open the device, apply the configured options and close it again.

        Raises ScannerNotFoundError when the device cannot be opened, and
        ScannerError when it rejects a configured option.
        """
        device = _open_device(self.config.device)
        try:
            self._apply_options(device)
        finally:
            _close_device(device, self.config.device)

        for name, vendor, model, kind in _list_devices():
            if name == self.config.device:
                return ScannerInfo(device=name, vendor=vendor, model=model, type=kind)
        # Devices reached through the net backend or by a path may not be listed.
        return ScannerInfo(device=self.config.device, vendor="", model="", type="")

    @_holding_sane_lock
    def scan_batch(
        self,
        job_dir: Path,
        on_page: Callable[[ScannedPage], None] | None = None,
        *,
        profile: ProfileConfig | None = None,
        cancel: threading.Event | None = None,
    ) -> ScanOutcome:
        """Scan until the feeder is empty, writing ``job_dir/page-0001.png``... as pages arrive.

        ``profile`` overrides the configured source, mode and resolution where
        it sets them; a flatbed profile scans one page. ``on_page`` is called
        after each page file is durably on disk. Setting ``cancel`` from
        another thread stops the batch within one scan line or before the next
        page. The outcome then carries a ScanCancelledError and the pages
        finished before it. Raises
        FeederEmptyError when there was no page at all, ScannerNotFoundError
        when the device cannot be opened and ScannerError when it rejects a
        configured option. A failure after that is returned in
        ``ScanOutcome.error`` with the pages read before it.
        """
        job_dir = Path(job_dir)
        job_dir.mkdir(parents=True, exist_ok=True)
        device = _open_device(self.config.device)
        try:
            with tempfile.TemporaryDirectory(prefix="sohoa-feeder-") as work_dir:
                feeder = None
                settings = self._settings(profile)
                if self.uses_virtual_feeder:
                    feeder = _VirtualFeeder(Path(self.config.feeder_dir), Path(work_dir), settings.mode)
                    feeder.reset_backend(device, self.config.device)
                self._apply_options(device, settings)
                one_page = profile is not None and profile.flatbed
                return self._scan_pages(device, feeder, job_dir, on_page, one_page=one_page, cancel=cancel)
        finally:
            _close_device(device, self.config.device)

    def _settings(self, profile: ProfileConfig | None) -> ScannerConfig:
        """Return the scanner settings with the profile's source, mode and resolution applied."""
        if profile is None:
            return self.config
        overrides = {name: getattr(profile, name) for name in ("source", "mode", "resolution") if getattr(profile, name) is not None}
        return self.config.model_copy(update=overrides)

    def _apply_options(self, device: sane.SaneDev, settings: ScannerConfig | None = None) -> None:
        """Set source, mode, resolution, then ``options``, raising ScannerError for an option the device lacks.

        Options not set here keep the backend's current value, which some
        backends (the SANE test backend, for one) carry over from an earlier
        open in the same process.
        """
        settings = settings or self.config
        name = self.config.device
        if settings.source is not None:
            _set_option(device, name, "source", settings.source)
        # Virtual devices such as pnm have no mode option, so the virtual feeder converts the image instead.
        if "mode" in device.opt:
            _set_option(device, name, "mode", settings.mode)
        else:
            log.debug("Scanner %s has no mode option, keeping its own", name)
        if "resolution" in device.opt:
            _set_option(device, name, "resolution", settings.resolution)
        for option, value in self.config.options.items():
            _set_option(device, name, option, value)

    def _is_feeder(self, device: sane.SaneDev) -> bool:
        if self.uses_virtual_feeder:
            return True
        source = _read_option(device, "source")
        return isinstance(source, str) and bool(FEEDER_SOURCE_PATTERN.search(source))

    def _page_dpi(self, device: sane.SaneDev) -> int:
        resolution = _read_option(device, "resolution")
        if isinstance(resolution, (int, float)) and resolution > 0:
            return round(resolution)
        return self.config.resolution

    def _scan_pages(
        self,
        device: sane.SaneDev,
        feeder: _VirtualFeeder | None,
        job_dir: Path,
        on_page: Callable[[ScannedPage], None] | None,
        *,
        one_page: bool = False,
        cancel: threading.Event | None = None,
    ) -> ScanOutcome:
        is_feeder = self._is_feeder(device) and not one_page
        limit = self.config.max_pages if is_feeder else 1
        dpi = self._page_dpi(device)
        pages: list[ScannedPage] = []

        while len(pages) < limit:
            try:
                image = self._read_page(device, feeder, cancel)
            except _FeederEmpty:
                return self._finish_empty(pages)
            except ScanCancelledError as error:
                return ScanOutcome(tuple(pages), error)
            except ScannerError as error:
                log.error("Batch on %s stopped after %d pages: %s", self.config.device, len(pages), error)
                return ScanOutcome(tuple(pages), error)
            page = self._store_page(image, len(pages) + 1, dpi, job_dir)
            pages.append(page)
            log.info("Scanned page %d on %s: %dx%d %s", page.index, self.config.device, page.width, page.height, page.mode)
            if on_page is not None:
                on_page(page)

        if not is_feeder:
            return ScanOutcome(tuple(pages), None)
        return ScanOutcome(tuple(pages), self._check_beyond_limit(device, feeder))

    def _finish_empty(self, pages: list[ScannedPage]) -> ScanOutcome:
        if not pages:
            raise FeederEmptyError(_STATUS_ERRORS[SaneStatus.NO_DOCS][1], device=self.config.device)
        log.info("Feeder of %s empty after %d pages", self.config.device, len(pages))
        return ScanOutcome(tuple(pages), None)

    def _read_page(self, device: sane.SaneDev, feeder: _VirtualFeeder | None, cancel: threading.Event | None = None) -> Image.Image:
        """Start one page and read it whole; raise _FeederEmpty at the end of the feeder, ScanCancelledError on ``cancel``."""
        name = self.config.device
        self._check_cancel(cancel)
        if feeder is not None:
            feeder.load_next(device, name)
        try:
            device.start()
            self._check_single_frame(device)
            image = _snap_image(device, cancel)
        except (_sane.error, RuntimeError) as exc:
            if sane_status_of(exc) == SaneStatus.NO_DOCS:
                raise _FeederEmpty from exc
            if cancel is not None and cancel.is_set():
                raise self._cancelled_error() from exc
            raise translate_sane_error(exc, name) from exc
        finally:
            if feeder is not None:
                # The pnm backend returns EOF on the next sane_start unless it is cancelled first.
                device.cancel()
        return image

    def _check_cancel(self, cancel: threading.Event | None) -> None:
        if cancel is not None and cancel.is_set():
            raise self._cancelled_error()

    def _cancelled_error(self) -> ScanCancelledError:
        log.info("Scan on %s cancelled", self.config.device)
        return ScanCancelledError(N_("The scan on scanner {device} was cancelled. The pages scanned before it are kept."), device=self.config.device)

    def _check_single_frame(self, device: sane.SaneDev) -> None:
        frame_format, last_frame, _size, _depth, _bytes_per_line = device.get_parameters()
        if frame_format in ("red", "green", "blue") or not last_frame:
            raise ScannerError(
                N_("Scanner {device} sends each colour as a separate frame (three-pass), which is not supported. Set scanner.mode to Gray or turn off the three-pass option."),
                device=self.config.device,
            )

    def _check_beyond_limit(self, device: sane.SaneDev, feeder: _VirtualFeeder | None) -> ScannerError | None:
        """Return an error if paper remains in the feeder after max_pages pages.

        A real feeder is asked by starting one more page: if it starts, it is
        cancelled unread, so that sheet has to be scanned again.
        """
        more = feeder.has_more() if feeder is not None else self._feeder_has_paper(device)
        if not more:
            return None
        log.error("Batch on %s reached scanner.max_pages = %d", self.config.device, self.config.max_pages)
        return ScannerError(
            N_("The batch reached the limit of {limit} pages and was stopped. The sheets after page {limit} were not scanned: scan them as a new batch, or raise scanner.max_pages."),
            limit=self.config.max_pages,
        )

    def _feeder_has_paper(self, device: sane.SaneDev) -> bool:
        """Start one more page and cancel it: True unless the feeder reports it is empty."""
        try:
            device.start()
            return True
        except _sane.error as exc:
            if sane_status_of(exc) == SaneStatus.NO_DOCS:
                return False
            log.warning("Scanner %s failed after the page limit, assuming paper remains: %s", self.config.device, exc)
            return True
        finally:
            device.cancel()

    def _store_page(self, image: Image.Image, index: int, dpi: int, job_dir: Path) -> ScannedPage:
        path = job_dir / PAGE_NAME_TEMPLATE.format(index=index)
        write_atomic_with(path, lambda temporary: image.save(temporary, format="PNG", dpi=(dpi, dpi)), suffix=".png")
        return ScannedPage(index=index, path=path, width=image.width, height=image.height, dpi=dpi, mode=image.mode)
