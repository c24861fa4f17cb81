"""The event-stream clients of the web view (``GET /api/events``), fed from the bus without ever waiting on one.

``Streams`` listens to the ``EventIndex`` for the whole life of the web view. A publisher
thread only appends the record to one bounded list and, when none is pending, asks the web
loop once to hand out what gathered in the next ``BATCH_DELAY`` (waking the loop for every
record took the GIL from the mail threads: a third of their throughput): no lock is held while a client's socket is written, and however
many clients there are, a publisher makes one cheap call. On the loop, each record is
encoded once and added to the buffer of every client that wants it. A client whose buffer
passes ``STREAM_BUFFER`` bytes (it reads more slowly than the lab publishes) is dropped: its
buffer is replaced by one last ``behind`` event and its stream ends; a browser's
EventSource reconnects and resumes from its Last-Event-ID. A client that reads nothing at
all is also cut by the web server's write timeout (``server.py``).
"""
from __future__ import annotations

import asyncio
import threading
from collections import deque

from ..core.events import encode

STREAM_BUFFER = 1024 * 1024  # bytes of events held for one client before it is dropped as behind
MAX_STREAMS = 64             # event-stream clients at once; more are answered 503
PENDING = 10_000             # records between the bus and the web loop; past it every client is behind
BATCH_DELAY = 0.02           # seconds records gather before the loop hands them out (one wake-up for many)
KEEP_ALIVE = b": keep-alive\n\n"
BEHIND = (b'event: behind\ndata: {"error":"this client fell behind the lab\'s events: '
          b'reconnect (Last-Event-ID resumes where it stopped)"}\n\n')


def sse(record: dict) -> bytes:
    return b"id: %d\ndata: %b\n\n" % (int(record.get("seq", 0)), encode(record))


def _session_of(record: dict):
    return record.get("session_id", (record.get("session") or {}).get("id"))


def wanted(record: dict, only_session: str | None) -> bool:
    """Whether a client of ``?session=only_session`` (or of every session) gets ``record``."""
    return not only_session or _session_of(record) == only_session or record.get("kind") == "policy.changed"


class StreamClient:
    """One open event stream: its buffer of encoded events, at most ``STREAM_BUFFER`` bytes."""

    def __init__(self, only_session: str | None, upto: int):
        self.only_session = only_session
        self.upto = upto  # records up to this seq came with the backlog
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.ended = False
        self.wake = asyncio.Event()

    async def next(self, heartbeat: float) -> bytes | None:
        """What to send next: the buffered events as one chunk, a keep-alive comment after
        ``heartbeat`` quiet seconds, or None when the stream is over."""
        if not self.chunks and not self.ended:
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), heartbeat)
            except asyncio.TimeoutError:
                return KEEP_ALIVE
        if self.chunks:
            data = b"".join(self.chunks)
            self.chunks.clear()
            self.size = 0
            return data
        return None


class Streams:
    """Every open event stream of one web view; called by the ``EventIndex`` with each record."""

    def __init__(self, max_streams: int = MAX_STREAMS, buffer: int = STREAM_BUFFER):
        self.max_streams, self.buffer = max_streams, buffer
        self._lock = threading.Lock()  # the pending records and the set of clients
        self._pending: deque[dict] = deque(maxlen=PENDING)
        self._lost = False
        self._clients: set[StreamClient] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_pending = False
        self.closing = False
        self.dropped = 0  # clients dropped for falling behind, since start

    def __len__(self) -> int:
        return len(self._clients)

    # -- a publisher's thread (inside the index's lock): append, maybe wake the loop, return
    def __call__(self, record: dict) -> None:
        with self._lock:
            if not self._clients:
                return
            if len(self._pending) == PENDING:
                self._lost = True  # the loop has not kept up: no client can be whole any more
            self._pending.append(record)
            if self._wake_pending:
                return
            self._wake_pending = True
            loop = self._loop
        try:
            loop.call_soon_threadsafe(loop.call_later, BATCH_DELAY, self._hand_out)
        except RuntimeError:  # the web server's loop has stopped
            pass

    # -- the web loop ------------------------------------------------------------
    def open(self, index, since: int | None, only_session: str | None) -> tuple[StreamClient, list[dict]] | None:
        """A new client and the kept records after ``since`` it gets first; None when
        ``max_streams`` are open already (or the web view is stopping)."""
        loop = asyncio.get_running_loop()
        client = StreamClient(only_session, 0)
        admitted = []

        def attach(last_seq: int) -> None:  # inside the index's lock: no record can fall in between
            client.upto = last_seq  # records up to here come with the backlog
            with self._lock:
                if not self.closing and len(self._clients) < self.max_streams:
                    self._loop = loop
                    self._clients.add(client)
                    admitted.append(client)

        backlog = index.recent(since, attach)
        if not admitted:
            return None
        return client, [r for r in backlog if wanted(r, only_session)]

    def close(self, client: StreamClient) -> None:
        with self._lock:
            self._clients.discard(client)
            if not self._clients:
                self._pending.clear()

    def _hand_out(self) -> None:
        with self._lock:
            records = list(self._pending)
            self._pending.clear()
            self._wake_pending = False
            lost, self._lost = self._lost, False
            clients = list(self._clients)
        encoded: dict[int, bytes] = {}
        for client in clients:
            if lost:
                self._drop(client)
                continue
            added = False
            for record in records:
                seq = int(record.get("seq", 0))
                if seq <= client.upto or not wanted(record, client.only_session):
                    continue
                line = encoded.get(seq)
                if line is None:
                    line = encoded[seq] = sse(record)
                client.chunks.append(line)
                client.size += len(line)
                added = True
            if records:
                client.upto = max(client.upto, int(records[-1].get("seq", 0)))
            if client.size > self.buffer:
                self._drop(client)
            elif added:
                client.wake.set()

    def _drop(self, client: StreamClient) -> None:
        """The client fell behind: what it has not taken is replaced by one last event; its stream ends."""
        self.close(client)
        self.dropped += 1
        client.chunks.clear()
        client.chunks.append(BEHIND)
        client.size = len(BEHIND)
        client.ended = True
        client.wake.set()

    def close_all(self) -> None:
        """End every stream now (the web view is stopping); no new one opens."""
        with self._lock:
            self.closing = True
            clients, loop = list(self._clients), self._loop
            self._clients.clear()
        for client in clients:
            client.ended = True
            if loop is not None:
                try:
                    loop.call_soon_threadsafe(client.wake.set)
                except RuntimeError:  # the loop is already gone
                    pass
