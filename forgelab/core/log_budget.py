"""How many bytes of the event log each client address may fill: a token bucket per address.

Every connection and command makes an event record, so a flood of short sessions or commands
made ``events.jsonl`` grow 2.5-25 times what the client sent (issue 15, item 7). Like
journald's rate limiting, each client address may have ``rate`` bytes a second of records
logged, with a burst of ``BURST_SECONDS`` of it; what does not fit is counted, not written,
and reported in a ``log.held_back`` record at most once a second per address. A rate and not
a ratio to the bytes received: an honest class writes about 28 times what it sends.

Sans-IO: ``JsonlLog`` asks ``admit(record, size)`` for each record and writes what ``due()``
returns; the clock is injected.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable


class _Bucket:
    __slots__ = ("tokens", "last", "records", "sessions", "bytes", "since", "reported")

    def __init__(self, tokens: float, now: float):
        self.tokens, self.last = tokens, now
        self.records = self.sessions = self.bytes = 0  # held back, not reported yet
        self.since: float | None = None  # when the first of them was held back
        self.reported = float("-inf")  # when the last log.held_back for this address was made


class LogBudget:
    """The event log's budget per client address; see the module's docstring.

    A record is tied to a session if it is ``session.open`` (its ``session.peer_ip`` pays) or
    has the ``session_id`` of a session whose open was seen; any other record is always written.
    A session is logged whole or not at all at its ends: if its open was held back, so is
    every later record of it (one held session); if its open was written, so is its close,
    even past the budget (the bucket goes below zero).
    """

    BURST_SECONDS = 2.0
    REPORT_EVERY = 1.0  # seconds between two log.held_back records of one address
    MAX_ADDRESSES = 10_000
    MAX_SESSIONS = 100_000  # open sessions followed; sessions leave at their close

    def __init__(self, rate: float, clock: Callable[[], float] = time.time, *,
                 max_addresses: int = MAX_ADDRESSES, max_sessions: int = MAX_SESSIONS):
        self.rate = float(rate)
        self.burst = self.rate * self.BURST_SECONDS
        self.clock = clock
        self.max_addresses, self.max_sessions = max_addresses, max_sessions
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # least recently used first
        self._sessions: OrderedDict[str, tuple[str, bool]] = OrderedDict()  # id -> (address, open held back)
        self._pending: dict[str, _Bucket] = {}  # addresses with held-back records not reported yet
        self._next_due = float("inf")

    def admit(self, record: dict, size: int) -> bool:
        """Whether ``record``, ``size`` bytes once encoded, is written (False: held back and counted)."""
        kind = record.get("kind")
        if kind == "session.open":
            session = record.get("session")
            address = session.get("peer_ip") if isinstance(session, dict) else None
            if not isinstance(address, str):
                return True
            written = self._take(address, size, force=False, opens=True)
            session_id = session.get("id")
            if isinstance(session_id, str):
                self._follow(session_id, address, held=not written)
            return written
        session_id = record.get("session_id")
        entry = self._sessions.get(session_id) if isinstance(session_id, str) else None
        if entry is None:  # not tied to a session we saw open: nobody to charge
            return True
        address, held = entry
        closing = kind == "session.close"
        if closing:
            del self._sessions[session_id]
        if held:
            self._hold(address, self._bucket(address), size, opens=False)
            return False
        return self._take(address, size, force=closing, opens=False)

    def due(self, final: bool = False) -> list[dict]:
        """The ``log.held_back`` records to write now (every pending one if ``final``)."""
        now = self.clock()
        if not self._pending or (now < self._next_due and not final):
            return []
        reports, self._next_due = [], float("inf")
        for address, bucket in list(self._pending.items()):
            if final or now >= bucket.reported + self.REPORT_EVERY:
                reports.append(self._report(address, bucket, now))
            else:
                self._next_due = min(self._next_due, bucket.reported + self.REPORT_EVERY)
        return reports

    def __len__(self) -> int:
        """Addresses kept (for the tests of its bounds)."""
        return len(self._buckets)

    # -- inside --------------------------------------------------------------

    def _take(self, address: str, size: int, *, force: bool, opens: bool) -> bool:
        bucket = self._bucket(address)
        if force or bucket.tokens >= size:
            bucket.tokens -= size
            return True
        self._hold(address, bucket, size, opens)
        return False

    def _hold(self, address: str, bucket: _Bucket, size: int, opens: bool) -> None:
        if not bucket.records:
            bucket.since = self.clock()
            self._pending[address] = bucket
            self._next_due = min(self._next_due, bucket.reported + self.REPORT_EVERY)
        bucket.records += 1
        bucket.sessions += opens
        bucket.bytes += size

    def _report(self, address: str, bucket: _Bucket, now: float) -> dict:
        record = {"ts": now, "kind": "log.held_back", "peer_ip": address, "records": bucket.records,
                  "sessions": bucket.sessions, "bytes": bucket.bytes, "since": bucket.since}
        bucket.records = bucket.sessions = bucket.bytes = 0
        bucket.since, bucket.reported = None, now
        del self._pending[address]
        return record

    def _bucket(self, address: str) -> _Bucket:
        """``address``'s bucket, refilled to now and made the most recently used."""
        now = self.clock()
        bucket = self._buckets.get(address)
        if bucket is None:  # a forgotten address with a count not reported yet keeps its bucket
            bucket = self._buckets[address] = self._pending.get(address) or _Bucket(self.burst, now)
            if len(self._buckets) > self.max_addresses:
                self._forget(now)
        else:
            self._buckets.move_to_end(address)
        bucket.tokens = min(self.burst, bucket.tokens + max(0.0, now - bucket.last) * self.rate)
        bucket.last = now
        return bucket

    def _forget(self, now: float) -> None:
        """Down to nine tenths of ``max_addresses``: first the buckets that are full again (as a
        new one would be), then the least recently used (its pending count is reported first)."""
        keep = max(1, self.max_addresses * 9 // 10)
        for address, bucket in list(self._buckets.items())[:-1]:  # not the one just added
            if len(self._buckets) <= keep:
                return
            if not bucket.records and bucket.tokens + (now - bucket.last) * self.rate >= self.burst:
                del self._buckets[address]
        while len(self._buckets) > keep:
            _, bucket = self._buckets.popitem(last=False)
            if bucket.records:  # still in _pending: reported at the next due(), not lost
                bucket.reported = float("-inf")
                self._next_due = float("-inf")

    def _follow(self, session_id: str, address: str, held: bool) -> None:
        self._sessions[session_id] = (address, held)
        if len(self._sessions) > self.max_sessions:  # never closed (a bug): its later records go unbudgeted
            self._sessions.popitem(last=False)
