"""Scan triggers read from the scanner itself: its own buttons and its "paper loaded" sensor.

SANE reports a scanner's buttons and sensors as options that the frontend can
read but not set: the capability SANE_CAP_SOFT_DETECT without
SANE_CAP_SOFT_SELECT, usually in an option group called "Sensors". Which ones
a scanner has depends on its backend. :class:`ScannerTriggers` opens the
device for each poll, reads those options, closes the device again, and asks
the daemon for a scan on a rising edge (false, then true):

* a scanner button (``capture.scanner_buttons``) starts a scan with origin
  ``scanner_button`` and the profile that ``capture.scanner_button_profiles``
  gives the option, if any;
* the paper sensor (``capture.auto_start``) starts a scan with origin
  ``feeder``.

The first reading after start-up only sets the baseline, so paper already in
the feeder, or a button held, when the daemon starts, starts nothing.

Polls run on the daemon's worker thread between its other steps, and hold
:data:`sohoa.scanner.SANE_LOCK`, because libsane is not thread-safe. So a
poll never overlaps a scan, and no poll runs while the worker recognizes,
builds or signs a document: a scanner button pressed and released during
that time is not seen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import _sane
import sane

from sohoa.config import CaptureConfig, Config
from sohoa.errors import ScannerError
from sohoa.scanner import SANE_LOCK, close_device, open_device

log = logging.getLogger(__name__)

SANE_TYPE_BOOL = _sane.TYPE_BOOL
SANE_CAP_SOFT_SELECT = _sane.CAP_SOFT_SELECT
SANE_CAP_SOFT_DETECT = _sane.CAP_SOFT_DETECT
SANE_CAP_INACTIVE = _sane.CAP_INACTIVE


@dataclass(frozen=True)
class SensorOption:
    """One SANE option polled as a trigger: a scanner button, or the paper sensor (``profile`` unused)."""

    name: str
    kind: str  # "scanner_button" or "feeder", the CaptureRequest origin it starts
    profile: str | None = None


def _option_key(name: str) -> str:
    """Return python-sane's attribute name for a SANE option name ("page-loaded" -> "page_loaded")."""
    return name.replace("-", "_")


def is_read_only_bool(option: sane.Option) -> bool:
    """Return whether ``option`` is an active bool that the scanner sets and the frontend only reads."""
    capability = option.cap
    return (
        bool(option.name)
        and option.type == SANE_TYPE_BOOL
        and bool(capability & SANE_CAP_SOFT_DETECT)
        and not capability & SANE_CAP_SOFT_SELECT
        and not capability & SANE_CAP_INACTIVE
    )


class ScannerTriggers:
    """Poll the scanner's buttons and paper sensor every ``capture.poll_seconds``; call ``request_scan`` on a rising edge.

    A poll takes SANE_LOCK, so it never overlaps another use of libsane in
    the process. The daemon polls from its worker thread, between scans and
    jobs. The options to poll are found on the first poll that opens the
    device: the configured ``capture.scanner_button_options``, or every
    read-only bool option when that list is empty, and the first of
    ``capture.paper_sensor_options`` that the device has. A feature whose
    options the device lacks is logged once and not polled again. When
    neither feature is left, polling stops.
    """

    def __init__(
        self,
        config: Config,
        request_scan: Callable[..., None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._device_name = config.scanner.device
        self._capture = config.capture
        self._request_scan = request_scan
        self._clock = clock
        self._next_poll = 0.0
        self._sensors: list[SensorOption] | None = None
        self._previous: dict[str, bool] = {}
        self._open_failed = False
        self.stopped = False

    @staticmethod
    def enabled_in(capture: CaptureConfig) -> bool:
        """Return whether ``capture`` turns on scanner buttons or automatic start, the two uses of polling."""
        return capture.scanner_buttons or capture.auto_start

    @property
    def sensors(self) -> list[SensorOption]:
        """The options being polled; empty before the first successful poll."""
        return list(self._sensors or [])

    def poll_if_due(self) -> bool:
        """Poll if ``capture.poll_seconds`` have passed since the last poll; return whether it polled."""
        now = self._clock()
        if self.stopped or now < self._next_poll:
            return False
        self._next_poll = now + self._capture.poll_seconds
        self.poll()
        return True

    def poll(self) -> list[SensorOption]:
        """Open the device, read the polled options, close it; request a scan for the first rising edge.

        Returns the options that rose. A device that cannot be opened (unplugged,
        or in use by another program) is logged and tried again at the next poll.
        """
        if self.stopped:
            return []
        with SANE_LOCK:
            values = self._read_sensors()
        if values is None:
            return []

        risen = self._rising_edges(values)
        if risen:
            self._request(risen[0])
        return risen

    def _read_sensors(self) -> dict[str, bool | None] | None:
        """Return the value of each polled option by name, or None when the device cannot be opened."""
        try:
            device = open_device(self._device_name)
        except ScannerError as exc:
            if not self._open_failed:
                log.warning("Cannot poll the buttons and sensors of scanner %s, trying again every %.1f s: %s", self._device_name, self._capture.poll_seconds, exc)
            self._open_failed = True
            return None
        if self._open_failed:
            log.info("Polling the buttons and sensors of scanner %s again", self._device_name)
            self._open_failed = False

        try:
            if self._sensors is None:
                self._sensors = self._find_sensors(device)
            return {sensor.name: self._read(device, sensor) for sensor in self._sensors}
        finally:
            close_device(device, self._device_name)

    # finding the options

    def _find_sensors(self, device: sane.SaneDev) -> list[SensorOption]:
        sensors: list[SensorOption] = []
        if self._capture.scanner_buttons:
            buttons = self._find_buttons(device)
            if not buttons:
                log.info(
                    "Scanner %s exposes no buttons through its SANE backend; scanner buttons are not polled. Options read: %s",
                    self._device_name,
                    ", ".join(self._capture.scanner_button_options) or "every read-only bool option",
                )
            sensors.extend(buttons)
        if self._capture.auto_start:
            paper = self._find_paper_sensor(device)
            if paper is None:
                log.info(
                    "Scanner %s has none of the paper sensor options %s; scans do not start when paper is loaded",
                    self._device_name,
                    ", ".join(self._capture.paper_sensor_options),
                )
            else:
                sensors.append(paper)
        if not sensors:
            self.stopped = True
            log.info("Polling of scanner %s stopped: nothing to poll", self._device_name)
        else:
            log.info("Polling scanner %s every %.1f s: %s", self._device_name, self._capture.poll_seconds, ", ".join(f"{sensor.name} ({sensor.kind})" for sensor in sensors))
        return sensors

    def _find_buttons(self, device: sane.SaneDev) -> list[SensorOption]:
        paper_keys = {_option_key(name) for name in self._capture.paper_sensor_options}
        profiles = {_option_key(name): profile for name, profile in self._capture.scanner_button_profiles.items()}
        if self._capture.scanner_button_options:
            names = [name for name in self._capture.scanner_button_options if self._usable(device, name)]
        else:
            names = [
                option.name
                for key, option in device.opt.items()
                if is_read_only_bool(option) and key not in paper_keys
            ]
        return [SensorOption(name, "scanner_button", profiles.get(_option_key(name))) for name in names]

    def _find_paper_sensor(self, device: sane.SaneDev) -> SensorOption | None:
        for name in self._capture.paper_sensor_options:
            if _option_key(name) in device.opt and self._usable(device, name):
                return SensorOption(name, "feeder")
        return None

    def _usable(self, device: sane.SaneDev, name: str) -> bool:
        """Return whether the configured option ``name`` is an active bool option of the device; log why not."""
        option = device.opt.get(_option_key(name))
        if option is None:
            log.warning(
                "Scanner %s has no option %s to poll. Its options are: %s",
                self._device_name,
                name,
                ", ".join(sorted(option.name for option in device.opt.values() if option.name)),
            )
            return False
        if option.type != SANE_TYPE_BOOL or not option.is_active():
            # A SANE button-typed option carries no value to read (the test backend returns SANE_STATUS_INVAL).
            log.warning("Option %s of scanner %s is not an active bool option and is not polled", name, self._device_name)
            return False
        return True

    # reading

    def _read(self, device: sane.SaneDev, sensor: SensorOption) -> bool | None:
        option = device.opt[_option_key(sensor.name)]
        try:
            return bool(device.dev.get_option(option.index))
        except _sane.error as exc:
            log.warning("Reading option %s of scanner %s failed: %s", sensor.name, self._device_name, exc)
            return None

    def _rising_edges(self, values: dict[str, bool | None]) -> list[SensorOption]:
        risen = []
        for sensor in self._sensors or []:
            value = values.get(sensor.name)
            if value is None:
                continue
            previous = self._previous.get(sensor.name)
            self._previous[sensor.name] = value
            if value and previous is False:
                risen.append(sensor)
        return risen

    def _request(self, sensor: SensorOption) -> None:
        log.info("Scanner %s: %s rose, requesting a scan (origin %s)", self._device_name, sensor.name, sensor.kind)
        if sensor.kind == "scanner_button":
            self._request_scan(profile=sensor.profile, origin=sensor.kind)
        else:
            self._request_scan(origin=sensor.kind)
