"""The POP3 server side as a sans-IO state machine (h11 style): bytes in, events out.

    conn = Pop3Connection()
    out = conn.send(service.greeting())          # the banner is the first reply
    conn.receive_data(data)                      # b"" means the client closed
    event = conn.next_event()                    # an Event, or NEED_DATA
    out = conn.send(reply)                       # exactly one reply per event
"""
from __future__ import annotations

from collections import deque
from dataclasses import replace

from ...core.credentials import MAYBE_CREDENTIAL, lone_word
from ...core.printable import printable
from . import events as ev
from .commands import COMMANDS, SYNTAX, parse
from .errors import CommandError, LocalProtocolError
from .replies import Pop3Reply
from .state import GREETING, ONCE_PER_SESSION, TABLE, State, Step

# RFC 2449 4: a command line is at most 255 octets including the CRLF.
MAX_LINE = 255

_TOO_LONG = object()  # marks a discarded over-long line in the queue of received lines
_AUTH_STATES = (State.AUTHORIZATION, State.AUTHORIZATION_PASS)




def _safe_to_show(text: str) -> str:
    """The line for transcripts: a credential is never shown, however it was (mis)typed
    (" PASS x", "pass\tx", "PASS\0x", "APOP name digest", "AUTH PLAIN <base64>", base64 alone)."""
    words = text.split(None, 2)
    head = words[0][:4].upper() if words else ""
    if head in ("PASS", "AUTH"):
        return f"{words[0][:4]} ****"
    if head == "APOP":
        return f"APOP {words[1]} ****" if words[0].upper() == "APOP" and len(words) > 2 else "APOP ****"
    if lone_word(text, COMMANDS):
        return MAYBE_CREDENTIAL
    return text


def hint(state: State) -> str:
    """The commands a client may use now, with their syntax (POP3 has no HELP command)."""
    verbs = set(TABLE[state])
    if state in _AUTH_STATES:  # show PASS before USER was given, USER after
        verbs = set(TABLE[State.AUTHORIZATION]) | set(TABLE[State.AUTHORIZATION_PASS])
    verbs.discard("STLS")  # CAPA announces it, only when the server has TLS
    return ", ".join(SYNTAX[v] for v in COMMANDS if v in verbs)


class Pop3Connection:
    """One POP3 session from the server's side; see the module docstring for the loop.

    :param max_line: longest command line accepted, CRLF included; longer lines are
        discarded as they arrive (memory stays bounded) and answered -ERR.
    :param max_errors: -ERR replies a session may get; one more and it is closed
        (``send`` adds a last -ERR saying so, ``limit_reply`` holds it and ``closed_for`` says
        ``"too many errors"``). None: no limit.
    :param max_commands: commands a session may send, the same way.
    """

    def __init__(self, max_line: int = MAX_LINE, max_errors: int | None = None, max_commands: int | None = None):
        self.max_line = max_line
        self.max_errors, self.max_commands = max_errors, max_commands
        self.errors = self.commands = 0
        self.limit_reply: Pop3Reply | None = None  # the last -ERR of a session closed for too many
        self.closed_for: str | None = None
        self._greeted = False
        self._state = State.GREETING
        self._pending: Step | None = GREETING  # the banner is owed first
        self._pending_once: str | None = None  # the once-per-session verb waiting for its reply
        self._done: set[str] = set()  # once-per-session verbs that got +OK
        self._lines: deque = deque()
        self._partial = bytearray()
        self._discarding = False
        self._eof = False

    @property
    def state(self) -> State:
        return self._state

    @property
    def buffered_bytes(self) -> int:
        """Octets held for lines not yet read as events (bounded by ``max_line`` per partial line)."""
        return len(self._partial) + sum(len(x) for x in self._lines if x is not _TOO_LONG)

    def discard_buffered(self) -> int:
        """Drop every line received but not yet read (after STLS: CVE-2011-0411); returns octets."""
        dropped = self.buffered_bytes
        self._lines.clear()
        self._partial.clear()
        self._discarding = False
        return dropped

    @property
    def awaiting_reply(self) -> bool:
        return self._pending is not None

    # -- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client; ``b""`` means it closed its side."""
        if not data:
            self._eof = True
            return
        pos, end = 0, len(data)
        while pos < end:
            nl = data.find(b"\n", pos)
            if self._discarding:
                if nl < 0:
                    return
                self._discarding = False
                self._lines.append(_TOO_LONG)
            elif nl < 0:
                if len(self._partial) + end - pos > self.max_line:
                    self._partial.clear()
                    self._discarding = True  # drop the rest of this line as it comes
                else:
                    self._partial += data[pos:]
                return
            elif len(self._partial) + nl + 1 - pos > self.max_line:
                self._partial.clear()
                self._lines.append(_TOO_LONG)
            else:
                self._partial += data[pos:nl + 1]
                self._lines.append(bytes(self._partial))
                self._partial.clear()
            pos = nl + 1

    def next_event(self) -> ev.Event | ev.Sentinel:
        """The next client command as an event, NEED_DATA, or ConnectionClosed."""
        if self._pending is not None:
            raise LocalProtocolError("reply to the previous event (or send the greeting) first")
        if self._state is State.CLOSED:
            return ev.ConnectionClosed()
        if not self._lines:
            if self._eof:
                self._state = State.CLOSED  # a dropped session never reaches UPDATE
                return ev.ConnectionClosed()
            return ev.NEED_DATA
        raw = self._lines.popleft()
        event, step = self._interpret(raw)
        self._pending = step
        if step.during is not None:
            self._state = step.during
        if isinstance(event, ev.Quit) and self._state is State.UPDATE:
            event = replace(event, update=True)
        return event

    def _interpret(self, raw) -> tuple[ev.Event, Step]:
        self._pending_once = None
        state = self._state
        stay = Step(state, state)
        if raw is _TOO_LONG:
            reply = Pop3Reply.err(f"line too long (at most {self.max_line} octets with CRLF)")
            return ev.Rejected(reply, line="(over-long line discarded)"), stay
        text = raw[:-1].removesuffix(b"\r").decode("utf-8", "surrogateescape")
        typed, _, rest = text.partition(" ")
        verb = typed.upper() if typed.isascii() else ""  # "ſtat".upper() is "STAT": refuse it
        line = printable(_safe_to_show(text))
        if verb not in COMMANDS:
            return ev.Rejected(self._unknown(typed, verb), verb=verb, line=line), stay
        step = TABLE[state].get(verb)
        if step is None:
            return ev.Rejected(self._out_of_sequence(verb), verb=verb, line=line), stay
        if verb in self._done:
            return ev.Rejected(Pop3Reply.err(ONCE_PER_SESSION[verb]), verb=verb, line=line), stay
        try:
            event = parse(verb, rest)
        except CommandError as exc:
            return ev.Rejected(exc.reply, verb=verb, line=line), stay
        if verb in ONCE_PER_SESSION:
            self._pending_once = verb
        return replace(event, line=line), step

    def _unknown(self, typed: str, verb: str) -> Pop3Reply:
        if not typed:
            return Pop3Reply.err(f"empty command; commands here: {hint(self._state)}")
        if verb == "HELP":
            return Pop3Reply.err(f"POP3 has no HELP command (RFC 1939); commands here: {hint(self._state)}")
        return Pop3Reply.err(f"unknown command; commands here: {hint(self._state)}")

    def _out_of_sequence(self, verb: str) -> Pop3Reply:
        if self._state is State.AUTHORIZATION and verb == "PASS":
            return Pop3Reply.err("give USER first, then PASS")
        if self._state in _AUTH_STATES:
            return Pop3Reply.err(f"{verb} needs a login first; commands here: {hint(self._state)}")
        return Pop3Reply.err(f"{verb} is not allowed after login; commands here: {hint(self._state)}")

    # -- output --------------------------------------------------------------------------

    def send(self, reply: Pop3Reply) -> bytes:
        """The bytes of the reply to the greeting or to the last event; moves the state."""
        if self._pending is None:
            raise LocalProtocolError("no command is waiting for a reply")
        step, self._pending = self._pending, None
        self._state = step.ok if reply.positive else step.err
        if reply.positive and self._pending_once:
            self._done.add(self._pending_once)
        self._pending_once = None
        out = reply.to_bytes()
        if not self._greeted:  # the banner answers no command
            self._greeted = True
            return out
        self.commands += 1
        self.errors += not reply.positive
        over = ("errors" if self.max_errors is not None and self.errors > self.max_errors else
                "commands" if self.max_commands is not None and self.commands > self.max_commands else None)
        if over and self._state is not State.CLOSED:
            self.closed_for = f"too many {over}"
            self.limit_reply = Pop3Reply.err(f"[SYS/PERM] {self.closed_for} in this session, closing")
            self._state = State.CLOSED
            out += self.limit_reply.to_bytes()
        return out

    def abort(self, reply: Pop3Reply) -> bytes:
        """An unsolicited last -ERR (idle timeout, shutdown): the session is CLOSED, nothing committed."""
        self._pending = None
        self._state = State.CLOSED
        return reply.to_bytes()

