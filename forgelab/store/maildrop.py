"""A POP3 session's maildrop: the inbox locked for one session and seen as a numbered snapshot.

The lock is an ``flock`` on ``<user>/.pop3.lock`` (it excludes other processes) plus a
process-wide registry (it excludes other sessions of this process, which flock does not).
Deletions are only marks until ``commit()`` (the POP3 UPDATE state).
"""
from __future__ import annotations

import errno
import fcntl
import os
import threading
import weakref
from pathlib import Path

from . import nofollow
from .crlf import wire_size
from .group_commit import fsync_dir
from .names import WIRE_SIZE, entries, key_of, size_in_name, uid_of

LOCK_FILE = ".pop3.lock"


class MaildropLocked(Exception):
    """Another POP3 session (in this process or another) holds the maildrop."""


class NoSuchMessage(LookupError):
    """A message number outside 1..n of the maildrop snapshot."""


class MessageDeleted(LookupError):
    """A message already marked deleted in this POP3 session."""


# Process-wide registry of held maildrop locks (flock alone also excludes other processes).
_held_locks: set[str] = set()
_held_guard = threading.Lock()


def _release(lock_id: str, fd: int) -> None:
    try:
        os.close(fd)  # closing the descriptor drops the flock
    finally:
        with _held_guard:
            _held_locks.discard(lock_id)


def open_maildrop(user: str, maildir: Path, *, fsync: bool = True) -> "Maildrop":
    """Lock ``maildir`` (``user``'s inbox, which exists) for one POP3 session and snapshot it;
    MaildropLocked if another session holds it."""
    lock_path = maildir / LOCK_FILE
    lock_id = str(lock_path.resolve())
    with _held_guard:
        if lock_id in _held_locks:
            raise MaildropLocked(user)
        fd = nofollow.open_fd(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise MaildropLocked(user) from None
            raise
        _held_locks.add(lock_id)
    return Maildrop(user, maildir, lock_id, fd, fsync=fsync)


class Maildrop:
    """One POP3 session's view of an inbox: a snapshot taken at open, numbered 1..n.

    Deletions are only marks until ``commit()``; ``close()`` releases the lock and keeps
    everything. Created by ``open_maildrop``.
    """

    def __init__(self, user: str, maildir: Path, lock_id: str, fd: int, *, fsync: bool = True):
        self.user = user
        self._maildir = maildir
        self._fsync = fsync
        self._finalizer = weakref.finalize(self, _release, lock_id, fd)
        self._paths: list[Path] = []
        self._keys: list[str] = []
        self._sizes: list[int] = []
        self._deleted: set[int] = set()
        try:
            self._snapshot()
        except BaseException:
            self._finalizer()
            raise
        self._total = sum(self._sizes)
        self._deleted_octets = 0

    def _snapshot(self) -> None:
        cur = self._maildir / "cur"
        for name in os.listdir(self._maildir / "new"):  # new -> cur, as POP3 servers do
            if not name.startswith("."):
                try:
                    os.rename(self._maildir / "new" / name, cur / f"{name}:2,")
                except FileNotFoundError:
                    pass
        for name, path in entries(self._maildir):
            size = size_in_name(name, WIRE_SIZE)
            if size is None:  # a file some other tool put here: measure it once
                try:
                    size = wire_size(nofollow.read_bytes(path))
                except (FileNotFoundError, nofollow.SymlinkRefused):
                    continue
            self._paths.append(path)
            self._keys.append(key_of(name))
            self._sizes.append(size)

    # -- numbering -----------------------------------------------------------------------

    def _index(self, n: int) -> int:
        if self.closed:
            raise ValueError("maildrop is closed")
        if not isinstance(n, int) or not 1 <= n <= len(self._paths):
            raise NoSuchMessage(n)
        if n in self._deleted:
            raise MessageDeleted(n)
        return n - 1

    def __len__(self) -> int:
        return len(self._paths)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def stat(self) -> tuple[int, int]:
        """(messages, octets), both without the messages marked deleted."""
        return len(self._paths) - len(self._deleted), self._total - self._deleted_octets

    def size(self, n: int) -> int:
        """Octets of message ``n`` as RETR sends it (CRLF lines, before dot-stuffing)."""
        return self._sizes[self._index(n)]

    def uid(self, n: int) -> str:
        return uid_of(self._keys[self._index(n)])

    def key(self, n: int) -> str:
        return self._keys[self._index(n)]

    def numbers(self) -> list[int]:
        """Message numbers not marked deleted."""
        return [n for n in range(1, len(self._paths) + 1) if n not in self._deleted]

    def retrieve(self, n: int) -> bytes:
        """The stored bytes of message ``n``; FileNotFoundError if someone removed the file."""
        return nofollow.read_bytes(self._paths[self._index(n)])

    # -- deletion ------------------------------------------------------------------------

    def delete(self, n: int) -> None:
        i = self._index(n)
        self._deleted.add(n)
        self._deleted_octets += self._sizes[i]

    def reset(self) -> None:
        self._deleted.clear()
        self._deleted_octets = 0

    def commit(self) -> tuple[int, int]:
        """Remove the messages marked deleted (POP3 UPDATE state), then close.

        Returns (removed, failed); a file already gone counts as removed.
        """
        if self.closed:
            raise ValueError("maildrop is closed")
        removed = failed = 0
        for n in sorted(self._deleted):
            try:
                self._paths[n - 1].unlink()
                removed += 1
            except FileNotFoundError:
                removed += 1  # already gone is as good as removed
            except OSError:
                failed += 1
        try:
            if removed and self._fsync:
                fsync_dir(self._maildir / "cur")
        finally:
            self.close()
        return removed, failed

    def close(self) -> None:
        """Release the lock; nothing is deleted. Safe to call twice."""
        self._finalizer()

    def __enter__(self) -> "Maildrop":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
