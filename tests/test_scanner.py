"""The SANE adapter against real libsane: the pnm backend as a virtual feeder, and the test backend."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sohoa.config import ProfileConfig, ScannerConfig
from sohoa.errors import (
    CoverOpenError,
    FeederEmptyError,
    PaperJamError,
    ScannerError,
    ScannerIOError,
    ScannerNotFoundError,
)
from sohoa.scanner import ScannedPage, Scanner, ScannerInfo
from sohoa.testbed.sane import activate_sane_config_dir, make_sane_config_dir

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples" / "pages"
SAMPLE_PAGES = ("quyet-dinh-p1.png", "quyet-dinh-p2.png", "giay-phep-p1.png")


@pytest.fixture(scope="module", autouse=True)
def sane_config(tmp_path_factory):
    """Point libsane at a config with the pnm and test backends, unless the session already did.

    libsane reads SANE_CONFIG_DIR only at the first sane_init of the process.
    """
    if "SANE_CONFIG_DIR" not in os.environ:
        activate_sane_config_dir(make_sane_config_dir(tmp_path_factory.mktemp("sane")))
    backends = (Path(os.environ["SANE_CONFIG_DIR"]) / "dll.conf").read_text().split()
    assert "pnm" in backends and "test" in backends


def write_small_pages(folder: Path, names: list[str]) -> None:
    """Write a distinct small colour image under each name; names with a fault marker stay empty."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, name in enumerate(names, start=1):
        path = folder / name
        if ".jam" in name or ".ioerror" in name or ".coveropen" in name:
            path.touch()
        else:
            Image.new("RGB", (120 + number, 80), (40 * number, 100, 200)).save(path)


def feeder_scanner(feeder_dir: Path, **overrides) -> Scanner:
    settings = {"device": "pnm:0", "feeder_dir": feeder_dir, "mode": "Color", "resolution": 300}
    settings.update(overrides)
    return Scanner(ScannerConfig(**settings))


def test_feeder_scans_sample_pages(tmp_path):
    feeder_dir = tmp_path / "feeder"
    feeder_dir.mkdir()
    for number, name in enumerate(SAMPLE_PAGES, start=1):
        shutil.copyfile(SAMPLES_DIR / name, feeder_dir / f"{number:03d}.png")
    job_dir = tmp_path / "job"
    seen_on_disk: list[tuple[int, bool, tuple[int, int]]] = []

    def record(page: ScannedPage) -> None:
        with Image.open(page.path) as written:
            seen_on_disk.append((page.index, page.path.is_file(), written.size))

    outcome = feeder_scanner(feeder_dir).scan_batch(job_dir, on_page=record)

    assert outcome.error is None
    assert [page.index for page in outcome.pages] == [1, 2, 3]
    assert [page.path.name for page in outcome.pages] == ["page-0001.png", "page-0002.png", "page-0003.png"]
    for page, name in zip(outcome.pages, SAMPLE_PAGES):
        with Image.open(SAMPLES_DIR / name) as source, Image.open(page.path) as scanned:
            assert scanned.size == source.size
            assert (page.width, page.height) == source.size
            assert page.dpi == 300
            assert page.mode == "RGB"
            assert np.array_equal(np.asarray(scanned), np.asarray(source.convert("RGB")))
    assert seen_on_disk == [(page.index, True, (page.width, page.height)) for page in outcome.pages]
    assert not list(job_dir.glob(".*.part"))


def test_feeder_gray_mode_writes_gray(tmp_path):
    write_small_pages(tmp_path / "feeder", ["001.png", "002.png"])

    outcome = feeder_scanner(tmp_path / "feeder", mode="Gray").scan_batch(tmp_path / "job")

    assert outcome.error is None
    assert [page.mode for page in outcome.pages] == ["L", "L"]


def test_jam_at_third_keeps_two(tmp_path):
    write_small_pages(tmp_path / "feeder", ["001.png", "002.png", "003.jam", "004.png"])
    job_dir = tmp_path / "job"
    callbacks: list[int] = []

    outcome = feeder_scanner(tmp_path / "feeder").scan_batch(job_dir, on_page=lambda page: callbacks.append(page.index))

    assert isinstance(outcome.error, PaperJamError)
    assert outcome.error.code == "paper_jam"
    assert [page.index for page in outcome.pages] == [1, 2]
    assert callbacks == [1, 2]
    assert sorted(path.name for path in job_dir.iterdir()) == ["page-0001.png", "page-0002.png"]


@pytest.mark.parametrize(
    ("fault_name", "error_class"),
    [
        ("002.jam.png", PaperJamError),
        ("002.ioerror", ScannerIOError),
        ("002.coveropen", CoverOpenError),
    ],
)
def test_fault_markers_map_to_errors(tmp_path, fault_name, error_class):
    write_small_pages(tmp_path / "feeder", ["001.png", fault_name, "003.png"])

    outcome = feeder_scanner(tmp_path / "feeder").scan_batch(tmp_path / "job")

    assert type(outcome.error) is error_class
    assert len(outcome.pages) == 1
    assert outcome.pages[0].path.is_file()


def test_jam_on_first_page_is_outcome(tmp_path):
    write_small_pages(tmp_path / "feeder", ["001.jam", "002.png"])

    outcome = feeder_scanner(tmp_path / "feeder").scan_batch(tmp_path / "job")

    assert isinstance(outcome.error, PaperJamError)
    assert outcome.pages == ()


def test_empty_feeder_raises(tmp_path):
    (tmp_path / "feeder").mkdir()
    job_dir = tmp_path / "job"

    with pytest.raises(FeederEmptyError) as caught:
        feeder_scanner(tmp_path / "feeder").scan_batch(job_dir)

    assert caught.value.code == "feeder_empty"
    assert "pnm:0" in str(caught.value)
    assert list(job_dir.iterdir()) == []


def test_corrupt_image_keeps_earlier_pages(tmp_path):
    write_small_pages(tmp_path / "feeder", ["001.png", "003.png"])
    (tmp_path / "feeder" / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a PNG")

    outcome = feeder_scanner(tmp_path / "feeder").scan_batch(tmp_path / "job")

    assert isinstance(outcome.error, ScannerIOError)
    assert "002.png" in str(outcome.error)
    assert [page.index for page in outcome.pages] == [1]
    assert outcome.pages[0].path.is_file()


def test_feeder_stops_at_max_pages(tmp_path):
    write_small_pages(tmp_path / "feeder", ["001.png", "002.png", "003.png"])

    outcome = feeder_scanner(tmp_path / "feeder", max_pages=2).scan_batch(tmp_path / "job")

    assert [page.index for page in outcome.pages] == [1, 2]
    assert type(outcome.error) is ScannerError
    assert "2 pages" in str(outcome.error)


def test_feeder_exactly_max_pages_is_clean(tmp_path):
    write_small_pages(tmp_path / "feeder", ["001.png", "002.png"])

    outcome = feeder_scanner(tmp_path / "feeder", max_pages=2).scan_batch(tmp_path / "job")

    assert outcome.error is None
    assert len(outcome.pages) == 2


def test_three_pass_is_rejected(tmp_path):
    write_small_pages(tmp_path / "feeder", ["001.png"])

    outcome = feeder_scanner(tmp_path / "feeder", options={"three-pass": True}).scan_batch(tmp_path / "job")

    assert type(outcome.error) is ScannerError
    assert "three-pass" in str(outcome.error)
    assert outcome.pages == ()


def test_test_backend_adf_yields_ten(tmp_path):
    scanner = Scanner(ScannerConfig(device="test:0", source="Automatic Document Feeder", resolution=75))
    indexes: list[int] = []

    outcome = scanner.scan_batch(tmp_path / "job", on_page=lambda page: indexes.append(page.index))

    assert outcome.error is None
    assert len(outcome.pages) == 10
    assert indexes == list(range(1, 11))
    assert all(page.path.is_file() and page.dpi == 75 for page in outcome.pages)


def test_test_backend_adf_max_pages(tmp_path):
    scanner = Scanner(ScannerConfig(device="test:0", source="Automatic Document Feeder", resolution=75, max_pages=4))

    outcome = scanner.scan_batch(tmp_path / "job")

    assert len(outcome.pages) == 4
    assert type(outcome.error) is ScannerError


def test_flatbed_scans_one_page(tmp_path):
    scanner = Scanner(ScannerConfig(device="test:0", source="Flatbed", mode="Gray", resolution=75))

    outcome = scanner.scan_batch(tmp_path / "job")

    assert outcome.error is None
    assert len(outcome.pages) == 1
    assert outcome.pages[0].mode == "L"


# The test backend keeps option values from one open to the next within a process,
# so tests that change its options other than source, mode and resolution use test:1.


def test_hand_scanner_height_is_found(tmp_path):
    scanner = Scanner(ScannerConfig(device="test:1", source="Flatbed", resolution=75, options={"hand-scanner": True}))

    outcome = scanner.scan_batch(tmp_path / "job")

    assert outcome.error is None
    assert outcome.pages[0].height > 0
    with Image.open(outcome.pages[0].path) as scanned:
        assert scanned.size == (outcome.pages[0].width, outcome.pages[0].height)


def test_probe_returns_device_info():
    info = Scanner(ScannerConfig(device="pnm:0")).probe()

    assert info == ScannerInfo(device="pnm:0", vendor="Noname", model="PNM file reader", type="virtual device")


def test_probe_missing_device_raises():
    with pytest.raises(ScannerNotFoundError) as caught:
        Scanner(ScannerConfig(device="nosuchbackend:0")).probe()

    assert "nosuchbackend:0" in str(caught.value)
    assert "pnm:0" in str(caught.value)
    assert caught.value.__cause__ is not None


def test_unknown_option_raises_with_choices():
    scanner = Scanner(ScannerConfig(device="test:0", options={"no-such-option": 1}))

    with pytest.raises(ScannerError) as caught:
        scanner.probe()

    assert "no-such-option" in str(caught.value)
    assert "resolution" in str(caught.value)


def test_invalid_source_raises_with_choices():
    scanner = Scanner(ScannerConfig(device="test:0", source="Transparency Unit"))

    with pytest.raises(ScannerError) as caught:
        scanner.probe()

    assert "Transparency Unit" in str(caught.value)
    assert "Automatic Document Feeder" in str(caught.value)


@pytest.mark.parametrize(("mode", "depth"), [("Gray", 1), ("Gray", 16), ("Color", 16)])
def test_bit_depths_give_8bit_pages(tmp_path, mode, depth):
    options = {"hand-scanner": False, "depth": depth, "test-picture": "Grid"}
    scanner = Scanner(ScannerConfig(device="test:1", source="Flatbed", mode=mode, resolution=75, options=options))

    outcome = scanner.scan_batch(tmp_path / "job")

    page = outcome.pages[0]
    with Image.open(page.path) as scanned:
        pixels = np.asarray(scanned)
    assert outcome.error is None
    assert (page.width, page.height) == (236, 295)
    assert scanned.mode == ("RGB" if mode == "Color" else "L")
    # The grid test picture is black and white squares: both extremes must survive.
    assert pixels.min() < 30
    assert pixels.max() > 225


def test_profile_overrides_mode_and_flatbed_scans_one_page(tmp_path):
    write_small_pages(tmp_path / "feeder", ["001.png", "002.png", "003.png"])
    profile = ProfileConfig(mode="Gray", flatbed=True)

    outcome = feeder_scanner(tmp_path / "feeder", mode="Color").scan_batch(tmp_path / "job", profile=profile)

    assert outcome.error is None
    assert [page.mode for page in outcome.pages] == ["L"]


def test_profile_resolution_reaches_the_device(tmp_path):
    scanner = Scanner(ScannerConfig(device="test:0", source="Automatic Document Feeder", resolution=75, max_pages=2))

    outcome = scanner.scan_batch(tmp_path / "job", profile=ProfileConfig(resolution=100))

    assert [page.dpi for page in outcome.pages] == [100, 100]
