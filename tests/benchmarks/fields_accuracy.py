"""Measure field extraction accuracy per field, from OCR output and from exact text.

Documents:

* the sample documents in ``samples/pages/``: each ``NAME.json`` contains the
  true fields of the pages ``NAME-p*.png`` (exact text in ``NAME-p*.txt``);
* generated documents: pages rendered by ``sohoa.testbed.pdf.render_page``
  at 300 dpi in Liberation Serif from a seeded table of fields, laid out as
  an official document is (issuing body, number, place and date, type,
  subject, signer).

For each document the fields are extracted twice with
``sohoa.fields.extract_fields``: from sohoa's OCR of the page images
(``OcrEngine.load(models/)``) and from the exact text, so that OCR errors and
extraction errors can be told apart. A field counts as correct when the
extracted value equals the true one after NFC normalisation and collapsing
spaces, and as "unsure" when the extractor marked it unsure (``sure`` false),
empty or not. A sure but wrong value is the failure that matters: the
pipeline passes sure values on without review.

Run from the repository root::

    PYTHONPATH=daemon /tmp/venv/bin/python tests/benchmarks/fields_accuracy.py [--generated 6]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import unicodedata
from collections import defaultdict
from pathlib import Path

from PIL import Image

from sohoa.config import CHECKOUT_MODELS_DIR
from sohoa.fields import extract_fields
from sohoa.ocr import OcrEngine
from sohoa.testbed.pdf import render_page

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "pages"
FIELDS = (
    "TypeName", "CodeNumber", "CodeNotation", "IssuedDate", "OrganName", "Subject",
    "Position", "FullName", "OwnerName", "OwnerIdentity",
)  # fmt: skip
GENERATED_DPI = 300

ORGANS = ("SỞ GIÁO DỤC VÀ ĐÀO TẠO", "ỦY BAN NHÂN DÂN TỈNH BẮC NINH", "TRƯỜNG THPT CHUYÊN BẮC NINH")
TYPES = (("QUYẾT ĐỊNH", "QĐ"), ("GIẤY CHỨNG NHẬN", "GCN"), ("GIẤY PHÉP", "GP"), ("THÔNG BÁO", "TB"))
SUBJECTS = (
    "Về việc công nhận tốt nghiệp trung học phổ thông năm 2025",
    "Về việc cấp phép tổ chức hoạt động dạy thêm, học thêm",
    "Về việc khen thưởng học sinh giỏi cấp tỉnh năm học 2024-2025",
)
SIGNERS = (("KT. GIÁM ĐỐC", "PHÓ GIÁM ĐỐC", "Nguyễn Văn Hải"), ("GIÁM ĐỐC", None, "Trần Thị Thu Hà"))
OWNERS = (("Lê Minh Tuấn", "027205001122"), ("Đỗ Thị Lan Anh", "027306009876"))


def normalise(value: object) -> str:
    return " ".join(unicodedata.normalize("NFC", str(value or "")).split())


def sample_documents() -> list[tuple[str, dict, list[Path], str]]:
    """Return (name, true fields, page images, exact text) for each sample document."""
    documents = []
    for truth_path in sorted(SAMPLES.glob("*.json")):
        name = truth_path.stem
        pages = sorted(SAMPLES.glob(f"{name}-p*.png"))
        text = "\n".join(page.with_suffix(".txt").read_text(encoding="utf-8") for page in pages)
        documents.append((f"sample:{name}", json.loads(truth_path.read_text(encoding="utf-8")), pages, text))
    return documents


def generated_documents(count: int, folder: Path, seed: int = 7) -> list[tuple[str, dict, list[Path], str]]:
    """Render ``count`` one-page documents with known fields into ``folder``."""
    chooser = random.Random(seed)
    documents = []
    for index in range(count):
        organ = chooser.choice(ORGANS)
        type_name, type_code = chooser.choice(TYPES)
        number = str(chooser.randint(1, 999))
        day, month, year = chooser.randint(1, 28), chooser.randint(1, 12), chooser.choice((2024, 2025))
        subject = chooser.choice(SUBJECTS)
        authority, title, signer = chooser.choice(SIGNERS)
        owner, identity = chooser.choice(OWNERS)
        lines = [
            organ,
            "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
            "Độc lập - Tự do - Hạnh phúc",
            f"Số: {number}/{type_code}-SGDĐT",
            f"Bắc Ninh, ngày {day:02d} tháng {month:02d} năm {year}",
            type_name,
            subject,
            f"Họ và tên: {owner}",
            f"Số định danh cá nhân: {identity}",
            authority,
            *([title] if title else []),
            signer,
        ]
        page = folder / f"generated-{index + 1:02d}.png"
        render_page(page, lines, dpi=GENERATED_DPI, mode="L", line_spacing=1.8)
        truth = {
            "TypeName": type_name.capitalize(),
            "CodeNumber": number,
            "CodeNotation": f"{type_code}-SGDĐT",
            "IssuedDate": f"{year:04d}-{month:02d}-{day:02d}",
            "OrganName": organ,
            "Subject": subject,
            "Position": " ".join(part for part in (authority, title) if part),
            "FullName": signer,
            "OwnerName": owner,
            "OwnerIdentity": identity,
        }
        documents.append((f"generated:{index + 1:02d}", truth, [page], "\n".join(lines)))
    return documents


def score(truth: dict, extracted: dict, tally: dict, source: str) -> None:
    for name in FIELDS:
        if name not in truth:
            continue
        field = extracted.get(name)
        counts = tally[(source, name)]
        counts["total"] += 1
        if field is None or not field.sure:
            counts["unsure"] += 1
        if field is not None and normalise(field.value) == normalise(truth[name]):
            counts["correct"] += 1
        elif field is not None and field.sure:
            counts["sure_wrong"] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generated", type=int, default=6, help="number of generated documents (default: 6)")
    parser.add_argument("--models", type=Path, default=CHECKOUT_MODELS_DIR, help="OCR models folder")
    args = parser.parse_args()

    engine = OcrEngine.load(args.models)
    tally: dict = defaultdict(lambda: defaultdict(int))
    with tempfile.TemporaryDirectory(prefix="sohoa-fields-") as work:
        documents = sample_documents() + generated_documents(args.generated, Path(work))
        for name, truth, pages, exact_text in documents:
            texts = []
            for page in pages:
                with Image.open(page) as image:
                    texts.append(engine.recognize(image.convert("RGB")))
            ocr_text = "\n".join(text.text for text in texts)
            confidences = [line.confidence for text in texts for line in text.lines]
            group = name.split(":")[0]
            score(truth, extract_fields(ocr_text, confidences), tally, f"{group}/ocr")
            score(truth, extract_fields(exact_text), tally, f"{group}/exact")
            print(f"{name}: {len(pages)} page(s)", file=sys.stderr)

    sources = sorted({source for source, _name in tally})
    print("| Field | " + " | ".join(sources) + " |")
    print("|---|" + "---|" * len(sources))
    for field_name in FIELDS:
        cells = []
        for source in sources:
            counts = tally.get((source, field_name))
            if not counts:
                cells.append("-")
                continue
            cells.append(f"{counts['correct']}/{counts['total']} (unsure {counts['unsure']}, sure+wrong {counts['sure_wrong']})")
        print(f"| {field_name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
