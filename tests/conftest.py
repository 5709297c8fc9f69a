"""Session-wide set-up shared by every test module.

libsane reads ``SANE_CONFIG_DIR`` once, at the first ``sane_init`` of the
process, so one private SANE configuration (the ``pnm`` and ``test`` backends)
is made here before any test can initialise SANE.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest

from sohoa.i18n import set_language

_SANE_DIR = Path(tempfile.mkdtemp(prefix="sohoa-sane-"))
(_SANE_DIR / "dll.conf").write_text("pnm\ntest\n", encoding="ascii")
os.environ["SANE_CONFIG_DIR"] = str(_SANE_DIR)


@pytest.fixture(autouse=True)
def _vietnamese_by_default():
    """Every test starts with the default user language, Vietnamese."""
    set_language("vi")
    yield
    set_language("vi")


@pytest.fixture
def testbed(tmp_path):
    """A whole box on this machine: broker, archive, token, SANE feeder with the sample decision."""
    from sohoa.testbed.demo import build_testbed

    with build_testbed(tmp_path / "bed") as bed:
        yield bed


@pytest.fixture
def start_daemon(testbed):
    """Return a function that starts a daemon on the testbed; every daemon started is stopped afterwards."""
    from sohoa.app import build_daemon

    started = []

    def start():
        daemon = build_daemon(testbed.config())
        daemon.start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture(scope="session")
def load_models_module():
    """Return a function that imports a script of models/ (``build``, ``recognizer_graph``) by name."""
    models_dir = Path(__file__).resolve().parents[1] / "models"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"models_{name}", models_dir / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        # dataclasses look the module up in sys.modules while the class is created.
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load
