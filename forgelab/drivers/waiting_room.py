"""The waiting room: a newcomer over a full server waits a little for a slot before the busy reply.

In the first moments of a burst of new connections none is idle yet, so ``choose_shed`` finds
nothing to close and an honest newcomer would be refused. Instead its accepted socket waits
here (no greeting yet) for at most ``Limits.admit_wait``, while the driver tries again
(``ListeningServer._let_in``) as connections age into sheddable or end; the oldest waiter
first. The room is small (each waiter holds a file descriptor): when it is over full, a waiter
of the address with the most waiting is refused (``choose_turn_away``), so one client cannot
fill it to lock the others out. No sockets are touched here.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterator, Sequence

ROOM_SIZE = 64  # waiting sockets per listening server (per process with --workers)
RETRY_SECONDS = 0.1  # how often a driver tries the waiting again while the room is not empty


@dataclass(eq=False)
class Waiter:
    sock: object  # the accepted socket
    addr: tuple  # the peer's address as accept() gave it
    arrived: float  # time.monotonic() at accept

    @property
    def peer_ip(self) -> str:
        return self.addr[0]


def choose_turn_away(waiters: Sequence[Waiter]) -> Waiter:
    """The waiter to refuse when the room is over full: of the address with the most waiting
    (the rule shedding follows), the one waiting longest. ``waiters`` are in arrival order."""
    held = Counter(waiter.peer_ip for waiter in waiters)
    return min(waiters, key=lambda waiter: -held[waiter.peer_ip])  # min keeps the first of equals


class WaitingRoom:
    """Waiters in arrival order, at most ``size`` of them (the driver holds its lock around each call)."""

    def __init__(self, size: int = ROOM_SIZE):
        self.size = size
        self._waiters: list[Waiter] = []

    def __len__(self) -> int:
        return len(self._waiters)

    def __iter__(self) -> Iterator[Waiter]:
        return iter(list(self._waiters))  # a copy: ``leave`` may be called meanwhile

    def enter(self, waiter: Waiter) -> list[Waiter]:
        """Add ``waiter``; the ones turned away to keep the room within its size."""
        self._waiters.append(waiter)
        turned = []
        while len(self._waiters) > self.size:
            out = choose_turn_away(self._waiters)
            self._waiters.remove(out)
            turned.append(out)
        return turned

    def leave(self, waiter: Waiter) -> None:
        self._waiters.remove(waiter)

    def due(self, now: float, wait: float) -> list[Waiter]:
        """Take out and return the waiters that have waited ``wait`` seconds."""
        due = [waiter for waiter in self._waiters if now - waiter.arrived >= wait]
        if due:
            self._waiters = [waiter for waiter in self._waiters if now - waiter.arrived < wait]
        return due

    def empty_out(self) -> list[Waiter]:
        waiters, self._waiters = self._waiters, []
        return waiters
