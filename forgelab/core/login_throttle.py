"""Failed logins per user name, one throttle for POP3 and SMTP AUTH: a guesser gains nothing by switching.

A class shares one address (127.0.0.1), so failures are counted per user name and per
client address + user name, never per address alone: hammering bob slows every attempt on
bob (from any connection, old or new) and leaves alice's login alone. The answer to each
login attempt waits until the user's next slot; each failure past the free ones doubles the
gap between slots, up to ``max_delay``. Attempts that would wait longer than that are
refused at once, unchecked (many parallel connections on one user). Names that exist and
names that do not are throttled alike, so neither replies nor delays tell who exists.

The per-address count is only a high ceiling against spraying many names from one address:
past it, the answer to each *failure* from that address is held back a little (a right
password is never slowed by it), so a class mistyping passwords is never locked out.

With ``serve --workers N`` each process has its own throttle; ``on_change`` tells the others
of each slot taken, failure and success (only the address, the user name and how far ahead
the slot was), and ``seen_elsewhere`` applies one that another process saw
(forgelab/drivers/workers.py carries them). The counts are eventually consistent: a change reaches
the other processes a few milliseconds later.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

MAX_NAME = 64  # key length: longer names share a key (they only throttle themselves harder)


def _backoff(failures: int, free: int, first: float, cap: float) -> float:
    """0 for the free failures, then first, 2*first, 4*first ... at most cap."""
    if failures <= free:
        return 0.0
    return min(first * 2 ** min(failures - free - 1, 32), cap)


@dataclass
class LoginThrottle:
    """Shared by every POP3 and SMTP session of a process.

    :param free_failures: failures per client address + user name answered without delay.
    :param user_free_failures: failures per user name, from all addresses together, without delay.
    :param delay: the gap after the first failure past the free ones; it doubles with each more.
    :param max_delay: the longest gap; an attempt that would wait longer is refused unchecked.
    :param ip_free_failures: failures from one client address (any names) before its failures
        are answered late; the delay doubles up to ``ip_max_delay``.
    :param window: seconds after the last failure at which a count is forgotten.
    :param max_entries: counts kept at most (memory stays bounded under a spray of names).
    :param on_change: called (outside the lock) with ("attempt" | "failure" | "success", ip, name,
        after) after each attempt given a slot on a name with counts, each failure and each
        success here, not after those applied by ``seen_elsewhere``; ``after``: the seconds
        from now to the attempt's slot (0 for a success).
    """

    free_failures: int = 3
    user_free_failures: int = 10
    delay: float = 1.0
    max_delay: float = 30.0
    ip_free_failures: int = 100
    ip_max_delay: float = 5.0
    window: float = 600.0
    max_entries: int = 20_000
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[str, str, str, float], None] | None = None
    # key -> [failures, time of the last failure, the next free slot, the last slot taken]; oldest first
    _entries: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _keys(self, ip: str, name: str) -> tuple[tuple, tuple]:
        user = (name or "").lower().partition("@")[0][:MAX_NAME]
        return ("user", user), ("pair", ip, user)

    def _free(self, key: tuple) -> int:
        return self.user_free_failures if key[0] == "user" else self.free_failures

    def _entry(self, key: tuple, now: float, create: bool = False) -> list | None:
        entry = self._entries.get(key)
        if entry is not None and now - entry[1] > self.window and now >= entry[2]:
            del self._entries[key]  # old failures are forgotten
            entry = None
        if entry is None and create:
            entry = self._entries[key] = [0, now, now, now]
            self._bound(now)
        elif entry is not None:
            self._entries.move_to_end(key)
        return entry

    def _bound(self, now: float) -> None:
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)  # the least recently used, even if still in force

    def attempt(self, ip: str, name: str) -> float | None:
        """A login for ``name`` from ``ip`` is being tried: the seconds its answer must wait
        (its slot is taken), or None to refuse it unchecked (it would wait over ``max_delay``)."""
        with self._lock:
            now = self.clock()
            entries = [(key, self._entry(key, now)) for key in self._keys(ip, name)]
            start = max([now] + [e[2] for _, e in entries if e])
            if start - now > self.max_delay:
                return None
            self._take(entries, start)
            counted = any(entry for _, entry in entries)
        if counted:  # the other processes' next attempt on the user waits after this slot too
            self._changed("attempt", ip, name, start - now)
        return start - now

    def _take(self, entries: list, slot: float) -> None:
        for key, entry in entries:
            if entry is not None:  # the next attempt waits one gap after this one
                entry[2] = max(entry[2], slot + _backoff(entry[0], self._free(key), self.delay, self.max_delay))
                entry[3] = max(entry[3], slot)

    def failure(self, ip: str, name: str) -> float:
        """Count one failed login; returns the extra seconds to hold its answer back (the
        per-address ceiling: 0 unless ``ip`` failed more than ``ip_free_failures`` times)."""
        extra, after = self._count_failure(ip, name)
        self._changed("failure", ip, name, after)
        return extra

    def _count_failure(self, ip: str, name: str, after: float | None = None) -> tuple[float, float]:
        """Count a failure tried in the slot ``after`` seconds from now (None: the slot its
        attempt took here); returns the per-address extra delay and that slot, from now."""
        with self._lock:
            now = self.clock()
            entries = [(key, self._entry(key, now, create=True)) for key in self._keys(ip, name)]
            slot = max(now + after, now) if after is not None else max([now] + [e[3] for _, e in entries])
            for key, entry in entries:
                entry[0] += 1
                entry[1] = now
                gap = _backoff(entry[0], self._free(key), self.delay, self.max_delay)
                entry[2] = max(entry[2], slot + gap)  # a gap after the slot it was tried in
            entry = self._entry(("ip", ip), now, create=True)
            entry[0] += 1
            entry[1] = now
            return _backoff(entry[0], self.ip_free_failures, self.delay, self.ip_max_delay), slot - now

    def success(self, ip: str, name: str) -> None:
        """The right password: the user's counts start over (not the address's)."""
        self._forget(ip, name)
        self._changed("success", ip, name, 0.0)

    def _forget(self, ip: str, name: str) -> None:
        with self._lock:
            for key in self._keys(ip, name):
                self._entries.pop(key, None)

    def _changed(self, kind: str, ip: str, name: str, after: float) -> None:
        if self.on_change is not None:
            self.on_change(kind, ip, (name or "")[:MAX_NAME], after)  # bounded like the keys; never a password

    def seen_elsewhere(self, kind: str, ip: str, name: str, after: float = 0.0) -> None:
        """Apply an attempt, failure or success another process's throttle counted (``on_change``
        there) as if it happened here, in the slot ``after`` seconds from now (at most
        ``max_delay``): an attempt takes that slot here too. ``on_change`` is not called."""
        after = min(max(after, 0.0), self.max_delay)
        if kind == "attempt":
            with self._lock:
                now = self.clock()
                self._take([(key, self._entry(key, now)) for key in self._keys(ip, name)], now + after)
        elif kind == "failure":
            self._count_failure(ip, name, after)
        elif kind == "success":
            self._forget(ip, name)
