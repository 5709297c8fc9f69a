"""Cheap facts about the box for the status report: temperature, disk, devices, models, counts.

Nothing here opens the scanner or logs in to the token: the device probe only lists
SANE devices and PKCS#11 token labels, and the daemon runs it on its worker
thread between jobs, at most once per DEVICE_PROBE_INTERVAL_SECONDS.
"""

from __future__ import annotations

import logging
import shutil
import time
from datetime import datetime, time as day_time, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)

THERMAL_ZONES = Path("/sys/class/thermal")
DEVICE_PROBE_INTERVAL_SECONDS = 300.0
DIGITIZED_STATES = ("signed", "uploaded")


def cpu_temperature_c(thermal_dir: Path = THERMAL_ZONES) -> float | None:
    """Return the CPU temperature in °C from the kernel's thermal zones, or None when there is none.

    Prefers a zone whose type names the CPU or SoC (``cpu-thermal`` on a
    Raspberry Pi); otherwise takes the first zone that can be read.
    """
    zones = sorted(thermal_dir.glob("thermal_zone*"))
    readings = []
    for zone in zones:
        try:
            millidegrees = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            kind = (zone / "type").read_text().strip().lower()
        except OSError:
            kind = ""
        readings.append((kind, round(millidegrees / 1000.0, 1)))
    for kind, celsius in readings:
        if "cpu" in kind or "soc" in kind:
            return celsius
    return readings[0][1] if readings else None


def disk_free_mb(path: Path) -> int | None:
    """Return the free space in MiB of the file system holding ``path``, or None if ``path`` does not exist."""
    try:
        return shutil.disk_usage(path).free // (1024 * 1024)
    except FileNotFoundError:
        return None


def model_versions(models_dir: Path) -> dict[str, str]:
    """Return the OCR model versions (the start of each file's SHA-256 in the manifest), or {} if unreadable."""
    from sohoa.errors import OcrError
    from sohoa.ocr.models import read_manifest

    try:
        entries = read_manifest(models_dir)
    except OcrError as exc:
        log.warning("Cannot read the OCR model manifest for the status report: %s", exc)
        return {}
    return {name: entry.sha256[:12] for name, entry in sorted(entries.items())}


def digitized_counts(journal, zone: ZoneInfo, now: datetime | None = None) -> dict[str, int]:
    """Count digitized documents (signed or uploaded) and their pages, today and in total.

    "Today" starts at midnight in ``zone`` and counts by the time the scan
    started, as the progress report does.
    """
    now = now or datetime.now(zone)
    midnight = datetime.combine(now.astimezone(zone).date(), day_time(0), tzinfo=zone)
    placeholders = ", ".join("?" for _ in DIGITIZED_STATES)
    query = (
        "select count(*) as documents, coalesce(sum(page_count), 0) as pages,"
        " coalesce(sum(created_at >= ?), 0) as documents_today,"
        " coalesce(sum(case when created_at >= ? then page_count else 0 end), 0) as pages_today"
        f" from jobs where state in ({placeholders})"
    )
    # The journal stores UTC times as ISO 8601 text, so text comparison orders them.
    since = midnight.astimezone(timezone.utc).isoformat(timespec="seconds")
    with journal.transaction() as db:
        row = next(db.query(query, [since, since, *DIGITIZED_STATES]))
    return {
        "documents_today": row["documents_today"],
        "pages_today": row["pages_today"],
        "documents_total": row["documents"],
        "pages_total": row["pages"],
    }


def list_token_labels(module_path: Path) -> list[str] | None:
    """Return the labels of the tokens present in PKCS#11 module ``module_path``, or None when it cannot tell.

    Opens no session and does not log in. Returns None without waiting when
    the signing code is using the module, because unloading a module while
    another thread uses it would break that thread's session.
    """
    import PyKCS11

    # NOTE: this shares the signing module's private lock, the only guard
    # that keeps C_Finalize away from a running signature.
    from sohoa.signing.token import _TOKEN_LOCK

    if not _TOKEN_LOCK.acquire(blocking=False):
        return None
    try:
        library = PyKCS11.PyKCS11Lib()
        try:
            library.load(str(module_path))
        except PyKCS11.PyKCS11Error as exc:
            log.warning("Cannot load PKCS#11 module %s to look for the token: %s", module_path, exc)
            return None
        try:
            return [library.getTokenInfo(slot).label.strip() for slot in library.getSlotList(tokenPresent=True)]
        except PyKCS11.PyKCS11Error as exc:
            log.warning("Listing the tokens of PKCS#11 module %s failed: %s", module_path, exc)
            return None
        finally:
            try:
                library.unload()
            except PyKCS11.PyKCS11Error as exc:
                log.debug("Unloading PKCS#11 module %s failed: %s", module_path, exc)
    finally:
        _TOKEN_LOCK.release()


def scanner_listed(device: str) -> bool | None:
    """Return whether SANE lists ``device``, or None when SANE cannot list devices.

    A device reached through the net backend or by a path may work without
    being listed, so False means "not listed", not certainly "absent".
    """
    import _sane
    import sane

    from sohoa.errors import ScannerError
    from sohoa.scanner import SANE_LOCK, initialize_sane

    try:
        initialize_sane()
        with SANE_LOCK:
            devices = sane.get_devices()
    except (ScannerError, _sane.error) as exc:
        log.warning("Listing SANE devices failed: %s", exc)
        return None
    return any(name == device for name, *_ in devices)


class DeviceProbe:
    """Remember whether the signing token and the scanner are present, refreshed at most every ``interval`` seconds.

    Call :meth:`refresh_if_due` only from the thread that scans and signs, so
    that the probe never overlaps a scan. Both values start as None (unknown).
    """

    def __init__(self, scanner_device: str, pkcs11_module: Path, token_label: str, interval: float = DEVICE_PROBE_INTERVAL_SECONDS, clock=time.monotonic) -> None:
        self._scanner_device = scanner_device
        self._pkcs11_module = pkcs11_module
        self._token_label = token_label
        self._interval = interval
        self._clock = clock
        self._next_probe = 0.0
        self.token_present: bool | None = None
        self.scanner_present: bool | None = None

    def refresh_if_due(self) -> bool:
        """Probe both devices if the interval has passed; return whether it probed."""
        now = self._clock()
        if now < self._next_probe:
            return False
        self._next_probe = now + self._interval

        labels = list_token_labels(self._pkcs11_module)
        if labels is not None:
            self.token_present = self._token_label in labels
        self.scanner_present = scanner_listed(self._scanner_device)
        log.debug("Device probe: token present %s, scanner listed %s", self.token_present, self.scanner_present)
        return True
