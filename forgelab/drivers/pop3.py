"""The POP3 socket driver: read bytes, feed the core, ask the service, write the reply.

Protocol rules live in ``forgelab.protocols.pop3``; here are only sockets, timeouts and the
transcript on the event bus.
"""
from __future__ import annotations

import socket
import ssl
import threading
import time

from ..lab.directory import Directory
from ..core.event_records import SessionClose, SessionLine, SessionOpen, SessionTls
from ..core.events import EventBus, TranscriptBudget
from ..core.login_throttle import LoginThrottle
from ..protocols.pop3 import events as ev
from ..protocols.pop3.connection import Pop3Connection
from ..protocols.pop3.replies import IDLE_TIMEOUT, SESSION_TIMEOUT, TOO_MANY_CONNECTIONS, Pop3Reply
from ..protocols.pop3.service import Pop3Service
from ..protocols.pop3.state import State
from ..protocols.pop3.wire import wire_size
from ..core.session import new_id
from ..store import MailStore
from .shedding import SHED_WHY
from .connection import Connection, ConnectionShed, Limits
from .threaded import ThreadedServer

PROTOCOL = "pop3"
MAX_LISTED_LINES = 50  # a LIST of 20,000 messages is not a transcript


class Pop3Server:
    """POP3 on ``host:port`` over ``store``, logins checked against ``directory``.

    :param bus: where the transcript goes (``session.open``, ``session.line``, ``session.close``).
    :param limits: connection caps and timeouts (``idle_timeout``, ``session_timeout``).
    :param hostname: the host in the greeting's APOP timestamp; ``mx.<primary domain>`` by default.
    :param throttle: failed-login throttle shared by all sessions; a default one if None.
    :param tls: the server context STLS uses (RFC 2595); None: STLS is not offered.
    :param implicit_tls: every connection starts with the TLS handshake, then the session
        (RFC 8314, ``--pop3s``); over the caps a newcomer is closed without a reply.
    """

    def __init__(self, store: MailStore, directory: Directory, bus: EventBus | None = None,
                 host: str = "127.0.0.1", port: int = 1110, limits: Limits | None = None, *,
                 hostname: str | None = None, throttle: LoginThrottle | None = None,
                 tls: ssl.SSLContext | None = None, implicit_tls: bool = False):
        if implicit_tls and tls is None:
            raise ValueError("implicit TLS needs a server certificate (tls)")
        self.store = store
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.directory = directory
        self.bus = bus
        self.hostname = hostname or f"mx.{directory.primary_domain}"
        self.throttle = throttle if throttle is not None else LoginThrottle()
        self._stopped = threading.Event()
        self._server = ThreadedServer("pop3s" if implicit_tls else "pop3", host, port, self._handle,
                                      busy=b"" if implicit_tls else TOO_MANY_CONNECTIONS.to_bytes(), limits=limits)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    @property
    def limits(self) -> Limits:
        """The caps and timeouts for connections accepted from now on (each keeps the ones it came with)."""
        return self._server.limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self._server.limits = limits

    @property
    def active_connections(self) -> int:
        return self._server.active_connections

    def start(self) -> "Pop3Server":
        self._stopped.clear()
        self._server.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()  # wakes sessions waiting out a login delay
        self._server.stop(timeout)

    def __enter__(self) -> "Pop3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- one session ---------------------------------------------------------------------

    def _publish(self, record) -> None:
        if self.bus is not None:
            self.bus.publish(record)

    def _handle(self, c: Connection) -> None:
        session = _Session(self, c)
        try:
            session.run()
        finally:
            session.service.close()  # lock released, nothing deleted unless QUIT committed
            self._publish(SessionClose(PROTOCOL, session.id, session.reason, session.line_budget.unlogged))


class _Session:
    """The read-feed-answer loop of one connection."""

    def __init__(self, server: Pop3Server, c: Connection):
        self.server, self.c = server, c
        self.id = new_id("p")
        self.reason = "client closed the connection"
        self.conn = Pop3Connection(max_errors=c.limits.max_errors, max_commands=c.limits.max_commands)
        self.service = Pop3Service(server.store, server.directory, peer_ip=c.peer_ip,
                                   hostname=server.hostname, throttle=server.throttle,
                                   sleep=server._stopped.wait, tls_available=server.tls is not None)
        self.deadline = time.monotonic() + c.limits.session_timeout
        self.line_budget = TranscriptBudget()

    def line(self, direction: str, text: str) -> None:
        text = self.line_budget.take(text)
        if text is not None:
            self.server._publish(SessionLine(self.id, PROTOCOL, direction, text))

    def run(self) -> None:
        self.server._publish(SessionOpen(PROTOCOL, {"id": self.id, "peer_ip": self.c.peer_ip,
                                                    "peer_port": self.c.peer_port}))
        if self.server.implicit_tls and not self.handshake(implicit=True):
            return
        if not self.answer(None, self.service.greeting()):
            return
        while True:
            event = self.conn.next_event()
            if event is ev.NEED_DATA:
                if not self.read():
                    return
                continue
            if isinstance(event, ev.ConnectionClosed):
                return
            self.line("in", event.line)
            reply = self.service.handle(event)
            if not self.answer(event, reply):
                return
            if self.conn.limit_reply is not None:  # the core closed the session and said why
                self.line("out", self.conn.limit_reply.status_line)
                self.reason = self.conn.closed_for
                return
            if isinstance(event, ev.Stls) and reply.positive and not self.start_tls():
                return
            if self.conn.state is State.CLOSED:
                self.reason = "quit"
                return

    def start_tls(self) -> bool:
        # CVE-2011-0411: lines pipelined in plain text after STLS must not run inside TLS.
        dropped = self.conn.discard_buffered()
        if dropped:
            self.line("in", f"<{dropped} octets sent after STLS before the handshake: discarded (CVE-2011-0411)>")
        return self.handshake()

    def handshake(self, implicit: bool = False) -> bool:
        """The server side of the TLS handshake, bounded by the idle timeout; recorded either way.
        Implicit TLS: a client that never starts it may be shed as a silent one."""
        try:  # handshake apart from the wrap: the failure is recorded before the socket closes
            remaining = self.deadline - time.monotonic()
            self.c.sock.settimeout(max(min(self.c.limits.idle_timeout, remaining), 0.001))
            self.c.sock = self.server.tls.wrap_socket(self.c.sock, server_side=True, do_handshake_on_connect=False)
            self.c.waiting = implicit
            self.c.sock.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            if self.c.shed:  # closed to make room for a newcomer: nothing to say it in
                self.reason = f"shed ({self.c.shed}) to make room"
            else:
                self.reason = "TLS handshake failed"
                self.server._publish(SessionTls(self.id, PROTOCOL, False, error=str(exc)[:200]))
            return False
        finally:
            self.c.waiting = False
        self.service.tls_active = True
        self.server._publish(SessionTls(self.id, PROTOCOL, True, version=self.c.sock.version()))
        return True

    def read(self) -> bool:
        limits = self.c.limits
        remaining = self.deadline - time.monotonic()
        self.c.sock.settimeout(max(min(limits.idle_timeout, remaining), 0.001))
        try:
            data = self.c.recv(limits.read_size)
        except ConnectionShed:  # closed to make room for a newcomer
            why = self.c.shed
            self.reason = f"shed ({why}) to make room"
            self.service.close()  # the maildrop lock first: a goodbye the client does not read takes 1 s
            reply = Pop3Reply(False, f"[SYS/TEMP] server full, {SHED_WHY[why]}")
            self.line("out", reply.status_line)
            self.c.goodbye(self.conn.abort(reply))
            return False
        except socket.timeout:
            idle = remaining > limits.idle_timeout
            self.abort(IDLE_TIMEOUT if idle else SESSION_TIMEOUT, "idle timeout" if idle else "session timeout")
            return False
        except OSError as exc:
            stopped = self.server._stopped.is_set()
            self.reason = "server stopped" if stopped else f"connection error: {exc.strerror or exc}"
            return False
        if not data and self.server._stopped.is_set():
            self.reason = "server stopped"
        self.line_budget.received += len(data)
        self.conn.receive_data(data)
        return True

    def answer(self, event: ev.Event | None, reply: Pop3Reply) -> bool:
        """Send the reply to ``event`` (None: the greeting); False if the socket is gone."""
        self.transcript(event, reply)
        return self.write(self.conn.send(reply))

    def abort(self, reply: Pop3Reply, reason: str) -> None:
        self.reason = reason
        self.line("out", reply.status_line)
        self.write(self.conn.abort(reply))

    def write(self, data: bytes) -> bool:
        try:
            self.c.sendall(data)
            return True
        except OSError as exc:
            self.reason = f"connection error: {exc.strerror or exc}"
            return False

    def transcript(self, event: ev.Event | None, reply: Pop3Reply) -> None:
        if not reply.multiline:
            self.line("out", reply.status_line)
        elif isinstance(event, (ev.Retr, ev.Top)):  # message text: only its size
            self.line("out", f"{reply.status_line} [{wire_size(reply.body)} octets of message text not shown]")
        else:
            lines = reply.body.decode("utf-8", "replace").splitlines()
            self.line("out", reply.status_line)
            for text in lines[:MAX_LISTED_LINES]:
                self.line("out", text)
            if len(lines) > MAX_LISTED_LINES:
                self.line("out", f"... ({len(lines) - MAX_LISTED_LINES} more lines)")
            self.line("out", ".")
