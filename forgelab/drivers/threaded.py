"""The threaded driver's server: one thread per connection, clean shutdown.

No protocol logic lives here; a driver supplies ``handle(conn)`` and the bytes to send when
the server is full (caps, shedding and the waiting room: ``listening.py``). A thread serves
one connection at a time; when it is done it waits for the next one (a pool that grows with
the connections and shrinks when they go), so a new client costs no thread start.
"""
from __future__ import annotations

import logging
import queue
import socket
import threading
from typing import Callable, Iterable

from .connection import Connection, Limits, close_socket
from .listening import ListeningServer, listening_socket
from .waiting_room import RETRY_SECONDS, Waiter

log = logging.getLogger(__name__)

IDLE_WORKER_SECONDS = 30.0  # a pool thread with no connection for this long ends


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
