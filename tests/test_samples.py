"""The committed sample pages agree with their ground truth and look like A4 scans at 300 dpi."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PAGES_DIR = Path(__file__).resolve().parents[1] / "samples" / "pages"
DOCUMENTS = ("quyet-dinh", "giay-phep", "ban-sao-bang")
REQUIRED_FIELDS = ("TypeName", "CodeNumber", "CodeNotation", "IssuedDate", "OrganName", "Subject", "Position", "FullName")
A4_AT_300_DPI = (2480, 3508)


def load_metadata(document: str) -> dict:
    return json.loads((PAGES_DIR / f"{document}.json").read_text(encoding="utf-8"))


def document_lines(document: str) -> list[str]:
    lines: list[str] = []
    for page in sorted(PAGES_DIR.glob(f"{document}-p*.txt")):
        lines.extend(page.read_text(encoding="utf-8").splitlines())
    return lines


@pytest.mark.parametrize("document", DOCUMENTS)
def test_metadata_matches_ground_truth(document):
    metadata = load_metadata(document)
    lines = document_lines(document)

    for name in REQUIRED_FIELDS:
        assert metadata.get(name), f"{document}.json lacks {name}"
    assert f"Số: {metadata['CodeNumber']}/{metadata['CodeNotation']}" in lines
    issued = date.fromisoformat(metadata["IssuedDate"])
    assert any(f"ngày {issued.day:02d} tháng {issued.month:02d} năm {issued.year}" in line for line in lines)
    assert metadata["OrganName"] in lines
    assert metadata["Subject"] in lines
    assert metadata["TypeName"].upper() in " ".join(lines)
    assert metadata["FullName"] in lines
    assert metadata["PageAmount"] == len(list(PAGES_DIR.glob(f"{document}-p*.png")))


@pytest.mark.parametrize("document", ["giay-phep", "ban-sao-bang"])
def test_owner_is_in_ground_truth(document):
    metadata = load_metadata(document)
    text = "\n".join(document_lines(document))

    assert len(metadata["OwnerIdentity"]) == 12
    assert metadata["OwnerIdentity"] in text
    assert f"Họ và tên: {metadata['OwnerName']}" in text


@pytest.mark.parametrize("page", sorted(PAGES_DIR.glob("*-p*.png")), ids=lambda path: path.stem)
def test_page_is_a4_scan(page):
    with Image.open(page) as image:
        assert image.size == A4_AT_300_DPI
        assert round(image.info["dpi"][0]) == 300
        assert image.mode in ("RGB", "L")
        pixels = np.asarray(image)
    assert (page.with_suffix(".txt")).is_file()
    # Ink covers a few percent of a text page; a blank or black render fails here.
    dark = (pixels.min(axis=-1) if pixels.ndim == 3 else pixels) < 128
    assert 0.005 < dark.mean() < 0.2


@pytest.mark.parametrize("page", ["quyet-dinh-p2", "giay-phep-p1", "ban-sao-bang-p1"])
def test_seal_pages_have_red_ink(page):
    with Image.open(PAGES_DIR / f"{page}.png") as image:
        assert image.mode == "RGB"
        red, green, blue = (channel.astype(int) for channel in np.moveaxis(np.asarray(image), -1, 0))
    seal = (red > 150) & (green < 120) & (blue < 130)
    assert seal.sum() > 5000
