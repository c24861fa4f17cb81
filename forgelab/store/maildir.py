"""Maildir mail store: one Maildir per user, a Maildir++ quarantine folder and a relay hold.

Layout under ``root``::

    <user>/{tmp,new,cur}/               the inbox
    <user>/.Quarantine/{tmp,new,cur}/   quarantined mail (Maildir++ folder)
    <user>/.pop3.lock                   the POP3 maildrop lock (flock)
    _relay-hold/{tmp,new,cur}/          mail an open relay would have sent; never sent anywhere

File names follow the Maildir convention plus Dovecot's size fields, so a listing needs no
stat and the stdlib ``mailbox.Maildir`` reads the same folders::

    <sec>.M<usec>P<pid>Q<counter>.<host>,S=<stored octets>,W=<POP3 wire octets>[:2,<flags>]

The key of a message is its file name without the ``:2,...`` info part.

Nothing below ``root`` is reached through a symlink (``forgelab/nofollow.py``): folders are
checked with ``lstat`` before each delivery and read, files are opened ``O_NOFOLLOW``; a
symlink is refused with ``SymlinkRefused`` (an OSError: the delivery is answered 451).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import os
import re
import socket
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, Generator

from .. import nofollow
from ..directory import NAME_RE
from .crlf import wire_size

FOLDERS = {"inbox": "", "quarantine": ".Quarantine"}
RELAY_HOLD = "_relay-hold"
LOCK_FILE = ".pop3.lock"

_NAME = re.compile(r"^(\d+)\.M(\d+)P(\d+)Q(\d+)\.")
_SIZE = re.compile(r",S=(\d+)")
_WIRE = re.compile(r",W=(\d+)")
_UID_OK = re.compile(r"^[\x21-\x7e]{1,70}$")

# What a write yields: ("file", fd) or ("dirs", [paths]) to flush; what it returns at the end.
WriteSteps = Generator[tuple, None, object]


class MaildropLocked(Exception):
    """Another POP3 session (in this process or another) holds the maildrop."""


class NoSuchMessage(LookupError):
    """A message number outside 1..n of the maildrop snapshot."""


class MessageDeleted(LookupError):
    """A message already marked deleted in this POP3 session."""


def _safe_host() -> str:
    # Maildir names split on "." "," ":" "/"; keep the host part plain and short.
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])
    return host[:24] or "localhost"


def order_key(name: str) -> tuple:
    """Delivery order of a Maildir file name: time, microseconds, counter, then the name."""
    m = _NAME.match(name)
    if m:
        return (int(m[1]), int(m[2]), int(m[4]), name)
    digits = re.match(r"\d*", name)[0]
    return (int(digits or 0), 0, 0, name)


def _key_of(name: str) -> str:
    return name.split(":", 1)[0]


def _size_in_name(name: str, pattern: re.Pattern) -> int | None:
    m = pattern.search(_key_of(name))
    return int(m[1]) if m else None


def uid_of(key: str) -> str:
    """A stable POP3 unique-id (RFC 1939 UIDL) for a maildir key: printable, at most 70 chars."""
    base = key.split(",", 1)[0]
    return base if _UID_OK.match(base) else hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()


def _check_key(key: str) -> str:
    if not key or "/" in key or "\0" in key or key.startswith("."):
        raise ValueError(f"invalid message key {key!r}")
    return key


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DirSync:
    """Group commit for one directory: an fsync that starts after my rename makes it durable,
    so concurrent deliveries share one fsync instead of queueing one each. No lock is held
    while the fsync runs."""

    def __init__(self, path: str):
        self.path = path
        self._cond = threading.Condition()
        self._started = 0  # generation of the last fsync begun
        self._done = 0     # generation of the last fsync that succeeded
        self._running = False

    def sync(self) -> None:
        with self._cond:
            need = self._started + 1  # one running now began before my rename: it does not count
            while self._done < need:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                mine = self._started
                self._cond.release()
                try:
                    _fsync_dir(self.path)
                except BaseException:
                    with self._cond:
                        self._running = False
                        self._cond.notify_all()  # a waiter retries with its own fsync
                    raise
                finally:
                    self._cond.acquire()
                self._running = False
                self._done = max(self._done, mine)
                self._cond.notify_all()


# Process-wide registry of held maildrop locks (flock alone also excludes other processes).
_held_locks: set[str] = set()
_held_guard = threading.Lock()


def _release(lock_id: str, fd: int) -> None:
    try:
        os.close(fd)  # closing the descriptor drops the flock
    finally:
        with _held_guard:
            _held_locks.discard(lock_id)


class MailStore:
    """Durable Maildir delivery and reading; see the module docstring for the layout.

    :param root: the directory holding every user's Maildir.
    :param fsync: flush files and directories to disk before a delivery returns; only
        tests with thousands of messages turn it off.
    """

    def __init__(self, root: str | Path, *, fsync: bool = True):
        self.root = Path(root)
        self.fsync = fsync
        self._counter = itertools.count(1)
        self._counter_lock = threading.Lock()
        self._host = _safe_host()
        self._created: set[Path] = set()
        self._dir_syncs: dict[str, _DirSync] = {}
        self._dir_syncs_lock = threading.Lock()
        self.root.mkdir(parents=True, exist_ok=True)

    # -- paths ---------------------------------------------------------------------------

    def user_dir(self, user: str) -> Path:
        if not isinstance(user, str) or not NAME_RE.match(user) or ".." in user:
            raise ValueError(f"invalid user name {user!r}")
        return self.root / user

    def folder_dir(self, user: str, folder: str = "inbox") -> Path:
        if folder not in FOLDERS:
            raise ValueError(f"unknown folder {folder!r} (use 'inbox' or 'quarantine')")
        base = self.user_dir(user)
        return base / FOLDERS[folder] if FOLDERS[folder] else base

    @property
    def relay_dir(self) -> Path:
        return self.root / RELAY_HOLD

    def users(self) -> list[str]:
        """Names of users that have a Maildir (have had mail or a POP3 login)."""
        return sorted(p.name for p in self.root.iterdir()
                      if NAME_RE.match(p.name) and p.is_dir() and not p.is_symlink())

    def _check(self, maildir: Path, *parts: str) -> None:
        """SymlinkRefused if the maildir, or one of its ``parts``, or a folder between, is a symlink."""
        for part in parts:
            nofollow.check(self.root, maildir / part)

    def _make_dirs(self, path: Path) -> None:
        """``path`` and the folders above it up to ``root``, made one by one, none a symlink."""
        current = self.root
        for part in path.relative_to(self.root).parts:
            current = current / part
            try:
                current.mkdir(exist_ok=True)
            except FileExistsError:
                pass  # a file or a link in its place: lstat says which
            if not os.path.isdir(current) or os.path.islink(current):
                raise nofollow.refuse(current) if os.path.islink(current) else NotADirectoryError(
                    errno.ENOTDIR, "not a directory", str(current))

    def _ensure(self, maildir: Path, subfolder: bool = False) -> None:
        if maildir in self._created:
            return
        for part in ("tmp", "new", "cur"):
            self._make_dirs(maildir / part)
        if subfolder:  # Maildir++ marks a folder with this empty file
            os.close(nofollow.open_fd(maildir / "maildirfolder", os.O_WRONLY | os.O_CREAT))
        if self.fsync:
            for parent in {maildir, maildir.parent, self.root}:
                _fsync_dir(parent)
        self._created.add(maildir)

    # -- writing -------------------------------------------------------------------------

    def _unique_name(self, data: bytes) -> str:
        with self._counter_lock:
            counter = next(self._counter)
        now = time.time_ns()
        sec, usec = divmod(now // 1000, 1_000_000)
        return (f"{sec}.M{usec:06d}P{os.getpid()}Q{counter}.{self._host}"
                f",S={len(data)},W={wire_size(data)}")

    # A write is a generator ("steps"): it does the file-system work itself and yields at each
    # flush it needs before it may go on, ("file", fd) or ("dirs", [paths]); ``run_together``
    # does those flushes, for several writes at once when it is given several.

    def _write_tmp(self, path: str, data: bytes) -> WriteSteps:
        """Create ``path`` with ``data``, flushed to disk when fsync is on; nothing is left on failure."""
        fd = nofollow.open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:  # plain os.write: no buffered file object for one write
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if self.fsync:
                    yield ("file", fd)
            finally:
                os.close(fd)
        except BaseException:
            _unlink_quietly(path)
            raise

    def _write(self, maildir: Path, data: bytes, name: str | None = None) -> WriteSteps:
        name = name or self._unique_name(data)
        self._check(maildir, "tmp", "new")  # every time: a folder may have been swapped for a link
        base = os.fspath(maildir)
        tmp, new = f"{base}/tmp/{name}", f"{base}/new/{name}"
        yield from self._write_tmp(tmp, data)
        try:
            os.rename(tmp, new)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        if self.fsync:
            yield ("dirs", [f"{base}/new"])
        return name

    def _write_linked(self, maildirs: list[Path], data: bytes) -> WriteSteps:
        """One file, written and flushed once, hard-linked into every maildir's new/; returns its name.

        A maildir the link cannot reach (another file system) gets a copy of its own. Each
        new/ is fsynced before this returns, so every copy is on disk. On failure none is left.
        """
        name = self._unique_name(data)
        self._check(maildirs[0], "tmp")
        for maildir in maildirs:
            self._check(maildir, "new")
        first = os.fspath(maildirs[0])
        tmp = f"{first}/tmp/{name}"
        yield from self._write_tmp(tmp, data)
        placed: list[str] = []
        try:
            for maildir in maildirs:
                new = f"{os.fspath(maildir)}/new/{name}"
                try:
                    os.link(tmp, new)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
                        raise
                    yield from self._write(maildir, data, name)  # no hard link here: a copy, flushed on its own
                placed.append(new)
        except BaseException:
            for path in placed:
                _unlink_quietly(path)
            _unlink_quietly(tmp)
            raise
        _unlink_quietly(tmp)  # the links hold the data; tmp/ leftovers are never read anyway
        if self.fsync:
            yield ("dirs", [f"{os.fspath(maildir)}/new" for maildir in maildirs])
        return name

    def _dir_sync(self, path: str) -> _DirSync:
        syncer = self._dir_syncs.get(path)
        if syncer is None:
            with self._dir_syncs_lock:
                syncer = self._dir_syncs.setdefault(path, _DirSync(path))
        return syncer

    def _into(self, maildirs: list[Path], subfolder: bool, write: Callable[[], WriteSteps]) -> WriteSteps:
        """``write()``'s steps once the maildirs exist; again, after making them anew, if one
        was removed behind our back."""
        for attempt in (1, 2):
            for maildir in maildirs:
                self._ensure(maildir.parent if subfolder else maildir)
                self._ensure(maildir, subfolder)
            try:
                return (yield from write())
            except FileNotFoundError:
                if attempt == 2:
                    raise
                for maildir in maildirs:
                    self._created.difference_update({maildir, maildir.parent})
        raise AssertionError("unreachable")

    def _store(self, maildir: Path, data: bytes, subfolder: bool = False) -> WriteSteps:
        data = bytes(data)
        return self._into([maildir], subfolder, lambda: self._write(maildir, data))

    def run_together(self, writes: list[WriteSteps]) -> list:
        """Run several writes (``delivering`` and the like) to the end at once; the result of
        each, or the exception it raised, in order.

        Their flushes are shared: every file is written before the first is fsynced, so the
        file system can commit them together, and each directory is fsynced once for all of
        them. Eight messages stored this way cost about a third less system CPU each than one
        at a time (docs/performance.md)."""
        results: list = [None] * len(writes)
        waiting: dict[int, tuple] = {}

        def advance(i: int, error: BaseException | None = None) -> None:
            try:
                waiting[i] = writes[i].throw(error) if error is not None else writes[i].send(None)
            except StopIteration as done:
                results[i] = done.value
            except Exception as exc:
                results[i] = exc

        for i in range(len(writes)):
            advance(i)
        while waiting:
            now, waiting = waiting, {}
            errors: dict[int, OSError] = {}
            for i, (kind, what) in now.items():
                if kind == "file":
                    try:
                        os.fsync(what)
                    except OSError as exc:
                        errors[i] = exc
            failed_dirs: dict[str, OSError] = {}
            for path in dict.fromkeys(p for kind, what in now.values() if kind == "dirs" for p in what):
                try:
                    self._dir_sync(path).sync()
                except OSError as exc:
                    failed_dirs[path] = exc
            for i, (kind, what) in now.items():
                error = errors.get(i) if kind == "file" else next((failed_dirs[p] for p in what if p in failed_dirs), None)
                advance(i, error)
        return results

    def run(self, write: WriteSteps):
        """Run one write to the end; its result (or it raises)."""
        (result,) = self.run_together([write])
        if isinstance(result, BaseException):
            raise result
        return result

    def delivering(self, user: str, data: bytes, folder: str = "inbox") -> WriteSteps:
        """``deliver`` as steps, for ``run_together``: returns the key."""
        return self._store(self.folder_dir(user, folder), data, subfolder=folder != "inbox")

    def deliver(self, user: str, data: bytes, folder: str = "inbox") -> str:
        """Store ``data`` for ``user``; on return it is on disk in ``new/``. Returns its key."""
        return self.run(self.delivering(user, data, folder))

    def delivering_many(self, users: list[str], data: bytes, folder: str = "inbox") -> WriteSteps:
        """``deliver_many`` as steps, for ``run_together``: returns the keys."""
        users = list(users)
        if len(users) <= 1:
            keys = []
            for user in users:
                keys.append((yield from self.delivering(user, data, folder)))
            return keys
        maildirs = list(dict.fromkeys(self.folder_dir(user, folder) for user in users))  # names checked first
        data = bytes(data)
        name = yield from self._into(maildirs, folder != "inbox", lambda: self._write_linked(maildirs, data))
        return [name] * len(users)

    def deliver_many(self, users: list[str], data: bytes, folder: str = "inbox") -> list[str]:
        """Store the same ``data`` for every user in ``users``; the key of each copy, in order.

        The message is written and flushed once and hard-linked into each user's ``new/``;
        on return every copy is on disk, as with ``deliver``. Either every user gets it or
        (on an error) none does.
        """
        return self.run(self.delivering_many(users, data, folder))

    def holding_relay(self, data: bytes) -> WriteSteps:
        """``hold_relay`` as steps, for ``run_together``: returns the key."""
        return self._store(self.relay_dir, data)

    def hold_relay(self, data: bytes) -> str:
        """Keep mail an open relay would have sent to a remote domain (it is never sent)."""
        return self.run(self.holding_relay(data))

    # -- reading -------------------------------------------------------------------------

    @staticmethod
    def _entries(maildir: Path) -> list[tuple[str, Path]]:
        """(name, path) of every message in new/ and cur/, in delivery order."""
        found = []
        for part in ("new", "cur"):
            try:
                names = os.listdir(maildir / part)
            except FileNotFoundError:
                continue
            found.extend((n, maildir / part / n) for n in names if not n.startswith("."))
        found.sort(key=lambda e: order_key(e[0]))
        return found

    @staticmethod
    def _listing(maildir: Path) -> list[tuple[str, int]]:
        out = []
        for name, path in MailStore._entries(maildir):
            size = _size_in_name(name, _SIZE)
            if size is None:
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
            out.append((_key_of(name), size))
        return out

    @staticmethod
    def _find(maildir: Path, key: str) -> Path:
        _check_key(key)
        for candidate in (maildir / "new" / key, maildir / "cur" / f"{key}:2,"):
            if candidate.is_file():
                return candidate
        prefix = key + ":"
        try:
            for name in os.listdir(maildir / "cur"):
                if name == key or name.startswith(prefix):
                    return maildir / "cur" / name
        except FileNotFoundError:
            pass
        raise KeyError(key)

    def _reading(self, maildir: Path) -> Path:
        self._check(maildir, "new", "cur")
        return maildir

    def list(self, user: str, folder: str = "inbox") -> list[tuple[str, int]]:
        """(key, stored octets) of every message in the folder, in delivery order."""
        return self._listing(self._reading(self.folder_dir(user, folder)))

    def read(self, user: str, folder: str, key: str) -> bytes:
        """The stored bytes of one message; KeyError when it is gone."""
        return nofollow.read_bytes(self._find(self._reading(self.folder_dir(user, folder)), key))

    def list_relay(self) -> list[tuple[str, int]]:
        return self._listing(self._reading(self.relay_dir))

    def read_relay(self, key: str) -> bytes:
        return nofollow.read_bytes(self._find(self._reading(self.relay_dir), key))

    def read_at(self, location) -> bytes:
        """The bytes at a delivery location ``(user, folder, key)`` as the pipeline reports them,
        the relay hold's included; KeyError when the message is gone."""
        user, folder, key = location
        return self.read_relay(key) if user == RELAY_HOLD else self.read(user, folder, key)

    # -- POP3 ----------------------------------------------------------------------------

    def open_maildrop(self, user: str) -> "Maildrop":
        """Lock ``user``'s inbox for one POP3 session and snapshot it; MaildropLocked if held."""
        maildir = self.user_dir(user)
        self._ensure(maildir)
        self._check(maildir, "new", "cur")
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
        return Maildrop(user, maildir, lock_id, fd, fsync=self.fsync)


class Maildrop:
    """One POP3 session's view of an inbox: a snapshot taken at open, numbered 1..n.

    Deletions are only marks until ``commit()``; ``close()`` releases the lock and keeps
    everything. Created by ``MailStore.open_maildrop``.
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
        for name, path in MailStore._entries(self._maildir):
            size = _size_in_name(name, _WIRE)
            if size is None:  # a file some other tool put here: measure it once
                try:
                    size = wire_size(nofollow.read_bytes(path))
                except (FileNotFoundError, nofollow.SymlinkRefused):
                    continue
            self._paths.append(path)
            self._keys.append(_key_of(name))
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
                _fsync_dir(self._maildir / "cur")
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
