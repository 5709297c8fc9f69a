"""Durable file writes: temporary file, fsync, rename, fsync of the folder."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    """Flush the directory entry of ``path`` (a folder) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(target: Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``target``; on success, make it ``target`` durably.

    The temporary name starts with ``.`` and ends with ``.part`` so that a crash
    leaves a file that start-up recovery recognises and removes. On an exception
    the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, target)
        fsync_dir(target.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_atomic(target: Path, data: bytes) -> None:
    with atomic_writer(target) as handle:
        handle.write(data)


def write_atomic_with(target: Path, write: Callable[[Path], None], suffix: str = "") -> None:
    """Let ``write`` produce a file at a temporary path, then move it to ``target`` durably.

    For libraries that insist on writing to a path themselves (Pillow, pikepdf).
    ``suffix`` keeps the extension that some of them use to pick a format.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f"{suffix}.part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        write(tmp_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    replace_durably(tmp_path, target)


def replace_durably(temporary: Path, target: Path) -> None:
    """Move the finished file ``temporary`` to ``target`` in the same folder, durably; remove it if that fails.

    For files a child process wrote (pdftoppm), as :func:`write_atomic_with`
    does for files written in this process.
    """
    try:
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        fsync_dir(Path(target).parent)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
