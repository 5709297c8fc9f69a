#!/usr/bin/env bash
# Extract user-visible messages into sohoa.pot, merge them into the Vietnamese
# catalog and compile it. Needs GNU gettext (xgettext, msgmerge, msgfmt).
# Translate the new or fuzzy entries of the .po file, then run this again.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
locale="$repo/daemon/sohoa/locale"
po="$locale/vi/LC_MESSAGES/sohoa.po"

cd "$repo/daemon"
find sohoa -name '*.py' -print0 | sort -z | xargs -0 \
    xgettext --language=Python --from-code=UTF-8 --keyword=_ --keyword=N_ --keyword=gettext \
        --keyword=ngettext:1,2 --add-comments=TRANSLATORS --sort-by-file \
        --package-name=sohoa --msgid-bugs-address=it@sohoa.invalid \
        --output="$locale/sohoa.pot"

if [[ -f "$po" ]]; then
    msgmerge --quiet --update --backup=none --no-fuzzy-matching "$po" "$locale/sohoa.pot"
else
    msginit --no-translator --locale=vi_VN.UTF-8 --input="$locale/sohoa.pot" --output-file="$po"
fi
msgfmt --check --output-file="${po%.po}.mo" "$po"
untranslated=$(msgattrib --untranslated --no-obsolete "$po" | grep -c "^msgid " || true)
echo "Catalog updated: $po; untranslated entries: $((untranslated > 0 ? untranslated - 1 : 0))"
