"""The spool: big messages' text in files while DATA goes on, and how much of it a process
may hold in memory at once.

The SMTP core keeps at most ``SmtpLimits.spool_threshold`` octets of a message; past that it
hands the text out in parts (``MessageText``), which the session writes to a ``SpoolFile``
under ``DATA/spool/``. At the end of DATA the whole text is read back for the defences and
the store, which need it in memory: a ``MemoryBudget`` bounds how much text of big messages
(spooled or not) the sessions of one process hold at once (a session waits for room,
reading nothing meanwhile).

Files are created 0600 with O_EXCL and O_NOFOLLOW in a 0700 directory that is not a
symlink, and removed when the message ends, when its session ends and, for leftovers of a
process that died, by ``Spool.clear()`` when the server starts.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import weakref
from pathlib import Path

from . import nofollow

log = logging.getLogger(__name__)

# Octets of message text one process's sessions hold at once at the ends of DATA, where the
# defences and the store need it whole (and make several copies: about 7x for a 9 MB message).
# A message bigger than all of it takes all of it, alone. The CPU work is serial anyway (GIL).
MEMORY_BUDGET = 16 * 1024 * 1024
# Messages below this take no room: the fast path of ordinary mail (1-100 KB) never waits.
BUDGET_FLOOR = 256 * 1024
SUFFIX = ".spool"


class MemoryBudget:
    """Octets of big messages' text held in memory, for every session of a process: ``take``
    never waits. Messages under ``floor`` octets do not ask."""

    def __init__(self, octets: int = MEMORY_BUDGET, floor: int = BUDGET_FLOOR):
        self.octets = octets
        self.floor = floor
        self._free = octets
        self._lock = threading.Lock()

    def take(self, size: int) -> int:
        """Room for a message of ``size`` octets: what was taken (give it back), 0 if not free now."""
        need = max(min(size, self.octets), 1)
        with self._lock:
            if self._free < need:
                return 0
            self._free -= need
        return need

    def give(self, taken: int) -> None:
        with self._lock:
            self._free += taken

    @property
    def free(self) -> int:
        with self._lock:
            return self._free


class Spool:
    """The spool directory of a data directory, and the memory budget of this process."""

    def __init__(self, directory: str | Path, budget: MemoryBudget | None = None):
        self.directory = Path(directory)
        self.budget = budget or MemoryBudget()
        self._counter = itertools.count(1)

    def _open_dir(self) -> int:
        """The directory (made 0700 if missing), never through a symlink."""
        try:
            os.mkdir(self.directory, 0o700)
        except FileExistsError:
            pass
        try:
            fd = nofollow.open_fd(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except NotADirectoryError:  # what O_NOFOLLOW with O_DIRECTORY says of a symlink
            if self.directory.is_symlink():
                raise nofollow.refuse(self.directory) from None
            raise
        return fd

    def create(self) -> "SpoolFile":
        """A new, empty spool file (0600) for one message."""
        dir_fd = self._open_dir()
        name = f"{os.getpid()}.{next(self._counter)}.{os.urandom(4).hex()}{SUFFIX}"
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dir_fd)  # a new name in a directory opened without following a link
        except BaseException:
            os.close(dir_fd)
            raise
        return SpoolFile(self.directory / name, name, fd, dir_fd)

    def clear(self) -> int:
        """Remove every spool file: leftovers of a process that died. Only while no session of this
        data directory runs (``Forgelab`` calls it before its servers and workers start)."""
        if not os.path.lexists(self.directory):
            return 0
        dir_fd = self._open_dir()
        removed = 0
        try:
            for entry in os.scandir(dir_fd):
                if entry.name.endswith(SUFFIX) and not entry.is_dir(follow_symlinks=False):
                    try:
                        os.unlink(entry.name, dir_fd=dir_fd)
                        removed += 1
                    except FileNotFoundError:
                        pass
        finally:
            os.close(dir_fd)
        if removed:
            log.warning("spool: removed %d file(s) left by a server that stopped in the middle of DATA", removed)
        return removed


class SpoolFile:
    """One message's text as it arrives; removed by ``discard()`` (or when it is garbage)."""

    def __init__(self, path: Path, name: str, fd: int, dir_fd: int):
        self.path = path
        self.size = 0
        self._fd = fd
        self._finalizer = weakref.finalize(self, _remove, name, fd, dir_fd)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self.size += len(data)

    def read(self) -> bytes:
        """The whole text written so far, in one piece."""
        parts, offset = [b""], 0
        while offset < self.size:
            part = os.pread(self._fd, self.size - offset, offset)
            if not part:
                raise OSError(f"spool file {self.path} is shorter than what was written")
            parts.append(part)
            offset += len(part)
        return parts[-1] if len(parts) <= 2 else b"".join(parts)

    def discard(self) -> None:
        """Close and remove the file (again: nothing)."""
        self._finalizer()


def _remove(name: str, fd: int, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)
        os.close(dir_fd)
