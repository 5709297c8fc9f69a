"""Which files in the hot folder are candidates for import, and which capture profile each gets.

Names that clients use while they are still writing are ignored and left
where they are, because the client renames them when it is done:

- names starting with ``.``: hidden files, rsync's ``.NAME.XXXXXX``, ProFTPD's
  ``.in.NAME.`` (HiddenStores), Pure-FTPd's ``.pureftpd-upload.*``, macOS's
  ``._NAME`` and ``.DS_Store``, and sohoa's own ``.NAME.XXXX.part``;
- names starting with ``~$`` (Microsoft Office lock files) or ending with ``~``
  (editor backups);
- the suffixes ``.tmp``, ``.temp``, ``.part``, ``.partial``, ``.crdownload``
  (Chrome), ``.download`` (Safari), ``.filepart`` (WinSCP), ``.swp``;
- ``Thumbs.db`` and ``desktop.ini``, which Windows Explorer writes into folders.

Scanners that save over SMB or FTP (Samba's smbd, vsftpd) write the final
name directly; such files are taken on close-after-write or once they stop
changing (see :mod:`sohoa.hotfolder.watcher`).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

# Subfolders of the hot folder where the daemon moves what it has handled.
DONE_DIR = "done"
REJECTED_DIR = "rejected"
RESERVED_DIRS = frozenset({DONE_DIR, REJECTED_DIR})

TEMPORARY_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".download", ".filepart", ".swp")
SYSTEM_NAMES = frozenset({"thumbs.db", "desktop.ini"})


def is_temporary_name(name: str) -> bool:
    """Return whether ``name`` is a hidden, temporary or system file name that is never imported."""
    lowered = name.lower()
    if name.startswith((".", "~$")) or name.endswith("~"):
        return True
    return lowered.endswith(TEMPORARY_SUFFIXES) or lowered in SYSTEM_NAMES


def classify(path: Path, root: Path, profiles: Collection[str], default_profile: str | None) -> tuple[bool, str | None]:
    """Return whether ``path`` is a candidate for import and, if so, its capture profile.

    A file directly in ``root`` gets ``default_profile``. A file in a first-level
    subfolder named after a configured profile gets that profile. Files in
    ``done/``, ``rejected/``, other subfolders or deeper are not candidates.
    """
    try:
        relative = path.relative_to(root)
    except ValueError:
        return False, None
    parts = relative.parts
    if not parts or is_temporary_name(parts[-1]):
        return False, None
    if len(parts) == 1:
        return True, default_profile
    if len(parts) == 2 and parts[0] not in RESERVED_DIRS and parts[0] in profiles:
        return True, parts[0]
    return False, None
