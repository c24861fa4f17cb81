"""One SMTP session between a socket driver and the pipeline: bytes in, reply bytes out, no socket.

Both drivers use it: the threaded one (a thread per connection, blocking reads) and the
selector one (one thread for every plain-text connection). It feeds what the client sent
to the protocol core, hands each event to the pipeline, writes the transcript lines and
returns the reply bytes to send.
"""
from __future__ import annotations

import time

from ..events import TranscriptBudget
from ..pipeline import PendingDelivery, ServerContext, SmtpPipeline
from ..session import Session
from ..smtp import NEED_DATA, PAUSED, Reply, SmtpConnection, SmtpLimits, events as ev

MAX_OUTPUT = 65536  # reply octets run() returns at most (a little over) before it pauses, setting ``more``
IDLE_REPLY = Reply(421, "4.4.2", "Idle too long, closing")
SESSION_LIMIT_REPLY = Reply(421, "4.4.2", "Session time limit reached, closing")


def _describe(event) -> str:
    """What the client said, for the transcript (message text is summarised, not echoed)."""
    if isinstance(event, ev.Message):
        ending = event.ending.decode("latin-1").encode("unicode_escape").decode()
        return f"<message of {len(event.raw)} octets, ended by {ending}>"
    return ""


def smtp_core(pipeline: SmtpPipeline) -> SmtpConnection:
    """The protocol core, under the same policy as the session's pipeline."""
    policy = pipeline.policy
    limits = SmtpLimits(max_message_size=pipeline.max_message_size,
                        max_errors=int(policy.setting("max_errors", 20)),
                        max_commands=int(policy.setting("max_commands", 10_000)))
    return SmtpConnection(limits, end_of_data=policy.setting("end_of_data", "strict"),
                          strict_addresses=policy.setting("address_syntax", "strict") == "strict")


class SmtpSession:
    """The server side of one SMTP connection, without its socket.

    ``greet()`` and ``feed(data)`` return the bytes to send. After them, ``done`` says the
    session is over (send what was returned, then close) and ``starting_tls`` that the client
    was told 220 to STARTTLS (send it, then wrap the socket and call ``tls_started``).
    ``feed(b"")`` is the client closing its side. ``close(reason)`` ends the transcript once.
    Replies to a long pipelined batch come in parts: while ``more`` is set, send what was
    returned and call ``run()`` for the next part. A reply the pipeline wants slowed down (a
    failed login) is held back: ``delay`` says how many seconds to wait before ``run()``,
    whose output then starts with it.

    With ``defer_deliveries``, a message its hooks let through is not stored at once: ``feed``
    stops there and leaves the delivery in ``pending``. The selector driver runs
    ``answer_pending()`` (the disk writes and fsyncs) on another thread, so they do not hold
    the other connections up, and then ``run()``, which answers it and what came after it.
    """

    def __init__(self, context: ServerContext, peer_ip: str, peer_port: int, session_timeout: float,
                 defer_deliveries: bool = False):
        self.bus = context.bus
        self.session = Session(peer_ip=peer_ip, peer_port=peer_port)
        self.pipeline = SmtpPipeline(context, self.session)
        self.core = smtp_core(self.pipeline)
        self.deadline = time.monotonic() + session_timeout
        self.done = False
        self.starting_tls = False
        self.more = False
        self.delay = 0.0
        self._held = b""  # the reply held back for ``delay``
        self.defer_deliveries = defer_deliveries
        self.pending: PendingDelivery | None = None
        self._written: PendingDelivery | None = None  # answer_pending() stored it: run() answers
        self.reason = "client quit"
        self._closed = False
        self.line_budget = TranscriptBudget()
        self.bus.publish("session.open", protocol="smtp", session=self.session.as_dict(),
                         policy=self.pipeline.policy.name)

    def say(self, reply: Reply) -> bytes:
        data = self.core.send(reply)
        self._line("out", data.decode("utf-8", "replace").rstrip("\r\n").replace("\r\n", "\n"))
        return data

    def _line(self, direction: str, text: str) -> None:
        text = self.line_budget.take(text)
        if text is not None:
            self.bus.publish("session.line", session_id=self.session.id, protocol="smtp", direction=direction, text=text)

    def greet(self) -> bytes:
        greeting = self.pipeline.connect()
        data = self.say(greeting)
        if greeting.code >= 400:  # refused at connect: say why, then hang up
            self.end("refused at connect")
        return data

    def feed(self, data: bytes) -> bytes:
        """What the client sent (b"" when it closed): the replies to every command it completes."""
        self.line_budget.received += len(data)
        self.core.receive_data(data)
        return self.run()

    def run(self) -> bytes:
        """Answer every event the core has, until it needs more bytes, the session ends, TLS
        starts, a delivery is left ``pending`` or ``MAX_OUTPUT`` octets of replies are ready."""
        out = [self._held] if self._held else []
        size = len(self._held)
        self._held = b""
        if self._written is not None:
            delivery, self._written = self._written, None
            out.append(self.say(delivery.finish()))
        self.delay = 0.0
        core = self.core
        self.more = False
        while not core.closed:
            if size >= MAX_OUTPUT:  # a client pipelining thousands of commands gets its replies in parts
                self.more = True
                return b"".join(out)
            event = core.next_event()
            if event is NEED_DATA:
                return b"".join(out)
            if isinstance(event, ev.ConnectionClosed):
                self.end("client closed the connection")
                return b"".join(out)
            assert event is not PAUSED, "every event is answered before the next"
            shown = _describe(event) or core.last_line  # the core masks credentials
            self._line("in", shown)
            if self.defer_deliveries and isinstance(event, ev.Message):
                reply = self.pipeline.check_message(event)
                if isinstance(reply, PendingDelivery):
                    self.pending = reply
                    return b"".join(out)
            else:
                reply = self.pipeline.handle(event)
            if self.pipeline.reply_delay > 0:
                self.delay, self.pipeline.reply_delay = self.pipeline.reply_delay, 0.0
                self._held = self.say(reply)
                return b"".join(out)
            out.append(self.say(reply))
            size += len(out[-1])
            if isinstance(event, ev.StartTls) and reply.code == 220:
                self.starting_tls = True
                return b"".join(out)
        self.done = True
        return b"".join(out)

    def answer_pending(self) -> None:
        """Store the ``pending`` delivery (any thread); the next ``run()`` answers it."""
        self.answer_together([self])

    @staticmethod
    def answer_together(sessions: list["SmtpSession"]) -> None:
        """``answer_pending()`` of several sessions at once: their deliveries share the fsyncs."""
        deliveries = []
        for session in sessions:
            delivery, session.pending = session.pending, None
            session._written = delivery
            deliveries.append(delivery)
        PendingDelivery.write_together(deliveries)

    def timed_out(self) -> bytes:
        """The 421 for a client that went quiet, or whose session ran past its limit; ends the session."""
        if time.monotonic() >= self.deadline:
            self.end("session time limit")
            return self.say(SESSION_LIMIT_REPLY)
        self.end("idle timeout")
        return self.say(IDLE_REPLY)

    def drop_plaintext_after_starttls(self) -> None:
        """CVE-2011-0411: commands pipelined in plain text after STARTTLS must not run inside TLS."""
        dropped = self.core.discard_buffered()
        if dropped:
            self._line("in", f"<{dropped} octets sent after STARTTLS before the handshake: discarded (CVE-2011-0411)>")

    def tls_started(self, ok: bool, *, version: str = "", cipher: str = "", error: str = "") -> None:
        self.starting_tls = False
        if not ok:
            self.bus.publish("session.tls", session_id=self.session.id, protocol="smtp", ok=False, error=error[:200])
            self.end("TLS handshake failed")
            return
        self.session.tls = True
        self.bus.publish("session.tls", session_id=self.session.id, protocol="smtp", ok=True,
                         version=version, cipher=cipher)

    def end(self, reason: str) -> None:
        self.done = True
        self.reason = reason

    def close(self, reason: str | None = None) -> None:
        """The connection is gone: one session.close with why (``reason`` overrides a quiet end)."""
        if self._closed:
            return
        self._closed = True
        if reason and not self.done:
            self.reason = reason
        self.done = True
        self.bus.publish("session.close", protocol="smtp", session_id=self.session.id, reason=self.reason,
                         unlogged_lines=self.line_budget.unlogged)
