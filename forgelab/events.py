"""The event bus: every session step, verdict and delivery, for the terminal, the log and the web view."""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

import orjson

log = logging.getLogger(__name__)

Subscriber = Callable[[dict], None]

BATCH_DELAY = 0.003  # seconds the log writer waits after the first record of a batch


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


def decode(line: bytes | str):
    """A line of the event log as the record it holds (``ValueError`` if it is not JSON)."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:  # e.g. an escaped lone surrogate, which only json writes and reads
        return json.loads(line)


class EventBus:
    """Publish small dict records to every subscriber, in order, from any thread.

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

    def publish(self, kind: str, **fields) -> dict:
        with self._lock:
            self._seq += 1
            record = {"seq": self._seq, "ts": time.time(), "kind": kind, **fields}
            # Deliver inside the lock so every subscriber sees records in seq order.
            for fn in self._subscribers:
                try:
                    fn(record)
                except Exception:  # a broken viewer must never break the mail server
                    log.exception("event subscriber %r failed", fn)
        return record

    def publish_encoded(self, fields: bytes) -> None:
        """Publish a record that is already one JSON line, as ``encode`` makes them: ``fields`` is
        that line after its opening brace, starting with ``"ts"``. The bus puts its ``seq`` in front.
        A subscriber with ``takes_encoded`` gets the line itself; the others get it decoded, as
        ``publish`` would have given it (decoding costs more than encoding: a worker's forwarded
        events are decoded only if something but the log wants them)."""
        with self._lock:
            self._seq += 1
            line = b'{"seq":%d,%b' % (self._seq, fields)
            record = None
            for fn in self._subscribers:
                try:
                    if getattr(fn, "takes_encoded", False):
                        fn(line)
                    else:
                        if record is None:
                            record = decode(line)
                        fn(record)
                except Exception:
                    log.exception("event subscriber %r failed", fn)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every subscriber that buffers (has ``flush``) has written what it was given."""
        for fn in self._subscribers:
            flush = getattr(fn, "flush", None)
            if callable(flush):
                flush(timeout)


class JsonlLog:
    """Appends every event as one JSON line (``events.jsonl`` in the data directory, or ``stream``).

    Publishing only queues the record: a writer thread encodes and writes whatever has
    queued up, in order, with one ``write`` per batch, so no mail thread waits on the file
    or on the bus lock while another one writes. A batch reaches the file within
    milliseconds of the bus going quiet; ``flush()`` waits for it, ``close()`` writes the
    rest and stops the thread.
    """

    def __init__(self, path: str | Path | None = None, *, stream=None):
        # stream: an open binary file to write to instead (a worker process's stdout, see workers.py)
        if stream is not None:
            self.path = Path(str(getattr(stream, "name", "<stream>")))
            self._file = stream
        else:
            self.path = Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")
        self._pending: deque[dict | bytes] = deque()
        self._queued = 0        # records handed to us (only the bus, under its lock, adds)
        self._written = 0       # records written to the file
        self._idle = True       # the writer sleeps until woken
        self._closing = False
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="forgelab-event-log", daemon=True)
        self._thread.start()

    takes_encoded = True  # EventBus.publish_encoded hands us the line as it is

    def __call__(self, record: dict | bytes) -> None:
        if self._closing:
            return
        self._pending.append(record)
        self._queued += 1
        if self._idle:  # wake the writer once per batch, not once per record
            self._idle = False
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if not self._closing:
                time.sleep(BATCH_DELAY)  # let a batch gather: one write for many records
            while True:
                self._drain()
                self._idle = True
                # A record queued between the drain and _idle = True found _idle False and
                # did not wake us: look once more before sleeping.
                if not self._pending:
                    break
                self._idle = False
            if self._closing:
                return

    def _drain(self) -> None:
        lines = []
        pending = self._pending
        while pending:
            try:
                record = pending.popleft()
            except IndexError:
                break
            if record.__class__ is bytes:
                lines.append(record)
                continue
            try:
                lines.append(encode(record))
            except Exception:  # one odd record must not stop the log
                log.exception("event %r could not be logged", record.get("kind"))
                lines.append(encode({"seq": record.get("seq"), "kind": str(record.get("kind")),
                                     "error": "not serialisable"}))
        if not lines:
            return
        try:
            self._file.write(b"\n".join(lines) + b"\n")
            self._file.flush()
        except (OSError, ValueError):
            log.exception("event log %s could not be written", self.path)
        with self._done:
            self._written += len(lines)
            self._done.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record queued before this call is in the file; False on timeout."""
        target = self._queued
        with self._done:
            if self._written >= target:
                return True
            self._idle = False
            self._wake.set()
            return self._done.wait_for(lambda: self._written >= target or not self._thread.is_alive(), timeout)

    def close(self) -> None:
        """Write what is queued, stop the writer thread, close the file. Safe to call twice."""
        if not self._closing:
            self._closing = True
            self._wake.set()
            self._thread.join(10)
        if not self._file.closed:
            self._drain()  # the writer is gone (or stuck): the rest, if any, from here
            self._file.close()
