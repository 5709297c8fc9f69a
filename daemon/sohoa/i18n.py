"""Translation of user-visible text through gettext.

Everything a user reads (CLI output, the human-readable MQTT status, the mark
stamped on the PDF) goes through :func:`gettext`. Messages are written in
English in the code and translated through the catalog in ``locale/``.
Vietnamese is the default; English is chosen with ``SOHOA_LANG=en``, the
``--lang`` option or ``language = "en"`` in the config file.
"""

from __future__ import annotations

import gettext as _gettext
import os
from pathlib import Path

DOMAIN = "sohoa"
LOCALE_DIR = Path(__file__).parent / "locale"
DEFAULT_LANGUAGE = "vi"
SUPPORTED_LANGUAGES = ("vi", "en")

_translation: _gettext.NullTranslations = _gettext.NullTranslations()
_language = "en"


def set_language(language: str | None = None) -> str:
    """Select the language of user-visible text and return its code.

    ``language`` wins over the ``SOHOA_LANG`` environment variable, which wins
    over the default, Vietnamese. An unsupported code falls back to the default.
    """
    global _translation, _language
    requested = language or os.environ.get("SOHOA_LANG") or DEFAULT_LANGUAGE
    code = requested.split("_")[0].split(".")[0].lower()
    if code not in SUPPORTED_LANGUAGES:
        code = DEFAULT_LANGUAGE
    if code == "en":
        _translation = _gettext.NullTranslations()
    else:
        _translation = _gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=[code], fallback=True)
    _language = code
    return code


def current_language() -> str:
    return _language


def gettext(message: str) -> str:
    """Translate ``message`` into the selected language."""
    return _translation.gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    return _translation.ngettext(singular, plural, count)


def N_(message: str) -> str:
    """Mark ``message`` for extraction into the catalog without translating it now."""
    return message


_ = gettext

set_language()
