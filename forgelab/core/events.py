"""The event bus: every session step, verdict and delivery, for the terminal, the log and the web view."""
from __future__ import annotations

import errno
import json
import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import Callable

import orjson

from ..store import nofollow
from .log_budget import LogBudget

log = logging.getLogger(__name__)

Subscriber = Callable[[dict], None]

_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def encode(record: dict) -> bytes:
    """One record as one line of compact UTF-8 JSON (no newline); what ``json`` cannot say
    natively becomes ``str(value)``, as ``json.dumps(default=str)`` would.

    orjson, about six times faster than the ``json`` module here: encoding the log was a
    tenth of the server's CPU under load (docs/performance.md). What orjson refuses (an
    integer past 64 bits, a lone surrogate) goes through ``json``, escaped to ASCII.
    """
    try:
        return orjson.dumps(record, default=str, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return json.dumps(record, default=str, separators=(",", ":")).encode()


MAX_TEXT = 1000   # characters of one attacker-written string kept in an event
MAX_ITEMS = 20    # items of one list or mapping kept in a verdict's details
MAX_DEPTH = 4     # nesting kept in a verdict's details


def clip(text, limit: int = MAX_TEXT):
    """``text`` cut to ``limit`` characters, with a marker saying how much was left out
    (``None`` stays ``None``). Every attacker-written string put in an event goes through
    this or ``bounded``, so one event never holds a huge header again (issue 15, item 7)."""
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters]"


def bounded(value, limit: int = MAX_TEXT, depth: int = 0):
    """A JSON-like ``value`` (a verdict's details, an envelope) with every string clipped,
    every list and mapping cut to ``MAX_ITEMS`` (a marker item or key says how many more) and
    nesting past ``MAX_DEPTH`` replaced by a marker. Other values pass as they are."""
    if isinstance(value, str):
        return clip(value, limit)
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return f"… [{len(value)} entries not kept]"
        out = {}
        for i, (key, item) in enumerate(value.items()):
            if i == MAX_ITEMS:
                out["…"] = f"{len(value) - MAX_ITEMS} more entries"
                break
            out[clip(key, 200) if isinstance(key, str) else key] = bounded(item, limit, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        if depth >= MAX_DEPTH:
            return f"… [{len(value)} items not kept]"
        items = list(value) if not isinstance(value, list) else value
        out = [bounded(item, limit, depth + 1) for item in items[:MAX_ITEMS]]
        if len(items) > MAX_ITEMS:
            out.append(f"… [{len(items) - MAX_ITEMS} more items]")
        return out
    return value


class TranscriptBudget:
    """How much of one session's dialogue is published: ``FREE`` bytes, then one byte for each
    byte the client sent. A client pipelining thousands of NOOPs made the log grow 48 times
    what it sent (issue 15, item 7); past the budget its lines are counted, not published.
    A line costs its text and ``LINE_COST`` for the rest of its record (seq, ts, ids)."""

    FREE = 8 * 1024
    LINE_COST = 150
    NOTE = "<transcript limit reached: the rest of this session's lines are counted, not logged>"

    def __init__(self):
        self.received = 0
        self.spent = 0
        self.unlogged = 0

    def take(self, text: str) -> str | None:
        """``text`` if it fits, ``NOTE`` for the first line that does not, then None (counted) for
        every later line: the transcript has no gaps, it stops."""
        cost = len(text) + self.LINE_COST
        if not self.unlogged and self.spent + cost <= self.FREE + self.received:
            self.spent += cost
            return text
        self.unlogged += 1
        return self.NOTE if self.unlogged == 1 else None


def decode(line: bytes | str):
    """A line of the event log as the record it holds (``ValueError`` if it is not JSON)."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:  # e.g. an escaped lone surrogate, which only json writes and reads
        return json.loads(line)


class EventBus:
    """Publish event records to every subscriber, as small dicts, in order, from any thread.

    Subscribers are called under the bus lock (so each sees records in ``seq`` order) and
    must be quick: anything slow (a file, a socket) belongs on a thread of its own, as
    ``JsonlLog`` does.
    """

    def __init__(self):
        self._subscribers: tuple[Subscriber, ...] = ()  # replaced, never changed in place
        self._lock = threading.Lock()
        self._seq = 0

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers += (fn,)
        return lambda: self.unsubscribe(fn)

    def unsubscribe(self, fn: Subscriber) -> None:
        with self._lock:
            if fn in self._subscribers:
                subscribers = list(self._subscribers)
                subscribers.remove(fn)
                self._subscribers = tuple(subscribers)

    def publish(self, event, **fields) -> dict:
        """Number ``event`` and hand it to every subscriber; returns the dict they were given.

        ``event`` is a record of ``forgelab.core.event_records`` (its ``to_dict()`` is published),
        or a kind with its fields as keywords, published as given (a worker's forwarded event)."""
        body = {"kind": event, **fields} if event.__class__ is str else event.to_dict()
        with self._lock:
            self._seq += 1
            record = {"seq": self._seq, "ts": time.time(), **body}
            self._hand_out(record)
        return record

    def publish_encoded(self, fields: bytes) -> None:
        """Publish a record that is already one JSON line, as ``encode`` makes them: ``fields`` is
        that line after its opening brace, starting with ``"ts"``. The bus puts its ``seq`` in front.
        A subscriber with ``takes_encoded`` gets the line itself; the others get it decoded, as
        ``publish`` would have given it (decoding costs more than encoding: a worker's forwarded
        events are decoded only if something but the log wants them)."""
        with self._lock:
            self._seq += 1
            self._hand_out(None, b'{"seq":%d,%b' % (self._seq, fields))

    def _hand_out(self, record: dict | None, line: bytes | None = None) -> None:
        # Under the lock, so every subscriber sees records in seq order. ``line``: the record
        # encoded, for who takes that; decoded once for the others.
        for fn in self._subscribers:
            try:
                if line is not None and getattr(fn, "takes_encoded", False):
                    fn(line)
                else:
                    if record is None:
                        record = decode(line)
                    fn(record)
            except Exception:  # a broken viewer must never break the mail server
                log.exception("event subscriber %r failed", fn)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every subscriber that buffers (has ``flush``) has written what it was given."""
        for fn in self._subscribers:
            flush = getattr(fn, "flush", None)
            if callable(flush):
                flush(timeout)


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_APPEND | os.O_CREAT):
    """``path`` opened for binary appending, created 0600, never through a symbolic link, only
    if it is a regular file (a FIFO planted there would block the open: O_NONBLOCK until checked);
    a file that others could read is made 0600."""
    try:
        fd = nofollow.open_fd(path, flags | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads
            raise OSError(exc.errno, f"{path} is not a regular file: remove it") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file: remove it")
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o600)
        os.set_blocking(fd, True)
        return open(fd, "ab")
    except BaseException:
        os.close(fd)
        raise


def rotated(path: Path, n: int) -> Path:
    """The ``n``-th older file of the log ``path`` (``events.jsonl.1`` is the newest of them)."""
    return path.with_name(f"{path.name}.{n}")


class JsonlLog:
    """Appends every event as one JSON line (``events.jsonl`` in the data directory, or ``stream``).

    The file is created 0600 and never opened through a symbolic link. With ``max_bytes``,
    a file that would grow past it is renamed ``events.jsonl.1`` (the older ones move up to
    ``.2`` ... ``.keep``; the one past ``keep`` is dropped) and a new one started: the log
    never takes more than about ``max_bytes * (keep + 1)`` of disk.

    The publishing thread encodes the record (orjson: about a microsecond) and adds it to a
    buffer; a writer thread writes the buffer in one ``write`` ``FLUSH_DELAY`` after its
    first line, or as soon as it holds ``FLUSH_BYTES``. No publisher waits on the file. The
    writer used to encode too and to wake every few milliseconds: each of its turns took
    the GIL from the mail threads, which cost them more than the encoding itself
    (docs/performance.md). ``flush()`` writes the buffer now; ``close()`` writes it and
    stops the writer.

    With ``rate``, each client address may fill the log with that many bytes of records a
    second (``LogBudget``); what does not fit is counted in ``log.held_back`` records. Lines
    given already encoded (a worker's, forwarded) are not budgeted again.
    """

    FLUSH_BYTES = 64 * 1024
    FLUSH_DELAY = 0.05  # seconds: how late a line may reach the file when few events come

    takes_encoded = True  # EventBus.publish_encoded hands us the line as it is

    def __init__(self, path: str | Path | None = None, *, stream=None, max_bytes: int | None = None,
                 keep: int = 3, rate: int | None = None):
        # stream: an open binary file to write to instead (a worker process's stdout, see workers.py)
        self.max_bytes, self.keep = (max_bytes or None), max(0, keep)
        # rate: bytes a second of records per client address (log_budget.py); None or 0: no budget
        self.budget = LogBudget(rate) if rate else None
        self._file_size = 0
        if stream is not None:
            self.path = Path(str(getattr(stream, "name", "<stream>")))
            self._file = stream
            self.max_bytes = None
        else:
            self.path = Path(path)
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._file = open_private(self.path)
            self._file_size = self._file.seek(0, 2)
        self._lock = threading.Lock()  # the buffer (publishers hold it for an append only)
        self._write_lock = threading.Lock()  # taking the buffer and writing it: one writer at a time, in order
        self._lines: list[bytes] = []
        self._size = 0
        self._closing = False
        self._rotation_failed = False
        self._due = threading.Event()  # the buffer has lines the writer has not taken yet
        self._full = threading.Event()  # ... FLUSH_BYTES of them: no more waiting (or closing)
        self._thread = threading.Thread(target=self._run, name="forgelab-event-log", daemon=True)
        self._thread.start()

    def __call__(self, record: dict | bytes) -> None:
        if self._closing:
            return
        if record.__class__ is bytes:  # already encoded (a worker's, forwarded): its worker's budget took it
            self._add([record])
            return
        line = self._encode(record)
        if self.budget is None:
            self._add([line])
            return
        with self._lock:
            written = self.budget.admit(record, len(line) + 1)
            held_back = [encode(r) for r in self.budget.due()]
        self._add(([line] if written else []) + held_back)

    def _add(self, lines: list[bytes]) -> None:
        with self._lock:
            for line in lines:
                self._lines.append(line)
                self._size += len(line) + 1
            if lines and len(self._lines) == len(lines):
                self._due.set()
            elif self._size >= self.FLUSH_BYTES and not self._full.is_set():
                self._full.set()

    def _add_held_back(self, final: bool = False) -> None:
        if self.budget is not None:
            with self._lock:
                held_back = [encode(r) for r in self.budget.due(final)]
            self._add(held_back)

    @staticmethod
    def _encode(record: dict) -> bytes:
        try:
            return encode(record)
        except Exception:  # one odd record must not stop the log
            log.exception("event %r could not be logged", record.get("kind"))
            return encode({"seq": record.get("seq"), "kind": str(record.get("kind")), "error": "not serialisable"})

    def _write(self) -> None:
        with self._write_lock:
            with self._lock:
                lines, self._lines, self._size = self._lines, [], 0
                self._due.clear()  # a line added from here on sets it again
            if not lines or self._file.closed:
                return
            data = b"\n".join(lines) + b"\n"
            try:
                if self.max_bytes and self._file_size + len(data) > self.max_bytes:
                    self._write_rotating(lines)
                else:
                    self._append(data)
            except (OSError, ValueError):
                log.exception("event log %s could not be written", self.path)

    def _append(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()
        self._file_size += len(data)

    def _write_rotating(self, lines: list[bytes]) -> None:
        """Write ``lines``, rotating wherever the next line would take the file past ``max_bytes``
        (a file holds at least one line, however long)."""
        part: list[bytes] = []
        size = self._file_size
        for line in lines:
            if size and size + len(line) + 1 > self.max_bytes:
                if part:
                    self._append(b"\n".join(part) + b"\n")
                    part = []
                self._rotate()
                size = 0
            part.append(line)
            size += len(line) + 1
        if part:
            self._append(b"\n".join(part) + b"\n")

    def _rotate(self) -> None:
        """events.jsonl -> .1 -> .2 ... -> .keep (the last one is overwritten); a new events.jsonl."""
        self._file.close()
        try:
            if self.keep:
                for n in range(self.keep - 1, 0, -1):
                    if os.path.lexists(rotated(self.path, n)):
                        os.replace(rotated(self.path, n), rotated(self.path, n + 1))
                os.replace(self.path, rotated(self.path, 1))
            else:
                os.unlink(self.path)
        except OSError as exc:  # e.g. a directory planted at events.jsonl.1: go on logging, unrotated
            if not self._rotation_failed:
                log.error("cannot rotate %s (the log goes on growing until it can): %s", self.path, exc)
            self._rotation_failed = True
        finally:
            self._file = open_private(self.path)
            self._file_size = self._file.seek(0, 2)

    def _run(self) -> None:
        while not self._closing:
            self._due.wait()
            self._full.wait(self.FLUSH_DELAY)  # let lines gather: one write for many
            self._full.clear()
            if self._closing:
                return  # close() writes the rest
            self._write()

    def flush(self, timeout: float = 5.0) -> bool:
        """Write every line added so far to the file now (and the log.held_back records due)."""
        self._add_held_back()
        self._write()
        return True

    def close(self) -> None:
        """Write what is buffered, stop the writer thread, close the file. Safe to call twice."""
        if not self._closing:
            self._add_held_back(final=True)
            self._closing = True
            self._full.set()
            self._due.set()
            self._thread.join(10)
        self._write()
        with self._write_lock:
            if not self._file.closed:
                self._file.close()
