"""A private SANE configuration with only the ``pnm`` and ``test`` backends.

libsane reads ``SANE_CONFIG_DIR`` once, in ``sane_init``, which
:func:`sohoa.scanner.initialize_sane` calls once per process. So set the
variable (:func:`activate_sane_config_dir`) before anything in the process
scans or probes; changing it later has no effect until the process restarts.
Keeping the list to ``pnm`` and ``test`` also stops libsane from probing USB
and the network for real scanners.
"""

from __future__ import annotations

import os
from pathlib import Path

BACKENDS = ("pnm", "test")

# The test backend's defaults, written out so that a host's /etc/sane.d/test.conf cannot change them.
TEST_BACKEND_CONF = """\
number_of_devices 2
mode Gray
depth 8
hand-scanner false
three-pass false
three-pass-order RGB
resolution_min 1.0
resolution_max 1200.0
resolution_quant 1.0
resolution 50.0
test-picture "Solid black"
read-limit false
read-delay false
fuzzy-parameters false
ppl-loss 0
non-blocking false
select-fd false
enable-test-options false
"""


def make_sane_config_dir(path: Path) -> Path:
    """Write ``dll.conf`` (pnm, test) and ``test.conf`` into ``path`` and return it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "dll.conf").write_text("\n".join(BACKENDS) + "\n", encoding="utf-8")
    (path / "test.conf").write_text(TEST_BACKEND_CONF, encoding="utf-8")
    return path


def sane_environment(config_dir: Path) -> dict[str, str]:
    """Return the environment variables that point libsane at ``config_dir``, for a child process."""
    return {"SANE_CONFIG_DIR": str(Path(config_dir).resolve())}


def activate_sane_config_dir(config_dir: Path) -> None:
    """Point this process's libsane at ``config_dir``. Call it before the first scan or probe."""
    os.environ.update(sane_environment(config_dir))
