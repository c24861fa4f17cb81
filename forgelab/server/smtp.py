"""The SMTP socket driver: bytes from the socket into the core, events to the pipeline, replies back."""
from __future__ import annotations

import socket
import ssl
import time

from ..pipeline import ServerContext, SmtpPipeline
from ..session import Session
from ..smtp import NEED_DATA, PAUSED, Reply, SmtpConnection, SmtpLimits, events as ev
from .base import Connection, Limits, ThreadedServer

BUSY = Reply(421, "4.7.0", "Too many connections, try again later").to_bytes()


def _describe(event) -> str:
    """What the client said, for the transcript (message text is summarised, not echoed)."""
    if isinstance(event, ev.Message):
        ending = event.ending.decode("latin-1").encode("unicode_escape").decode()
        return f"<message of {len(event.raw)} octets, ended by {ending}>"
    return ""


class SmtpServer:
    def __init__(self, context: ServerContext, host: str = "127.0.0.1", port: int = 1025,
                 limits: Limits | None = None, *, reuse_port: bool = False):
        self.context = context
        self.limits = limits or Limits()
        # reuse_port: worker processes listen on the same port (serve --workers).
        self._server = ThreadedServer("smtp", host, port, self._handle, BUSY, self.limits, kernel_timeouts=True,
                                      reuse_port=reuse_port)

    def start(self) -> "SmtpServer":
        self._server.start()
        return self

    def stop(self) -> None:
        self.context.stopping.set()
        self._server.stop()

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    @staticmethod
    def _core(pipeline: SmtpPipeline) -> SmtpConnection:
        """The protocol core, under the same policy as the session's pipeline."""
        policy = pipeline.policy
        limits = SmtpLimits(max_message_size=pipeline.max_message_size,
                            max_errors=int(policy.setting("max_errors", 20)),
                            max_commands=int(policy.setting("max_commands", 10_000)))
        return SmtpConnection(limits, end_of_data=policy.setting("end_of_data", "strict"),
                              strict_addresses=policy.setting("address_syntax", "strict") == "strict")

    def _handle(self, conn: Connection) -> None:
        bus = self.context.bus
        session = Session(peer_ip=conn.peer_ip, peer_port=conn.peer_port)
        pipeline = SmtpPipeline(self.context, session)
        core = self._core(pipeline)
        bus.publish("session.open", protocol="smtp", session=session.as_dict(), policy=pipeline.policy.name)

        def say(reply: Reply) -> None:
            data = core.send(reply)
            bus.publish("session.line", session_id=session.id, protocol="smtp", direction="out",
                        text=data.decode("utf-8", "replace").rstrip("\r\n").replace("\r\n", "\n"))
            conn.sendall(data)

        deadline = time.monotonic() + self.limits.session_timeout
        reason = "client quit"
        try:
            greeting = pipeline.connect()
            say(greeting)
            if greeting.code >= 400:  # refused at connect: say why, then hang up
                reason = "refused at connect"
                return
            while not core.closed and not self._server.stopping:
                event = core.next_event()
                if event is NEED_DATA:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        say(Reply(421, "4.4.2", "Session time limit reached, closing"))
                        reason = "session time limit"
                        return
                    # A no-op unless it changed (mostly it is the same idle limit): no syscall per read.
                    conn.set_timeout(min(self.limits.idle_timeout, remaining), kernel=True)
                    try:
                        data = conn.recv(self.limits.read_size)
                    except socket.timeout:
                        if deadline - time.monotonic() <= 0:
                            continue  # answered as the session limit above
                        say(Reply(421, "4.4.2", "Idle too long, closing"))
                        reason = "idle timeout"
                        return
                    core.receive_data(data)
                    continue
                if isinstance(event, ev.ConnectionClosed):
                    reason = "client closed the connection"
                    return
                assert event is not PAUSED, "every event is answered before the next"
                shown = _describe(event) or core.last_line  # the core masks credentials
                bus.publish("session.line", session_id=session.id, protocol="smtp", direction="in", text=shown)
                reply = pipeline.handle(event)
                say(reply)
                if isinstance(event, ev.StartTls) and reply.code == 220:
                    if not self._start_tls(conn, core, session, deadline):
                        reason = "TLS handshake failed"
                        return
        except OSError as exc:
            reason = f"connection error: {exc.strerror or exc}"
        finally:
            bus.publish("session.close", protocol="smtp", session_id=session.id, reason=reason)

    def _start_tls(self, conn: Connection, core: SmtpConnection, session: Session, deadline: float) -> bool:
        """Wrap the socket after the 220 to STARTTLS; False if the handshake failed."""
        # CVE-2011-0411: commands pipelined in plain text after STARTTLS must not run inside TLS.
        dropped = core.discard_buffered()
        bus = self.context.bus
        if dropped:
            bus.publish("session.line", session_id=session.id, protocol="smtp", direction="in",
                        text=f"<{dropped} octets sent after STARTTLS before the handshake: discarded (CVE-2011-0411)>")
        # The handshake and TLS reads need Python's own timeouts (poll), not the kernel's.
        conn.set_timeout(max(min(self.limits.idle_timeout, deadline - time.monotonic()), 0.001), kernel=False)
        try:
            conn.sock = self.context.tls.wrap_socket(conn.sock, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            bus.publish("session.tls", session_id=session.id, protocol="smtp", ok=False, error=str(exc)[:200])
            return False
        session.tls = True
        bus.publish("session.tls", session_id=session.id, protocol="smtp", ok=True,
                    version=conn.sock.version(), cipher=(conn.sock.cipher() or ("",))[0])
        return True
