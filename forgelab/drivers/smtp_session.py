"""One SMTP session between a socket driver and the pipeline: bytes in, reply bytes out, no socket.

Both drivers use it: the threaded one (a thread per connection, blocking reads) and the
selector one (one thread for every plain-text connection). It feeds what the client sent
to the protocol core, hands each event to the pipeline, writes the transcript lines and
returns the reply bytes to send.
"""
from __future__ import annotations

import logging
import time

from ..core.event_records import SessionClose, SessionLine, SessionOpen, SessionTls
from ..core.events import TranscriptBudget
from ..core.pipeline import PendingDelivery, ServerContext, SmtpPipeline
from ..core.session import Session
from ..protocols.smtp import NEED_DATA, PAUSED, Reply, SmtpConnection, SmtpLimits, events as ev
from ..protocols.smtp.state import State
from ..store.spool import SpoolFile
from .shedding import SHED_WHY

log = logging.getLogger(__name__)

MAX_OUTPUT = 65536  # reply octets run() returns at most (a little over) before it pauses, setting ``more``
IDLE_REPLY = Reply(421, "4.4.2", "Idle too long, closing")
SESSION_LIMIT_REPLY = Reply(421, "4.4.2", "Session time limit reached, closing")
SPOOL_FAILED = Reply(452, "4.3.1", "Insufficient system storage: the message could not be spooled; nothing was stored")
ROOM_RETRY = 0.05  # seconds between tries for room in the memory budget, for a big message at its end
SHED_REPLIES = {why: Reply(421, "4.7.0", f"Server full, {text}") for why, text in SHED_WHY.items()}


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
                        max_errors=int(policy.setting("max_errors")),  # defaults: settings.py
                        max_commands=int(policy.setting("max_commands")),
                        spool_threshold=int(policy.setting("spool_threshold")))
    return SmtpConnection(limits, end_of_data=policy.setting("end_of_data"),
                          strict_addresses=policy.setting("address_syntax") == "strict")


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

    A message past the core's spool threshold goes to a spool file as it arrives. At its end
    it is read back once the process's memory budget has room for it; a message bigger than
    the budget's ``floor`` waits for room too, even if it was never spooled. Until then
    ``delay`` is set (nothing is read meanwhile) and ``run()`` tries again.
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
        self.spool = context.spool
        self._spool_file: SpoolFile | None = None  # the text of the message in DATA, past the threshold
        self._spool_failed = False
        self._waiting: ev.Message | ev.MessageEnd | None = None  # a big message waiting for room in memory
        self._room = 0  # octets this session holds of the memory budget
        self.bus.publish(SessionOpen("smtp", self.session.as_dict(), self.pipeline.policy.name))

    def say(self, reply: Reply) -> bytes:
        data = self.core.send(reply)
        self._line("out", data.decode("utf-8", "replace").rstrip("\r\n").replace("\r\n", "\n"))
        return data

    def _line(self, direction: str, text: str) -> None:
        text = self.line_budget.take(text)
        if text is not None:
            self.bus.publish(SessionLine(self.session.id, "smtp", direction, text))

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
            self._give_room()
        self.delay = 0.0
        core = self.core
        self.more = False
        while not core.closed:
            if size >= MAX_OUTPUT:  # a client pipelining thousands of commands gets its replies in parts
                self.more = True
                return b"".join(out)
            event = self._waiting or core.next_event()
            if event is NEED_DATA:
                return b"".join(out)
            if type(event) is ev.MessageText:
                self._keep(event.data)
                continue
            if isinstance(event, ev.MessageEnd) or type(event) is ev.Message and len(event.raw) >= self.spool.budget.floor:
                event = self._with_room(event)
                if event is None:  # no room in memory for it now
                    self.delay = ROOM_RETRY
                    return b"".join(out)
            elif self._spool_file is not None or self._spool_failed:
                self._drop_spool()  # the message ended without a Message (refused, or the client left)
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
            if self._room:
                self._give_room()
            if isinstance(event, ev.StartTls) and reply.code == 220:
                self.starting_tls = True
                return b"".join(out)
        self.done = True
        return b"".join(out)

    def _keep(self, text: bytes) -> None:
        """A part of a big message's text, to the spool file (made at the first)."""
        if self._spool_failed:
            return
        try:
            if self._spool_file is None:
                self._spool_file = self.spool.create()
            self._spool_file.write(text)
        except OSError as exc:
            log.error("spool: cannot keep a message's text: %s", exc)
            self._drop_spool()
            self._spool_failed = True  # answered at the end of the message

    def _with_room(self, event: ev.Message | ev.MessageEnd):
        """A big message's end once the memory budget has room for its text (None: not now, try
        again); a MessageEnd becomes its Message, read back from the spool file, or a
        CommandError if the spool failed."""
        self._waiting = None
        spooled = isinstance(event, ev.MessageEnd)
        if spooled and self._spool_file is None:
            self._drop_spool()
            return ev.CommandError(SPOOL_FAILED)
        if not self._room:
            self._room = self.spool.budget.take(event.size if spooled else len(event.raw))
            if not self._room:
                self._waiting = event
                return None
        return self._unspool(event) if spooled else event

    def _unspool(self, end: ev.MessageEnd):
        try:
            self._spool_file.write(end.last)
            text = self._spool_file.read()
        except OSError as exc:
            log.error("spool: cannot read a message's text back: %s", exc)
            return ev.CommandError(SPOOL_FAILED)
        finally:
            self._drop_spool()
        return self.core.spooled_message(text)

    def _drop_spool(self) -> None:
        if self._spool_file is not None:
            self._spool_file.discard()
            self._spool_file = None
        self._spool_failed = False

    def _give_room(self) -> None:
        room, self._room = self._room, 0
        if room:
            self.spool.budget.give(room)

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

    @property
    def in_progress(self) -> bool:
        """A message or an AUTH exchange is under way: the client is not between commands."""
        return self.core.state in (State.DATA, State.AUTH)

    def shed(self, why: str) -> bytes:
        """The 421 for a connection closed to make room (``why``: idle or slow); ends the session."""
        self.end(f"shed ({why}) to make room")
        return self.say(SHED_REPLIES[why])

    def drop_plaintext_after_starttls(self) -> None:
        """CVE-2011-0411: commands pipelined in plain text after STARTTLS must not run inside TLS."""
        dropped = self.core.discard_buffered()
        if dropped:
            self._line("in", f"<{dropped} octets sent after STARTTLS before the handshake: discarded (CVE-2011-0411)>")

    def tls_started(self, ok: bool, *, version: str = "", cipher: str = "", error: str = "",
                    implicit: bool = False) -> None:
        """The handshake after STARTTLS, or (``implicit``) before the banner, is done or failed."""
        self.starting_tls = False
        if ok and implicit:
            self.core.tls_from_the_start()
        if not ok:
            self.bus.publish(SessionTls(self.session.id, "smtp", False, error=error[:200]))
            self.end("TLS handshake failed")
            return
        self.session.tls = True
        self.bus.publish(SessionTls(self.session.id, "smtp", True, version=version, cipher=cipher))

    def end(self, reason: str) -> None:
        self.done = True
        self.reason = reason
        self._drop_spool()  # unfinished DATA: its text goes now (the core's part with the session)

    def close(self, reason: str | None = None) -> None:
        """The connection is gone: one session.close with why (``reason`` overrides a quiet end)."""
        if self._closed:
            return
        self._closed = True
        if reason and not self.done:
            self.reason = reason
        self.done = True
        self._drop_spool()
        self._waiting = None
        self._give_room()
        self.bus.publish(SessionClose("smtp", self.session.id, self.reason, self.line_budget.unlogged))
