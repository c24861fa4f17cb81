"""Failed logins per client address, one throttle for POP3 and SMTP AUTH: a guesser gains nothing by switching."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class LoginThrottle:
    """Failed logins per client IP: free at first, then slowed down, then refused a while.

    :param free_failures: failures answered at once.
    :param delay: seconds to wait before answering each failure after those.
    :param max_failures: failures after which logins from that IP are refused outright
        with ``-ERR [SYS/TEMP]`` for ``lockout`` seconds (then the count starts over).
    :param window: seconds after the last failure at which the count is forgotten.
    """

    free_failures: int = 3
    delay: float = 1.0
    max_failures: int = 6
    lockout: float = 60.0
    window: float = 600.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict = field(default_factory=dict, init=False, repr=False)  # ip -> [count, last, locked_until]
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _entry(self, ip: str, now: float) -> list | None:
        entry = self._failures.get(ip)
        if entry is None:
            return None
        _, last, locked_until = entry
        over = now >= locked_until if locked_until else now - last > self.window
        if over:  # the lockout is over, or the failures are old enough to forget
            del self._failures[ip]
            return None
        return entry

    def locked(self, ip: str) -> bool:
        """True while ``ip`` must be answered SYS/TEMP without checking anything."""
        with self._lock:
            entry = self._entry(ip, self.clock())
            return bool(entry and entry[2])

    def failure(self, ip: str) -> float:
        """Count one failed login; returns the seconds to wait before answering it."""
        with self._lock:
            now = self.clock()
            entry = self._entry(ip, now) or self._failures.setdefault(ip, [0, now, 0.0])
            entry[0] += 1
            entry[1] = now
            if entry[0] >= self.max_failures:
                entry[2] = now + self.lockout
            if len(self._failures) > 10_000:  # keep memory bounded under a spray of addresses
                for old in [k for k, e in self._failures.items() if now - e[1] > self.window]:
                    del self._failures[old]
            return self.delay if entry[0] > self.free_failures else 0.0

    def success(self, ip: str) -> None:
        with self._lock:
            self._failures.pop(ip, None)
