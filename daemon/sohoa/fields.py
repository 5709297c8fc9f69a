"""Extraction of a document's key fields from its recognized text.

Fields are named as the national metadata standard for digitized documents
names them (TypeName, CodeNumber, CodeNotation, IssuedDate, OrganName,
Subject; signer Position and FullName). Each field carries a confidence; a
field that cannot be found is reported as absent with ``sure = False``, never
guessed.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from datetime import date

# Document types of administrative procedure results, with the abbreviation
# used in DocCode and in the notation (QĐ decision, GP licence, ...).
DOCUMENT_TYPES: tuple[tuple[str, str], ...] = (
    ("QUYẾT ĐỊNH", "QĐ"),
    ("GIẤY PHÉP", "GP"),
    ("GIẤY CHỨNG NHẬN", "GCN"),
    ("CHỨNG CHỈ", "CC"),
    ("BẰNG TỐT NGHIỆP", "VB"),
    ("BẢN SAO BẰNG TỐT NGHIỆP", "VB"),
    ("BẰNG", "VB"),
    ("CÔNG VĂN", "CV"),
    ("THÔNG BÁO", "TB"),
    ("GIẤY XÁC NHẬN", "GXN"),
)
# Abbreviation used in DocCode when the type could not be recognized.
UNKNOWN_TYPE_CODE = "KHAC"

SIGNER_AUTHORITIES = ("TM.", "KT.", "TL.", "Q.", "TUQ.")
# The document's own number opens its line ("Số: 15/QĐ-BNV"); a number cited in
# the body ("... Quyết định số 25/2021/QĐ-UBND ...") does not.
_NUMBER = re.compile(r"^\s*Số\s*[:.]?\s*(\d{1,6})\s*/\s*([0-9A-ZĐ][0-9A-ZĐa-zđ.\-/]*)")
_DATE = re.compile(r"ngày\s+(\d{1,2})\s+tháng\s+(\d{1,2})\s+năm\s+(\d{4})", re.IGNORECASE)
_SUBJECT = re.compile(r"^\s*(V/v|Về việc)\b.*", re.IGNORECASE)
# Citizen identity numbers have 12 digits; the old identity cards had 9.
_ID_NUMBER = re.compile(r"(?:CCCD|CMND|[Ss]ố định danh|[Ss]ố căn cước)[^0-9]{0,30}(\d{12}|\d{9})(?!\d)")
_OWNER = re.compile(r"(?:[Hh]ọ và tên|[Hh]ọ tên)\s*[:.]?\s*(.+)")


@dataclass(frozen=True)
class Field:
    value: str | None
    confidence: float
    sure: bool


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _field(value: str | None, confidence: float, threshold: float = 0.8) -> Field:
    if value is None:
        return Field(None, 0.0, False)
    return Field(value.strip(), round(confidence, 3), confidence >= threshold)


def _find_type(lines: list[str]) -> tuple[str | None, str]:
    for line in lines:
        upper = line.strip().upper()
        for name, code in DOCUMENT_TYPES:
            if upper == name or upper.startswith(name + " "):
                return name, code
    return None, UNKNOWN_TYPE_CODE


def _find_organ(lines: list[str], number_index: int | None) -> str | None:
    """Return the issuing body: the last capitalised line above "Số:" that is not the national motto."""
    if number_index is None:
        return None
    candidates = []
    for line in lines[:number_index]:
        text = line.strip()
        if not text or "CỘNG HÒA" in text.upper() or "ĐỘC LẬP" in text.upper():
            continue
        if text.upper() == text and any(ch.isalpha() for ch in text):
            candidates.append(text)
    return candidates[-1] if candidates else None


def _find_signer(lines: list[str]) -> tuple[str | None, str | None]:
    for index, line in enumerate(lines):
        text = line.strip()
        if text.upper().startswith(SIGNER_AUTHORITIES) or text.upper() in {"GIÁM ĐỐC", "CHỦ TỊCH", "HIỆU TRƯỞNG"}:
            position_lines = [text]
            following = [item.strip() for item in lines[index + 1 :] if item.strip()]
            if following and following[0].upper() == following[0]:
                position_lines.append(following[0])
                following = following[1:]
            name = next((item for item in reversed(following) if _looks_like_name(item)), None)
            return " ".join(position_lines), name
    return None, None


def _looks_like_name(text: str) -> bool:
    words = text.split()
    return 2 <= len(words) <= 6 and all(word[:1].isupper() and word[1:].islower() for word in words)


def extract_fields(text: str, line_confidences: list[float] | None = None) -> dict[str, Field]:
    """Extract the key fields from the recognized text of a document (all pages, in reading order)."""
    lines = [_nfc(line) for line in text.splitlines()]
    mean_confidence = sum(line_confidences) / len(line_confidences) if line_confidences else 0.9
    fields: dict[str, Field] = {}

    type_name, _code = _find_type(lines)
    fields["TypeName"] = _field(type_name.capitalize() if type_name else None, mean_confidence)

    number_index = None
    number_match = None
    for index, line in enumerate(lines):
        number_match = _NUMBER.match(line)
        if number_match:
            number_index = index
            break
    if number_match:
        fields["CodeNumber"] = _field(number_match.group(1), mean_confidence)
        fields["CodeNotation"] = _field(number_match.group(2).upper().rstrip(".,;"), mean_confidence)
    else:
        fields["CodeNumber"] = _field(None, 0)
        fields["CodeNotation"] = _field(None, 0)

    date_match = _DATE.search("\n".join(lines[: (number_index or 0) + 4]))
    issued = None
    if date_match:
        day, month, year = (int(part) for part in date_match.groups())
        try:
            issued = date(year, month, day).isoformat()
        except ValueError:
            issued = None
    fields["IssuedDate"] = _field(issued, mean_confidence)
    fields["OrganName"] = _field(_find_organ(lines, number_index), mean_confidence * 0.95)

    subject = next((line.strip() for line in lines if _SUBJECT.match(line)), None)
    if subject is None and type_name:
        type_index = next(i for i, line in enumerate(lines) if line.strip().upper().startswith(type_name))
        following = [line.strip() for line in lines[type_index + 1 : type_index + 3] if line.strip()]
        subject = following[0] if following else None
    fields["Subject"] = _field(subject, mean_confidence * 0.9)

    position, full_name = _find_signer(lines)
    fields["Position"] = _field(position, mean_confidence * 0.9)
    fields["FullName"] = _field(full_name, mean_confidence * 0.85)

    owner = next((m.group(1) for line in lines if (m := _OWNER.search(line))), None)
    fields["OwnerName"] = _field(owner, mean_confidence * 0.9)
    id_match = _ID_NUMBER.search("\n".join(lines))
    fields["OwnerIdentity"] = _field(id_match.group(1) if id_match else None, mean_confidence)
    return fields


def type_code(fields: dict[str, Field]) -> str:
    """Return the DocCode abbreviation of the recognized document type."""
    name = fields.get("TypeName")
    if name is None or name.value is None:
        return UNKNOWN_TYPE_CODE
    _, code = _find_type([name.value])
    return code


def fields_to_json(fields: dict[str, Field]) -> dict[str, dict]:
    return {name: asdict(field) for name, field in fields.items()}


def fields_from_json(data: dict[str, dict]) -> dict[str, Field]:
    return {name: Field(**value) for name, value in data.items()}
