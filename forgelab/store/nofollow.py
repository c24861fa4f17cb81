"""Nothing inside the data directory is reached through a symlink.

A symlink planted there (``mail/alice/new -> /etc``, ``events.jsonl -> ~/.bashrc``) would
make the server write, read or lock whatever it points at. Files are opened with
``O_NOFOLLOW``; directories are checked component by component with ``lstat`` below the
directory the user gave (which may itself be a symlink: that is the user's choice).
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from ..errors import DataDirError

log = logging.getLogger(__name__)


class SymlinkRefused(DataDirError):
    """A path inside the data directory is a symlink; it was not followed."""

    def __init__(self, path):
        super().__init__(errno.ELOOP, f"refusing to follow a symlink at {path}", os.fspath(path))

    def __str__(self) -> str:
        return self.strerror


def refuse(path) -> SymlinkRefused:
    """The error for ``path``, logged once here with the path named."""
    log.warning("refusing to follow a symlink at %s", path)
    return SymlinkRefused(path)


def check(base: Path, path: Path) -> None:
    """Raise SymlinkRefused if ``path`` or any directory between ``base`` and it is a symlink.
    Components that do not exist yet are fine (they will be made as real directories)."""
    current = base
    for part in path.relative_to(base).parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode):
            raise refuse(current)


def open_fd(path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symlink at ``path`` itself (SymlinkRefused instead)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refuse(path) from None
        raise


def read_bytes(path) -> bytes:
    fd = open_fd(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        return f.read()
