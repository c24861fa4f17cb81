"""The web view's connection guard: a cap on open connections, a deadline for each request
and a write timeout, around uvicorn's h11 protocol.

uvicorn alone accepts every connection (``limit_concurrency`` answers 503 only once a
request has arrived, and keeps the socket), starts no timer before the first request, and
restarts none while request bytes trickle in: a thousand idle or one-byte-a-minute clients
held every file descriptor of the process, and SMTP and POP3 could accept nothing. Here:

- at most ``max_connections`` are open; one more sheds the oldest connection still waiting
  for its request (an idle or slow client), or, when every one is busy, is closed itself;
- a request (head and body) must arrive within ``request_timeout`` of the connection, or of
  the previous response on a kept-alive one; past it the connection is cut;
- a response the client does not take (writing paused) for ``write_timeout`` seconds cuts
  the connection: this is what ends an event stream nobody reads.
"""
from __future__ import annotations

import asyncio
import logging
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 256     # open web connections at once (the file descriptors the web view may hold)
REQUEST_TIMEOUT = 10.0    # seconds for a whole request to arrive (slowloris)
WRITE_TIMEOUT = 30.0      # seconds a response may wait on a client that reads nothing
MAX_REQUEST_HEAD = 16 * 1024  # bytes of request line and headers (h11_max_incomplete_event_size)


class ConnectionGuard:
    """The limits and the open connections (oldest first) of one web server; used on its loop only."""

    def __init__(self, max_connections: int = MAX_CONNECTIONS, request_timeout: float = REQUEST_TIMEOUT,
                 write_timeout: float = WRITE_TIMEOUT):
        self.max_connections = max_connections
        self.request_timeout, self.write_timeout = request_timeout, write_timeout
        self.open: dict["GuardedProtocol", None] = {}  # insertion order: oldest first
        self.shed = 0       # waiting connections closed to make room, since start
        self.refused = 0    # new connections closed because every open one was busy
        self.timed_out = 0  # connections cut by the request deadline or the write timeout

    def protocol(self) -> type["GuardedProtocol"]:
        """The protocol class to give uvicorn (``Config(http=...)``), bound to this guard."""
        return type("GuardedH11Protocol", (GuardedProtocol,), {"guard": self})

    def admit(self, new: "GuardedProtocol") -> bool:
        self.open[new] = None
        if len(self.open) <= self.max_connections:
            return True
        waiting = next((c for c in self.open if c is not new and c.waiting), None)
        if waiting is not None:
            self.shed += 1
            waiting.cut()
            return True
        self.refused += 1
        return False


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with the ``ConnectionGuard``'s limits (one class per guard)."""

    guard: ConnectionGuard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self.waiting_since = time.monotonic()
        if not self.guard.admit(self):
            self.cut()
            return
        self._arm_deadline()

    @property
    def waiting(self) -> bool:
        """Still waiting for (the rest of) a request: idle, or slow to send it."""
        return self._deadline is not None

    def cut(self) -> None:
        """Close now, dropping whatever is unsent (a client that does not read never gets it)."""
        self._disarm()
        if not self.transport.is_closing():
            self.transport.abort()

    def _arm_deadline(self) -> None:
        if self._deadline is None and not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.guard.request_timeout, self._request_too_slow)

    def _disarm(self) -> None:
        for timer in (self._deadline, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._deadline = self._write_timer = None

    def _request_too_slow(self) -> None:
        self._deadline = None
        self.guard.timed_out += 1
        self.cut()

    def handle_events(self) -> None:
        super().handle_events()
        if self._deadline is not None and self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
            self._deadline.cancel()  # the whole request is in: the answer may take its time
            self._deadline = None

    def on_response_complete(self) -> None:
        self._arm_deadline()  # a kept-alive connection waits for its next request under the same deadline
        super().on_response_complete()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.guard.write_timeout, self._not_reading)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _not_reading(self) -> None:
        self._write_timer = None
        self.guard.timed_out += 1
        self.cut()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.open.pop(self, None)
        super().connection_lost(exc)
