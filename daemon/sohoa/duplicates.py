"""Rules that mark a newly recognized document as a probable duplicate of one already digitized.

The box never drops or merges a scan because of these rules: it keeps every
document and records the relation (``jobs.duplicate_of`` and
``jobs.duplicate_reason``) for staff to decide. The reasons:

``same_number``
    The number, notation and issue date equal those of an earlier document
    and the recognized texts are near-identical (or too short to compare):
    the same paper was probably scanned twice.
``same_number_different_text``
    The number, notation and issue date match but the texts differ: a
    corrected re-issue or a different paper with a misread number. Staff
    decide whether it replaces the earlier one.
``same_text``
    One of the two documents lacks a complete number, notation and date,
    and the recognized texts are near-identical.

Texts are compared by the Jaccard similarity of their sets of word
shingles (runs of SHINGLE_WORDS consecutive words of the folded text).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sohoa.search import fold, field_value

if TYPE_CHECKING:
    import sqlite_utils

log = logging.getLogger(__name__)

REASON_SAME_NUMBER = "same_number"
REASON_SAME_NUMBER_DIFFERENT_TEXT = "same_number_different_text"
REASON_SAME_TEXT = "same_text"

SHINGLE_WORDS = 3
# Jaccard similarity from which two recognized texts count as the same paper.
# An OCR error in one word changes up to SHINGLE_WORDS shingles. Two readings
# of a 300-word page that differ in 6 words still share 280 of their 316
# distinct shingles (0.89). A corrected re-issue that rewrites one paragraph
# of a short decision falls well below.
# NOTE: chosen from that arithmetic, not measured on repeated scans of real paper.
NEAR_IDENTICAL_SIMILARITY = 0.85
# Texts with fewer shingles than this are too short to compare reliably.
MIN_SHINGLES = 20
# Earlier documents compared by text, chosen by full-text rank among those
# sharing the new text's most distinctive words.
TEXT_CANDIDATES = 20
CANDIDATE_QUERY_WORDS = 16


@dataclass(frozen=True)
class DuplicateMatch:
    """The earlier job a new document probably duplicates, and why."""

    job_id: str
    reason: str
    similarity: float | None


def duplicate_key(fields: dict) -> str | None:
    """Return the normalized number, notation and issue date of a document, or None if one is missing.

    The number loses its leading zeros, the notation is folded (no
    diacritics, lower case, no spaces), and the date is the ISO date the
    field extractor wrote, so "012/QĐ-SGDĐT" and "12/qd-sgddt" give one key.
    """
    number = field_value(fields, "CodeNumber")
    notation = field_value(fields, "CodeNotation")
    issued = field_value(fields, "IssuedDate")
    if not (number and notation and issued):
        return None
    number = number.lstrip("0") or "0"
    notation = "".join(fold(notation).split())
    return f"{number}|{notation}|{issued}"


def shingles(folded_text: str) -> set[str]:
    """Return the set of SHINGLE_WORDS-word runs of a folded text."""
    words = re.findall(r"\w+", folded_text)
    return {" ".join(words[index : index + SHINGLE_WORDS]) for index in range(len(words) - SHINGLE_WORDS + 1)}


def similarity(first: set[str], second: set[str]) -> float | None:
    """Return the Jaccard similarity of two shingle sets, or None if either is too short to compare."""
    if len(first) < MIN_SHINGLES or len(second) < MIN_SHINGLES:
        return None
    return len(first & second) / len(first | second)


def find_duplicate(db: sqlite_utils.Database, job_id: str, fields: dict, text: str) -> DuplicateMatch | None:
    """Return the earlier indexed document that job ``job_id`` probably duplicates, or None.

    Reads the search tables, so call it in the transaction that indexes the
    new document. The job's own row, if already there, is ignored.
    """
    folded = shingles(fold(text))
    key = duplicate_key(fields)
    if key is not None:
        match = _match_by_key(db, job_id, key, folded)
        if match is not None:
            return match
    return _match_by_text(db, job_id, key, fields, folded)


def _match_by_key(db: sqlite_utils.Database, job_id: str, key: str, folded: set[str]) -> DuplicateMatch | None:
    # created_at counts whole seconds, so rowid orders the jobs created within one second.
    rows = list(
        db.query(
            "SELECT d.job_id, d.folded_text FROM search_documents d JOIN jobs ON jobs.id = d.job_id"
            " WHERE d.duplicate_key = ? AND d.job_id != ? ORDER BY jobs.created_at, jobs.rowid",
            [key, job_id],
        )
    )
    if not rows:
        return None
    scores = [(row["job_id"], similarity(folded, shingles(row["folded_text"]))) for row in rows]
    for earlier_id, score in scores:
        if score is None or score >= NEAR_IDENTICAL_SIMILARITY:
            return DuplicateMatch(earlier_id, REASON_SAME_NUMBER, score)
    earliest_id, score = scores[0]
    return DuplicateMatch(earliest_id, REASON_SAME_NUMBER_DIFFERENT_TEXT, score)


def _match_by_text(
    db: sqlite_utils.Database, job_id: str, key: str | None, fields: dict, folded: set[str]
) -> DuplicateMatch | None:
    if len(folded) < MIN_SHINGLES:
        return None
    best: DuplicateMatch | None = None
    for row in _text_candidates(db, job_id, folded):
        if key is not None and row["duplicate_key"] is not None and row["duplicate_key"] != key:
            continue  # both numbered, differently: a form letter, not the same paper
        if _owners_differ(fields, row):
            continue
        score = similarity(folded, shingles(row["folded_text"]))
        if score is not None and score >= NEAR_IDENTICAL_SIMILARITY and (best is None or score > best.similarity):
            best = DuplicateMatch(row["job_id"], REASON_SAME_TEXT, score)
    return best


def _text_candidates(db: sqlite_utils.Database, job_id: str, folded: set[str]) -> list[dict]:
    """Return the earlier documents that best match the new text's longest words, oldest first."""
    words = sorted({word for shingle in folded for word in shingle.split() if len(word) >= 4}, key=lambda w: (-len(w), w))
    if not words:
        return []
    expression = " OR ".join(f'"{word}"' for word in words[:CANDIDATE_QUERY_WORDS])
    return list(
        db.query(
            "SELECT d.job_id, d.folded_text, d.duplicate_key, d.owner_identity FROM ("
            "  SELECT rowid AS document_rowid, bm25(search_index) AS score FROM search_index"
            "  WHERE search_index MATCH ? ORDER BY score LIMIT ?"
            ") AS hits JOIN search_documents d ON d.rowid = hits.document_rowid JOIN jobs ON jobs.id = d.job_id"
            " WHERE d.job_id != ? ORDER BY jobs.created_at, jobs.rowid",
            [expression, TEXT_CANDIDATES + 1, job_id],
        )
    )


def _owners_differ(fields: dict, row: dict) -> bool:
    """Tell whether both documents name an owner identity number and the numbers differ."""
    identity = field_value(fields, "OwnerIdentity")
    return identity is not None and row["owner_identity"] is not None and identity != row["owner_identity"]
