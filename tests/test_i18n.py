"""The Vietnamese catalog covers every user-visible message, and the compiled
catalog shipped in the package matches its source."""

from __future__ import annotations

import gettext
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from sohoa import i18n
from sohoa.errors import ConfigError

PACKAGE = Path(i18n.__file__).parent
PO_PATH = PACKAGE / "locale" / "vi" / "LC_MESSAGES" / "sohoa.po"
MO_PATH = PO_PATH.with_suffix(".mo")
KEYWORDS = {"_": None, "N_": None, "gettext": None, "ngettext": (1, 2)}


def code_messages() -> dict[str, str]:
    found = {}
    for filename, _lineno, message, _comments, _context in extract_from_dir(
        PACKAGE, method_map=[("**.py", "python")], keywords=KEYWORDS
    ):
        msgid = message[0] if isinstance(message, tuple) else message
        if msgid:
            found.setdefault(msgid, filename)
    return found


def read_catalog():
    with open(PO_PATH, "rb") as handle:
        return read_po(handle)


def test_every_message_has_vietnamese_translation():
    catalog = read_catalog()
    missing = []
    for msgid, filename in sorted(code_messages().items()):
        entry = catalog.get(msgid)
        if entry is None or not entry.string or entry.fuzzy:
            missing.append(f"{filename}: {msgid!r}")
    assert not missing, "untranslated messages (run tools/update-translations.sh):\n" + "\n".join(missing)


def test_compiled_catalog_matches_source():
    catalog = read_catalog()
    with open(MO_PATH, "rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    stale = [
        entry.id
        for entry in catalog
        if entry.id and entry.string and not entry.fuzzy and isinstance(entry.id, str)
        and compiled.gettext(entry.id) != entry.string
    ]
    assert not stale, f"sohoa.mo is older than sohoa.po for {len(stale)} messages; run tools/update-translations.sh"


def test_placeholders_kept_in_translation():
    catalog = read_catalog()
    import string

    formatter = string.Formatter()
    broken = []
    for entry in catalog:
        if not entry.id or not entry.string or not isinstance(entry.id, str):
            continue
        wanted = {name for _, name, _, _ in formatter.parse(entry.id) if name}
        got = {name for _, name, _, _ in formatter.parse(entry.string) if name}
        if wanted != got:
            broken.append(f"{entry.id!r}: {sorted(wanted)} != {sorted(got)}")
    assert not broken, "\n".join(broken)


def test_english_available():
    i18n.set_language("en")
    error = ConfigError("Configuration file not found: {path}", path="x.toml")
    assert error.user_message() == "Configuration file not found: x.toml"


def test_vietnamese_default(monkeypatch):
    monkeypatch.delenv("SOHOA_LANG", raising=False)
    assert i18n.set_language() == "vi"
    assert i18n.gettext("Scanning.") != "Scanning."
