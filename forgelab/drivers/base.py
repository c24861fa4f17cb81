"""A threaded TCP server: one thread per connection, connection caps, clean shutdown.

When a cap is reached, a newcomer is served by closing an idle (then a slow) connection
instead (``choose_shed``: fairness for a class that shares one address); when none can be
closed yet, the newcomer waits a little in the waiting room (``waiting_room``) and is refused
only when none could be closed by then.

No protocol logic lives here; a driver supplies ``handle(conn)`` and the bytes
to send when the server is full. A thread serves one connection at a time; when it
is done it waits for the next one (a pool that grows with the connections and
shrinks when they go), so a new client costs no thread start.
"""
from __future__ import annotations

import logging
import math
import queue
import socket
import ssl
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..errors import BindError  # noqa: F401 (raised here; its home is errors.py)
from ..settings import DEFAULTS
from .waiting_room import RETRY_SECONDS, Waiter, WaitingRoom

log = logging.getLogger(__name__)

IDLE_WORKER_SECONDS = 30.0  # a pool thread with no connection for this long ends
_KERNEL_TIMEOUTS = sys.platform.startswith("linux")  # SO_RCVTIMEO takes a struct timeval of two longs


@dataclass
class Limits:
    """A server's caps and timeouts; what each means, and its default, is in settings.py."""
    max_connections: int = DEFAULTS.max_connections
    max_per_ip: int = DEFAULTS.max_connections_per_ip
    shed_idle_after: float = DEFAULTS.shed_idle_after
    min_data_rate: float = DEFAULTS.min_data_rate
    admit_wait: float = DEFAULTS.admit_wait
    idle_timeout: float = DEFAULTS.idle_timeout
    session_timeout: float = DEFAULTS.session_timeout
    read_size: int = 65536  # octets asked of the socket at a time (not a setting)
    max_errors: int = DEFAULTS.max_errors
    max_commands: int = DEFAULTS.max_commands


@dataclass
class Connection:
    sock: socket.socket
    peer_ip: str
    peer_port: int
    local_ip: str
    local_port: int
    timeout: float | None = None  # the read/write timeout now in force
    kernel_timeout: bool = False  # timeout kept by the kernel (SO_RCVTIMEO), not by a poll per call
    # What shedding (``choose_shed``) looks at: set by the thread that reads the connection.
    opened: float = field(default_factory=time.monotonic)
    turn_since: float = 0.0  # since when it is the client's turn: our last reply, its last byte, or the connect
    waiting: bool = False  # the server waits for the client's next bytes: nothing of ours is running
    in_progress: bool = False  # a message or an AUTH exchange is under way (not at a command boundary)
    shed: str | None = None  # closed to make room ("idle" or "slow"); the reader says goodbye
    uncounted: bool = False  # no longer counted against the caps (the selector driver's flag)
    _mass: float = 0.0  # octets received, each fading with time (rate_window): see ``rate``
    _mass_at: float = 0.0
    rate_window: float = 5.0
    limits: Limits | None = None  # the server's limits when it was accepted; a policy switch changes later ones only

    def __post_init__(self) -> None:
        self.turn_since = self._mass_at = self.opened

    @property
    def spoke(self) -> bool:
        """The client has sent something."""
        return self._mass > 0

    def received(self, size: int, now: float) -> None:
        self._mass = self._mass * math.exp((self._mass_at - now) / self.rate_window) + size
        self.turn_since = self._mass_at = now

    def rate(self, now: float) -> float:
        """Octets a second lately: a moving average over about ``rate_window`` seconds."""
        return self._mass * math.exp((self._mass_at - now) / self.rate_window) / self.rate_window

    def set_timeout(self, seconds: float, kernel: bool = False) -> None:
        """Limit each read and write to ``seconds``; does nothing when it is already the limit.

        ``kernel=True`` (Linux, plain sockets) leaves the socket blocking and lets the kernel
        time out reads and writes, so each recv/send is one syscall instead of poll + call;
        ``recv`` then turns the kernel's EAGAIN into ``socket.timeout`` like a socket timeout.
        """
        kernel = kernel and _KERNEL_TIMEOUTS and not isinstance(self.sock, ssl.SSLSocket)
        if seconds == self.timeout and kernel == self.kernel_timeout:
            return
        if kernel:
            if self.sock.gettimeout() is not None:
                self.sock.settimeout(None)
            whole = int(seconds)
            timeval = struct.pack("ll", whole, max(int((seconds - whole) * 1_000_000), 1 if not whole else 0))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        else:
            self.sock.settimeout(seconds)
        self.timeout, self.kernel_timeout = seconds, kernel

    def recv(self, size: int) -> bytes:
        """One blocking read; ``ConnectionShed`` if the connection was closed to make room meanwhile."""
        self.waiting = True
        try:
            data = self.sock.recv(size)
        except BlockingIOError:  # SO_RCVTIMEO ran out
            raise socket.timeout("timed out") from None
        except OSError:
            if self.shed:
                raise ConnectionShed(self.shed) from None
            raise
        finally:
            self.waiting = False
        if self.shed:
            raise ConnectionShed(self.shed)
        self.received(len(data), time.monotonic())
        return data

    def wake_to_shed(self, why: str) -> None:
        """From another thread: mark the connection shed and wake its reader from ``recv``,
        which raises ``ConnectionShed``; the reader then sends the goodbye and closes."""
        self.shed = why
        try:  # socket.socket's own: SSLSocket.shutdown would drop the TLS state the goodbye needs
            socket.socket.shutdown(self.sock, socket.SHUT_RD)
        except OSError:
            pass

    def goodbye(self, data: bytes) -> None:
        """The last reply of a shed connection: a short wait at most, the client may not read."""
        try:
            self.set_timeout(1.0)
            self.sendall(data)
        except OSError:
            pass

    def sendall(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except BlockingIOError:  # SO_SNDTIMEO ran out
            raise socket.timeout("timed out") from None
        self.turn_since = time.monotonic()  # a slow reply of ours does not make the client look idle


class ConnectionShed(OSError):
    """The connection was closed to make room for a newcomer (``choose_shed``)."""


SHED_WHY = {"idle": "closing idle connection to make room", "slow": "closing slow connection to make room"}


def choose_shed(conns: Iterable[Connection], limits: Limits, now: float) -> Connection | None:
    """The connection to close so a newcomer gets in, or None: only refuse him then.

    Idle ones first: waiting for the client's next command, nothing in progress, quiet for
    ``shed_idle_after`` since its turn began (our last reply or its last byte); a quarter of
    that if it has not said a word since it connected. Then slow ones (a client that trickles bytes to look busy, or stalls
    mid-message): older than ``shed_idle_after`` and sending under ``min_data_rate`` lately.
    Within each, the address holding the most of them first, then the quietest (slowest).
    Sets ``shed`` on the one chosen (``"idle"`` or ``"slow"``).
    """
    idle, slow = [], []
    for conn in conns:
        if not conn.waiting or conn.shed:
            continue
        # One that never said a word after our greeting is idle sooner: every client speaks first
        # at once, a silent one only holds a slot (an attacker reconnecting in bursts to stay young).
        idle_after = limits.shed_idle_after if conn.spoke else limits.shed_idle_after / 4
        if not conn.in_progress and now - conn.turn_since >= idle_after:
            idle.append(conn)
        elif now - conn.opened >= limits.shed_idle_after and conn.rate(now) < limits.min_data_rate:
            slow.append(conn)
    for why, tier, order in (("idle", idle, lambda c: c.turn_since), ("slow", slow, lambda c: c.rate(now))):
        if tier:
            held = Counter(conn.peer_ip for conn in tier)
            victim = min(tier, key=lambda c: (-held[c.peer_ip], order(c)))
            victim.shed = why
            return victim
    return None


def close_socket(sock: socket.socket) -> None:
    if isinstance(sock, ssl.SSLSocket):
        try:  # send close_notify, so a TLS client sees a clean end and not a truncation
            sock.settimeout(1.0)
            sock.unwrap()
        except (OSError, ValueError):
            pass
    try:
        sock.close()
    except OSError:
        pass


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


class ThreadedServer(ListeningServer):
    """Accepts on ``host:port`` and runs ``handle(conn)`` for each connection on a pool thread.

    :param kernel_timeouts: the idle limit is kept by the kernel (see ``Connection.set_timeout``);
        the handler then reads with ``conn.recv`` and writes with ``conn.sendall``.
    :param reuse_port: share the address with other processes (SO_REUSEPORT); the connection
        caps in ``limits`` then hold for this process only.
    """

    def __init__(self, name: str, host: str, port: int, handle: Callable[[Connection], None],
                 busy: bytes, limits: Limits | None = None, *, kernel_timeouts: bool = False,
                 reuse_port: bool = False):
        super().__init__(name, host, port, busy, limits, reuse_port)
        self.handle = handle
        self.kernel_timeouts = kernel_timeouts
        self._active: dict[int, Connection] = {}
        self._threads: set[threading.Thread] = set()
        self._handoff: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()
        self._idle = 0  # pool threads waiting for a connection, minus connections queued for them

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._active)

    def _count(self) -> int:
        return len(self._active)

    @property
    def threads(self) -> int:
        """Pool threads alive: busy with a connection or waiting for one."""
        with self._lock:
            return len(self._threads)

    def start(self) -> "ThreadedServer":
        # A blocking accept: one syscall per client; stop() wakes it by shutting the socket down.
        self._sock = listening_socket(self.name, self._host, self._port, reuse_port=self.reuse_port)
        self._thread = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept", daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        retrying = False  # the listening socket has a timeout: newcomers wait in the room
        while not self._stopping.is_set():
            if retrying != bool(self._room):
                retrying = not retrying
                self._sock.settimeout(RETRY_SECONDS if retrying else None)
            try:
                client, addr = self._sock.accept()
            except socket.timeout:  # no newcomer meanwhile: try the waiting ones again
                self._let_in()
                continue
            except OSError:
                if self._stopping.wait(0.05):  # e.g. out of file descriptors: do not spin
                    return
                continue
            if self._stopping.is_set():
                client.close()
                return
            self._arrive(client, addr)

    def _candidates(self) -> Iterable[Connection]:
        return self._active.values()

    def _count_in(self, waiter: Waiter) -> tuple[Connection, bool]:
        local = waiter.sock.getsockname()
        conn = Connection(waiter.sock, waiter.peer_ip, waiter.addr[1], local[0], local[1],
                          rate_window=self.limits.shed_idle_after,
                          limits=self.limits)
        self._active[id(conn)] = conn
        self._per_ip[conn.peer_ip] += 1
        if self._idle > 0:
            self._idle -= 1  # a waiting pool thread takes it
            return conn, False
        return conn, True

    def _start(self, waiter: Waiter, counted: tuple[Connection, bool], victim: Connection | None) -> None:
        conn, spawn = counted
        peer_ip = conn.peer_ip
        if victim is not None:
            victim.wake_to_shed(victim.shed)
        if not spawn:
            self._handoff.put(conn)
            return
        thread = threading.Thread(target=self._worker, args=(conn,), name=f"{self.name}-worker", daemon=True)
        with self._lock:
            self._threads.add(thread)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had (resource limit): drop this client
            log.error("%s: cannot start a thread for %s", self.name, peer_ip)
            with self._lock:
                self._threads.discard(thread)
            self._finish(conn)

    def _worker(self, conn: Connection | None) -> None:
        """Serve ``conn``, then whatever connection comes next; end after a quiet spell or at stop."""
        try:
            while conn is not None:
                self._run(conn)
                conn = None
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self._idle += 1
                while True:
                    try:
                        conn = self._handoff.get(timeout=IDLE_WORKER_SECONDS)
                        break
                    except queue.Empty:
                        with self._lock:
                            if self._idle > 0:  # no connection is on its way to us: end
                                self._idle -= 1
                                return
                        # every waiting thread is spoken for: one is queued for us, take it
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _run(self, conn: Connection) -> None:
        try:
            if self.kernel_timeouts:
                conn.set_timeout(conn.limits.idle_timeout, kernel=True)
            else:
                conn.sock.settimeout(conn.limits.idle_timeout)
            self.handle(conn)
        except Exception:
            log.exception("%s: connection from %s failed", self.name, conn.peer_ip)
        finally:
            self._finish(conn)

    def _finish(self, conn: Connection) -> None:
        close_socket(conn.sock)
        with self._lock:
            self._uncount(conn)

    def _uncount(self, conn: Connection) -> None:
        """No longer counted against the caps (under ``_lock``; once, whichever comes first:
        the end of the connection or its shedding)."""
        if self._active.pop(id(conn), None) is None:
            return
        self._per_ip[conn.peer_ip] -= 1
        if self._per_ip[conn.peer_ip] <= 0:
            del self._per_ip[conn.peer_ip]

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every open connection, wait for the threads."""
        self._stopping.set()
        if self._sock:
            self._wake_accept()
        if self._thread:
            self._thread.join(timeout)
        if self._sock:
            self._sock.close()
        self._refuse_waiting()
        with self._lock:
            conns = list(self._active.values())
            threads = list(self._threads)
        for conn in conns:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _ in threads:  # one end-marker for each thread that may be waiting for a connection
            self._handoff.put(None)
        for thread in threads:
            thread.join(timeout)

    def _wake_accept(self) -> None:
        """Get the accept loop out of its blocking accept()."""
        try:  # Linux: shutting a listening socket down makes accept() fail at once
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self._thread is None or not self._thread.is_alive():
            return
        self._thread.join(0.2)
        if self._thread.is_alive():  # elsewhere: a connection of our own wakes it
            host, port = self._sock.getsockname()[:2]
            if host in ("0.0.0.0", "::"):
                host = "::1" if host == "::" else "127.0.0.1"
            try:
                socket.create_connection((host, port), timeout=1).close()
            except OSError:
                pass
