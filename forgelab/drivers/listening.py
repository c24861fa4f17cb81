"""What every driver shares: the listening socket, the caps, the waiting room, the busy reply.

When a cap is reached, a newcomer is served by closing an idle (then a slow) connection
instead (``shedding.choose_shed``); when none can be closed yet, the newcomer waits a little
in the waiting room (``waiting_room``) and is refused only when none could be closed by then.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter
from typing import Iterable

from ..errors import BindError
from .connection import Connection, Limits
from .shedding import choose_shed
from .waiting_room import Waiter, WaitingRoom

log = logging.getLogger(__name__)


def parse_hostport(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = default_host, text
    host = host.strip("[]") or default_host
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{text!r} is not HOST:PORT") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port {number} is out of range")
    return host, number


def listening_socket(name: str, host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A bound, listening TCP socket; BindError names the server and the address.

    ``reuse_port``: several processes listen on the same address and the kernel spreads
    the connections between them (SO_REUSEPORT; Linux, used by ``serve --workers``).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        if not hasattr(socket, "SO_REUSEPORT"):
            sock.close()
            raise BindError(0, f"{name}: worker processes need SO_REUSEPORT, which this system lacks")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise BindError(exc.errno, f"{name} cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class ListeningServer:
    """What every driver has: a name, the address to listen on, the caps, the reply for a
    client over them, and the stop flag."""

    def __init__(self, name: str, host: str, port: int, busy: bytes, limits: Limits | None, reuse_port: bool):
        self.name = name
        self.busy = busy
        self.limits = limits or Limits()
        self.reuse_port = reuse_port
        self._host, self._port = host, port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._per_ip: Counter[str] = Counter()
        self._room = WaitingRoom()  # newcomers waiting for a slot (under _lock)

    @property
    def address(self) -> tuple[str, int]:
        assert self._sock is not None, "server not started"
        return self._sock.getsockname()[:2]

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _arrive(self, sock: socket.socket, addr) -> None:
        """A newcomer: in at once if there is a slot for it and nobody waits before it, else it
        waits in the room (on the thread that accepts, as every call of the room's)."""
        with self._lock:
            turned = self._room.enter(Waiter(sock, addr, time.monotonic()))
        self._turn_away(turned, "the waiting room is full")
        self._let_in()

    def _let_in(self) -> None:
        """Admit the waiting newcomers a slot is free (or may be freed) for, in arrival order;
        the busy reply to those who have waited ``admit_wait``."""
        admitted = []
        with self._lock:
            stuck: set[str] = set()  # addresses over their own cap, with nothing of theirs to shed
            for waiter in self._room:
                peer_ip = waiter.peer_ip
                if peer_ip in stuck:
                    continue
                victim = None
                own_cap = self._per_ip[peer_ip] >= self.limits.max_per_ip
                if own_cap or self._count() >= self.limits.max_connections:
                    victim = self._make_room(self._candidates(), peer_ip)
                    if victim is None:
                        if not own_cap:
                            break  # the total is full: nobody after it gets in either
                        stuck.add(peer_ip)
                        continue
                self._room.leave(waiter)
                admitted.append((waiter, self._count_in(waiter), victim))
            expired = self._room.due(time.monotonic(), self.limits.admit_wait)
        for waiter, counted, victim in admitted:
            self._start(waiter, counted, victim)
        self._turn_away(expired, f"still full after {self.limits.admit_wait:g} s")

    def _turn_away(self, waiters: list[Waiter], why: str) -> None:
        for waiter in waiters:
            log.info("%s: refusing a newcomer from %s: %s", self.name, waiter.peer_ip, why)
            self._refuse(waiter.sock)

    def _refuse_waiting(self) -> None:
        """Stopping: the busy reply to every waiting newcomer."""
        with self._lock:
            waiters = self._room.empty_out()
        for waiter in waiters:
            self._refuse(waiter.sock)

    def _candidates(self) -> Iterable[Connection]:
        """The connections ``choose_shed`` may choose from (under ``_lock``)."""
        raise NotImplementedError

    def _count_in(self, waiter: Waiter) -> object:
        """Count an admitted newcomer against the caps (under ``_lock``); what ``_start`` needs."""
        raise NotImplementedError

    def _start(self, waiter: Waiter, counted: object, victim: Connection | None) -> None:
        """Serve an admitted newcomer, after closing ``victim`` (if any) for it."""
        raise NotImplementedError

    def _count(self) -> int:
        """Connections counted against the caps (under ``_lock``)."""
        raise NotImplementedError

    def _make_room(self, conns: Iterable[Connection], peer_ip: str) -> Connection | None:
        """Choose a connection to shed for a newcomer from ``peer_ip`` and stop counting it
        (under ``_lock``); None if none may be shed. Over the address's own cap only its
        connections are candidates, over the total all are."""
        if self._per_ip[peer_ip] >= self.limits.max_per_ip:
            conns = [conn for conn in conns if conn.peer_ip == peer_ip]
        victim = choose_shed(conns, self.limits, time.monotonic())
        if victim is not None:
            log.info("%s: shedding a%s connection of %s for a newcomer from %s", self.name,
                     "n idle" if victim.shed == "idle" else " slow", victim.peer_ip, peer_ip)
            self._uncount(victim)
        return victim

    def _uncount(self, conn: Connection) -> None:
        raise NotImplementedError

    def _refuse(self, client: socket.socket) -> None:
        """Over the caps: the busy reply, as far as the socket buffer takes it at once, then close."""
        try:
            client.setblocking(False)
            client.send(self.busy)
        except OSError:
            pass
        finally:
            client.close()
