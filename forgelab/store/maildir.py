"""Maildir mail store: one Maildir per user, a Maildir++ quarantine folder and a relay hold.

Layout under ``root``::

    <user>/{tmp,new,cur}/               the inbox
    <user>/.Quarantine/{tmp,new,cur}/   quarantined mail (Maildir++ folder)
    <user>/.pop3.lock                   the POP3 maildrop lock (flock)
    _relay-hold/{tmp,new,cur}/          mail an open relay would have sent; never sent anywhere

File names follow the Maildir convention plus Dovecot's size fields (``names.py``); writes
are flushed together (``group_commit.py``); a POP3 session locks its inbox (``maildrop.py``).

Nothing below ``root`` is reached through a symlink (``forgelab/store/nofollow.py``): folders are
checked with ``lstat`` before each delivery and read, files are opened ``O_NOFOLLOW``; a
symlink is refused with ``SymlinkRefused`` (an OSError: the delivery is answered 451).
"""
from __future__ import annotations

import errno
import itertools
import os
import threading
import time
from pathlib import Path
from typing import Callable

from . import nofollow
from ..lab.directory import NAME_RE
from .crlf import wire_size
from .group_commit import DirSync, WriteSteps, fsync_dir, run_together, unlink_quietly
from .maildrop import Maildrop, open_maildrop
from .names import STORED_SIZE, check_key, entries, key_of, safe_host, size_in_name

FOLDERS = {"inbox": "", "quarantine": ".Quarantine"}
RELAY_HOLD = "_relay-hold"


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
        self._host = safe_host()
        self._created: set[Path] = set()
        self._dir_syncs: dict[str, DirSync] = {}
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
                fsync_dir(parent)
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
            unlink_quietly(path)
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
            unlink_quietly(tmp)
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
                unlink_quietly(path)
            unlink_quietly(tmp)
            raise
        unlink_quietly(tmp)  # the links hold the data; tmp/ leftovers are never read anyway
        if self.fsync:
            yield ("dirs", [f"{os.fspath(maildir)}/new" for maildir in maildirs])
        return name

    def _dir_sync(self, path: str) -> DirSync:
        syncer = self._dir_syncs.get(path)
        if syncer is None:
            with self._dir_syncs_lock:
                syncer = self._dir_syncs.setdefault(path, DirSync(path))
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
        """Run several writes (``delivering`` and the like) to the end at once, sharing their
        flushes; the result of each, or the exception it raised, in order (``group_commit.py``)."""
        return run_together(writes, self._dir_sync)

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
    def _listing(maildir: Path) -> list[tuple[str, int]]:
        out = []
        for name, path in entries(maildir):
            size = size_in_name(name, STORED_SIZE)
            if size is None:
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
            out.append((key_of(name), size))
        return out

    @staticmethod
    def _find(maildir: Path, key: str) -> Path:
        check_key(key)
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

    def read_start_at(self, location, limit: int) -> bytes:
        """At most the first ``limit`` octets at a delivery location (search reads no more)."""
        user, folder, key = location
        maildir = self.relay_dir if user == RELAY_HOLD else self.folder_dir(user, folder)
        fd = nofollow.open_fd(self._find(self._reading(maildir), key), os.O_RDONLY)
        try:
            return os.read(fd, limit)
        finally:
            os.close(fd)

    # -- trainer actions (the web view's delete and release) ---------------------------

    def _located(self, location) -> Path:
        user, folder, key = location
        maildir = self.relay_dir if user == RELAY_HOLD else self.folder_dir(user, folder)
        return self._find(self._reading(maildir), key)

    def delete_at(self, location) -> bool:
        """Remove the copy at a delivery location, durably (its folder fsynced); False if it was gone."""
        try:
            path = self._located(location)
            os.unlink(path)  # unlink never follows a symlink: a link planted here is removed, not its target
        except (KeyError, FileNotFoundError):
            return False
        if self.fsync:
            fsync_dir(path.parent)
        return True

    def release(self, user: str, key: str) -> tuple[str, str, str]:
        """Move ``user``'s quarantined copy ``key`` into the inbox's ``new/`` by one rename, both
        folders fsynced; returns its new location. KeyError when it is gone, FileExistsError if
        the inbox already holds that key."""
        source = self._located((user, "quarantine", key))
        if os.path.islink(source):
            raise nofollow.refuse(source)
        inbox = self.folder_dir(user, "inbox")
        self._created.discard(inbox)  # rare: make sure again that its folders exist
        self._ensure(inbox)
        self._check(inbox, "new")
        target = inbox / "new" / key
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "already in the inbox", str(target))
        os.rename(source, target)
        if self.fsync:
            fsync_dir(target.parent)
            fsync_dir(source.parent)
        return (user, "inbox", key)

    # -- POP3 ----------------------------------------------------------------------------

    def open_maildrop(self, user: str) -> Maildrop:
        """Lock ``user``'s inbox for one POP3 session and snapshot it; MaildropLocked if held."""
        maildir = self.user_dir(user)
        self._ensure(maildir)
        self._check(maildir, "new", "cur")
        return open_maildrop(user, maildir, fsync=self.fsync)
