"""A threaded TCP server: one thread per connection, connection caps, clean shutdown.

No protocol logic lives here; a driver supplies ``handle(conn)`` and the bytes
to send when the server is full.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)


class BindError(OSError):
    """The listening address cannot be used (port in use, bad host)."""


@dataclass
class Limits:
    max_connections: int = 200
    max_per_ip: int = 50
    idle_timeout: float = 300.0  # RFC 5321 4.5.3.2 suggests five minutes
    session_timeout: float = 1800.0
    read_size: int = 65536
    max_errors: int = 20  # error replies in a session before it is closed
    max_commands: int = 10_000


@dataclass
class Connection:
    sock: socket.socket
    peer_ip: str
    peer_port: int
    local_ip: str
    local_port: int


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


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def listening_socket(name: str, host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket; BindError names the server and the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise BindError(exc.errno, f"{name} cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class ThreadedServer:
    def __init__(self, name: str, host: str, port: int, handle: Callable[[Connection], None],
                 busy: bytes, limits: Limits | None = None):
        self.name = name
        self.handle = handle
        self.busy = busy
        self.limits = limits or Limits()
        self._host, self._port = host, port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._active: dict[int, Connection] = {}
        self._per_ip: Counter[str] = Counter()
        self._threads: set[threading.Thread] = set()

    @property
    def address(self) -> tuple[str, int]:
        assert self._sock is not None, "server not started"
        return self._sock.getsockname()[:2]

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._active)

    def start(self) -> "ThreadedServer":
        sock = listening_socket(self.name, self._host, self._port)
        sock.settimeout(0.2)  # so the accept loop notices stop() quickly
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept", daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, addr = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            self._admit(client, addr)

    def _admit(self, client: socket.socket, addr) -> None:
        peer_ip = addr[0]
        with self._lock:
            full = (len(self._active) >= self.limits.max_connections
                    or self._per_ip[peer_ip] >= self.limits.max_per_ip)
            if not full:
                local = client.getsockname()
                conn = Connection(client, peer_ip, addr[1], local[0], local[1])
                self._active[id(conn)] = conn
                self._per_ip[peer_ip] += 1
        if full:
            try:
                client.settimeout(2)
                client.sendall(self.busy)
            except OSError:
                pass
            finally:
                client.close()
            return
        thread = threading.Thread(target=self._run, args=(conn,), name=f"{self.name}-{peer_ip}:{addr[1]}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _run(self, conn: Connection) -> None:
        try:
            conn.sock.settimeout(self.limits.idle_timeout)
            self.handle(conn)
        except Exception:
            log.exception("%s: connection from %s failed", self.name, conn.peer_ip)
        finally:
            try:
                conn.sock.close()
            except OSError:
                pass
            with self._lock:
                self._active.pop(id(conn), None)
                self._per_ip[conn.peer_ip] -= 1
                if self._per_ip[conn.peer_ip] <= 0:
                    del self._per_ip[conn.peer_ip]
                self._threads.discard(threading.current_thread())

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every open connection, wait for the threads."""
        self._stopping.set()
        if self._thread:
            self._thread.join(timeout)
        if self._sock:
            self._sock.close()
        with self._lock:
            conns = list(self._active.values())
            threads = list(self._threads)
        for conn in conns:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(timeout)
