"""One client connection as every driver sees it, and the caps and timeouts it is held to.

``Connection`` keeps what fairness needs to know (``shedding.py``): when the client last
spoke, whether it waits for its next command, how fast it has been sending lately.
"""
from __future__ import annotations

import math
import socket
import ssl
import struct
import sys
import time
from dataclasses import dataclass, field

from ..settings import DEFAULTS

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
