"""The SMTP socket driver: bytes from the socket into the core, events to the pipeline, replies back."""
from __future__ import annotations

import socket
import ssl
import time

from ..core.pipeline import ServerContext
from ..protocols.smtp import Reply
from .connection import Connection, ConnectionShed, Limits
from .threaded import ThreadedServer
from .selector import SelectorServer
from .smtp_session import SmtpSession

BUSY = Reply(421, "4.7.0", "Too many connections, try again later").to_bytes()


DRIVERS = ("threads", "selector")


class SmtpServer:
    """SMTP on ``host:port``.

    :param driver: ``threads`` (a thread per connection) or ``selector`` (one thread for every
        plain-text connection, a thread for each TLS one; faster under load, but a hook that
        blocks holds every connection up).
    :param reuse_port: worker processes listen on the same port (serve --workers).
    :param implicit_tls: every connection starts with the TLS handshake, then the session
        (RFC 8314, ``--smtps``). Served a thread each under both drivers, as the selector
        driver serves every TLS session; over the caps a newcomer is closed without a reply
        (there is no TLS yet to say it in).
    """

    def __init__(self, context: ServerContext, host: str = "127.0.0.1", port: int = 1025,
                 limits: Limits | None = None, *, reuse_port: bool = False, driver: str = "threads",
                 implicit_tls: bool = False):
        self.context = context
        limits = limits or Limits()
        if driver not in DRIVERS:
            raise ValueError(f"unknown SMTP driver {driver!r}: one of {', '.join(DRIVERS)}")
        if implicit_tls:
            if context.tls is None:
                raise ValueError("implicit TLS needs a server certificate (tls)")
            self._server = ThreadedServer("smtps", host, port, self._handle_implicit_tls, b"", limits,
                                          kernel_timeouts=True, reuse_port=reuse_port)
        elif driver == "selector":
            self._server = SelectorServer("smtp", host, port, lambda conn: self._open(conn, defer_deliveries=True),
                                          self._continue_in_tls, BUSY, limits, reuse_port=reuse_port,
                                          answer_pending=SmtpSession.answer_together)
        elif driver == "threads":
            self._server = ThreadedServer("smtp", host, port, self._handle, BUSY, limits,
                                          kernel_timeouts=True, reuse_port=reuse_port)

    def start(self) -> "SmtpServer":
        self._server.start()
        return self

    def stop(self) -> None:
        self.context.stopping.set()
        self._server.stop()

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

    def _open(self, conn: Connection, defer_deliveries: bool = False) -> SmtpSession:
        return SmtpSession(self.context, conn.peer_ip, conn.peer_port, conn.limits.session_timeout,
                           defer_deliveries=defer_deliveries)

    def _handle(self, conn: Connection) -> None:
        self._greet_and_serve(conn, self._open(conn))

    def _handle_implicit_tls(self, conn: Connection) -> None:
        """The handshake first, then the session as on the plain port (the banner inside TLS)."""
        smtp = self._open(conn)
        if not self._handshake(conn, smtp, implicit=True):
            smtp.close()
            return
        self._greet_and_serve(conn, smtp)

    def _greet_and_serve(self, conn: Connection, smtp: SmtpSession) -> None:
        try:
            conn.sendall(smtp.greet())
        except OSError as exc:
            smtp.close(f"connection error: {exc.strerror or exc}")
            return
        self._serve(conn, smtp)

    def _continue_in_tls(self, conn: Connection, smtp: SmtpSession) -> None:
        """A session the selector driver hands over after its 220 to STARTTLS: on in this thread."""
        smtp.defer_deliveries = False  # this thread may wait on the disk: it serves no one else
        self._start_tls(conn, smtp)
        self._serve(conn, smtp)

    def _serve(self, conn: Connection, smtp: SmtpSession) -> None:
        """Read, answer and write until the session ends (blocking, on the connection's thread)."""
        try:
            while not smtp.done and not self._server.stopping:
                remaining = smtp.deadline - time.monotonic()
                if remaining <= 0:
                    conn.sendall(smtp.timed_out())
                    return
                # A no-op unless it changed (mostly it is the same idle limit): no syscall per read.
                conn.set_timeout(min(conn.limits.idle_timeout, remaining), kernel=True)
                conn.in_progress = smtp.in_progress
                try:
                    data = conn.recv(conn.limits.read_size)
                except socket.timeout:
                    conn.sendall(smtp.timed_out())
                    return
                except ConnectionShed:  # closed to make room for a newcomer
                    conn.goodbye(smtp.shed(conn.shed))
                    return
                conn.sendall(smtp.feed(data))
                while smtp.more or smtp.delay:
                    if smtp.delay and self.context.stopping.wait(smtp.delay):
                        return
                    conn.sendall(smtp.run())
                if smtp.starting_tls:
                    self._start_tls(conn, smtp)
        except OSError as exc:
            smtp.close(f"connection error: {exc.strerror or exc}")
        finally:
            smtp.close()

    def _start_tls(self, conn: Connection, smtp: SmtpSession) -> None:
        """Wrap the socket after the 220 to STARTTLS."""
        smtp.drop_plaintext_after_starttls()
        self._handshake(conn, smtp)

    def _handshake(self, conn: Connection, smtp: SmtpSession, implicit: bool = False) -> bool:
        """The server side of the TLS handshake, bounded by the idle timeout; recorded either way
        (``session.tls``). Implicit TLS: a client that never starts it may be shed as a silent one."""
        # The handshake apart from the wrap: a failed wrap closes the socket at once, and the
        # client, seeing the hang-up, could look for the failure before it was recorded.
        try:
            # The handshake and TLS reads need Python's own timeouts (poll), not the kernel's.
            conn.set_timeout(max(min(conn.limits.idle_timeout, smtp.deadline - time.monotonic()), 0.001),
                             kernel=False)
            conn.sock = self.context.tls.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
            conn.waiting = implicit
            conn.sock.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            if conn.shed:  # closed to make room for a newcomer: nothing to say it in
                smtp.end(f"shed ({conn.shed}) to make room")
            else:
                smtp.tls_started(False, error=str(exc))
            return False
        finally:
            conn.waiting = False
        smtp.tls_started(True, version=conn.sock.version(), cipher=(conn.sock.cipher() or ("",))[0],
                         implicit=implicit)
        return True
