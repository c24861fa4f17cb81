"""The SMTP server protocol as a state machine that only moves bytes (h11 style).

    conn = SmtpConnection()
    conn.receive_data(bytes_from_socket)      # b"" means the client closed
    event = conn.next_event()                 # an event, NEED_DATA or PAUSED
    bytes_to_socket = conn.send(reply)        # answer the event; moves the state

One event is answered before the next is parsed, so pipelined commands are
handled (and answered) in order, and bytes after ``DATA`` are message text
only once the ``354`` has been sent.

A message bigger than ``spool_threshold`` is handed out in parts as it arrives
(``MessageText``, no reply: the driver keeps them, in a file), so the core holds at
most about that much of it; it ends with a ``MessageEnd``, and the driver gives the
joined text back to ``spooled_message()`` for the ``Message`` to answer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ...core.credentials import MAYBE_CREDENTIAL, lone_word
from . import events as ev
from .commands import COMMANDS, SyntaxProblem, parse_command
from .replies import Reply
from .state import ONCE_PER_SESSION, State, allowed, done_after, next_state

STRICT_END = b"\r\n.\r\n"
# What lenient (vulnerable) servers also take as the end of data: the SMTP smuggling endings.
LENIENT_END = re.compile(rb"(\r\n|\r|\n)(\x00?)\.(\x00?)(\r\n|\r|\n)")

_BEFORE_HELO = "send HELO or EHLO first"
# What to say when a command comes out of sequence: by (command, state), else by command.
_SEQUENCE_REPLIES = {
    (ev.MailFrom, State.GREETING): (503, _BEFORE_HELO),
    (ev.MailFrom, State.MAIL): (503, "sender already given: send RSET to start a new message"),
    (ev.MailFrom, State.RCPT): (503, "sender already given: send RSET to start a new message"),
    (ev.RcptTo, State.GREETING): (503, _BEFORE_HELO),
    (ev.Data, State.GREETING): (503, _BEFORE_HELO),
    (ev.Data, State.READY): (503, "send MAIL FROM first"),
    # RFC 2920 3.1: DATA after every RCPT TO was refused.
    (ev.Data, State.MAIL): (554, "no valid recipients: every RCPT TO was refused, or none was sent"),
    ev.RcptTo: (503, "send MAIL FROM first"),
    ev.StartTls: (503, "STARTTLS is allowed only after EHLO, outside a message"),
    ev.XClient: (503, "XCLIENT is allowed only outside a message"),
    ev.Auth: (503, "AUTH is allowed only after EHLO, outside a message"),
}
BARE_LF_END = ("Bare <LF> line endings: the line holding only a dot ended with <LF>, but DATA ends with "
               "<CR><LF>.<CR><LF>. Nothing was stored; closing. (telnet and nc -C send <CR><LF>.)")


def _sequence_error(state: State, event) -> Reply:
    kind = type(event)
    code, hint = _SEQUENCE_REPLIES.get((kind, state)) or _SEQUENCE_REPLIES.get(kind, (503, "not allowed now"))
    return Reply(code, "5.5.1", f"Bad sequence of commands: {hint}" if code == 503 else hint.capitalize())


@dataclass
class SmtpLimits:
    max_command_line: int = 512  # octets with CRLF, RFC 5321 4.5.3.1.4
    max_text_line: int = 1000  # octets with CRLF, RFC 5321 4.5.3.1.6
    max_message_size: int = 10 * 1024 * 1024
    max_errors: int = 20
    max_commands: int = 10_000
    # Octets of message text held before they are handed out in MessageText parts (to a spool file).
    spool_threshold: int = 1024 * 1024


class SmtpConnection:
    def __init__(self, limits: SmtpLimits | None = None, end_of_data: str = "strict",
                 strict_addresses: bool = True):
        if end_of_data not in ("strict", "lenient"):
            raise ValueError("end_of_data must be 'strict' or 'lenient'")
        self.limits = limits or SmtpLimits()
        self.lenient_end = end_of_data == "lenient"
        self.strict_addresses = strict_addresses
        self.state = State.GREETING
        self._done: frozenset = frozenset()  # once-per-session commands that succeeded (state.ONCE_PER_SESSION)
        self.errors = 0
        self.commands = 0
        self._buffer = bytearray()
        self._eof = False
        self._pending: object | None = None
        self._discarding_line = False
        self._discarded_head = b""  # the start of the over-long line being dropped
        self._data = bytearray()  # the message text not handed out yet, after _head octets
        self._head = 2  # the CRLF that ended DATA, at the start of _data until the first part goes out
        self._data_scanned = 0
        self._data_out = 0  # octets of text handed out (MessageText) or dropped
        self._dropping = False  # the message will be refused at its end: its text is dropped, not handed out
        self._line = 0  # length of the line the handed-out text ends in (CRLF-delimited)
        self._long_line = False  # a handed-out or dropped line was over the text line limit
        self.last_line = ""  # the last command line as typed (cut short), for transcripts
        self._crlf_in_data = False
        self._mask_next = False  # after a refused AUTH, lines up to the next command may be credentials

    # -- input -------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        else:
            self._buffer += data

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def tls_from_the_start(self) -> None:
        """Implicit TLS (RFC 8314): the session is inside TLS from its first byte, so STARTTLS is out of sequence."""
        self._done = self._done | {ev.StartTls}

    def discard_buffered(self) -> int:
        """Drop bytes the client sent ahead (after STARTTLS they must not count: CVE-2011-0411)."""
        dropped = len(self._buffer)
        self._buffer.clear()
        return dropped

    def next_event(self):
        if self.state is State.CLOSED:
            return ev.ConnectionClosed()
        if self._pending is not None:
            return ev.PAUSED
        if self.state is State.DATA:
            event = self._next_data_event()
        else:
            event = self._next_command_event()
        if event is not ev.NEED_DATA and not isinstance(event, (ev.ConnectionClosed, ev.MessageText)):
            self._pending = event
        return event

    def _next_command_event(self):
        newline = self._buffer.find(b"\n")
        if newline < 0:
            if len(self._buffer) > self.limits.max_command_line:
                if not self._discarding_line:
                    self._discarded_head = bytes(self._buffer[:80])
                self._discarding_line = True  # keep memory bounded: drop it, answer at its end
                self._buffer.clear()
            return ev.ConnectionClosed() if self._eof else ev.NEED_DATA
        raw = bytes(self._buffer[:newline + 1])
        del self._buffer[:newline + 1]
        if self._discarding_line:
            self._discarding_line = False
            return self._too_long(self._discarded_head)
        return self._command(raw)

    def _shown(self, line: bytes) -> str:
        shown = _safe_to_show(line.decode("utf-8", "replace"), self.state, self._mask_next)
        self._mask_next = self._mask_next and shown == MASKED_RESPONSE  # a command line ends them
        return shown

    def _too_long(self, head: bytes):
        # The same event however the line arrived: whole, or dropped piece by piece. It is the
        # line after a refused AUTH as much as a short one would be: a credential is not shown.
        shown = self._shown(head[:80])
        self.last_line = "<a line over 512 octets, dropped>"
        return ev.CommandError(Reply(500, "5.5.2", "Line too long (the limit is 512 octets)"), shown)

    def _command(self, raw: bytes):
        if len(raw) > self.limits.max_command_line:
            return self._too_long(raw)
        line_bytes = raw.rstrip(b"\r\n")
        shown = self._shown(line_bytes[:200])
        self.last_line = shown
        self.commands += 1
        if self.state is State.AUTH:
            return ev.AuthResponse(line_bytes.decode("ascii", "replace"))
        if b"\x00" in line_bytes:
            return ev.CommandError(Reply(501, "5.5.4", "NUL bytes are not allowed in commands"), shown)
        if _CONTROL.search(line_bytes):  # a bare CR in HELO would split the Received header we write
            return ev.CommandError(Reply(501, "5.5.4", "Control characters (such as a bare CR) are not allowed in commands"), shown)
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError:
            return ev.CommandError(Reply(501, "5.5.4", "Command is not valid UTF-8"), shown)
        if not line.strip():
            return ev.CommandError(Reply(500, "5.5.2", "Empty command; try HELP"), shown)
        try:
            event = parse_command(line, strict_addresses=self.strict_addresses)
        except KeyError:
            verb = line.split()[0]
            # Echo only what looks like a verb: a stray token may be a password (after a refused AUTH).
            named = f": {verb}" if re.fullmatch(r"[A-Za-z]{1,12}", verb) and not shown.startswith("<") else ""
            return ev.CommandError(Reply(500, "5.5.2", f"Command unrecognized{named}; try HELP"), shown)
        except SyntaxProblem as problem:
            return ev.CommandError(problem.reply, shown)
        if not allowed(self.state, type(event)):
            return ev.CommandError(_sequence_error(self.state, event), shown)
        if type(event) in self._done:
            return ev.CommandError(Reply(503, "5.5.1", ONCE_PER_SESSION[type(event)]), shown)
        return event

    def _next_data_event(self):
        if self._buffer:
            self._data += self._buffer
            self._buffer.clear()
        scanned_from = self._data_scanned
        found = self._find_end()
        if found is None:
            if not self.lenient_end and self._lf_only_end(scanned_from):
                # An LF-only client (nc without -C) would wait here forever: say why and hang up.
                self._reset_data()
                return ev.CommandError(Reply(521, "5.5.2", BARE_LF_END))
            if self._eof:
                return ev.ConnectionClosed()
            if self._dropping or self._data_out + len(self._data) - self._head > self.limits.max_message_size + 8:
                self._drop()
            elif len(self._data) > self.limits.spool_threshold:
                return self._hand_out()
            return ev.NEED_DATA
        start, end, ending, line_end = found
        text = bytes(self._data[self._head:start]) + line_end if start >= self._head else b""
        self._buffer[:0] = self._data[end:]  # pipelined commands after the message
        handed_out, carried, long_line = self._data_out, self._line, self._long_line
        self._reset_data()
        if handed_out + len(text) > self.limits.max_message_size:
            return ev.CommandError(Reply(552, "5.3.4", f"Message too big (the limit is {self.limits.max_message_size} octets); nothing was stored"))
        if long_line or _longest_line(text, carried) > self.limits.max_text_line - 2:
            return ev.CommandError(Reply(500, "5.5.2", "A text line is longer than 1000 octets; nothing was stored"))
        if handed_out:
            return ev.MessageEnd(text, ending, handed_out + len(text))
        return _message(text, ending, self.lenient_end)

    def _reset_data(self) -> None:
        self._data.clear()
        self._data_scanned = self._data_out = self._line = 0
        self._dropping = self._long_line = False

    def _drop(self) -> None:
        """The message will be refused: keep only the tail needed to spot the end of data."""
        self._dropping = True
        keep = 8
        if len(self._data) > keep:
            self._data_out += len(self._data) - keep - self._head
            del self._data[:-keep]
            self._head = self._data_scanned = 0

    def _hand_out(self):
        """The text up to the last line break that cannot be part of the end of data (the
        longest end, lenient, is 7 octets), as a MessageText; never between CR and LF."""
        data = self._data
        limit = len(data) - 7
        cut = max(data.rfind(b"\r", 0, limit), data.rfind(b"\n", 0, limit))
        if cut > 0 and data[cut] == 0x0A and data[cut - 1] == 0x0D:
            cut -= 1
        if cut <= self._head:  # no line break in all that text: a long line, or a tiny threshold
            if limit - max(cut + 2, self._head) > self.limits.max_text_line - 2:
                self._long_line = True
                self._drop()
            return ev.NEED_DATA
        part = bytes(data[self._head:cut])
        longest, self._line = _line_lengths(part, self._line)
        del data[:cut]
        self._data_scanned -= cut
        self._head = 0
        self._data_out += len(part)
        if longest > self.limits.max_text_line - 2:  # refused at the end anyway: keep nothing more
            self._long_line = True
            self._drop()
            return ev.NEED_DATA
        return ev.MessageText(part)

    def spooled_message(self, text: bytes) -> ev.Message:
        """The ``Message`` a ``MessageEnd`` stands for, from its whole text (every MessageText
        part, then ``last``, joined); it is the event the next ``send()`` answers."""
        end = self._pending
        if not isinstance(end, ev.MessageEnd) or len(text) != end.size:
            raise ValueError("spooled_message() takes the whole text of the MessageEnd being answered")
        self._pending = _message(text, end.ending, self.lenient_end)
        return self._pending

    def _find_end(self):
        if self.lenient_end:
            # A ``\r`` at the very end may still become ``\r\n``: wait for one more byte.
            for m in LENIENT_END.finditer(self._data, max(self._data_scanned - 6, 0)):
                if m.end() == len(self._data) and self._data.endswith(b"\r") and not self._eof:
                    break
                return m.start(), m.end(), m.group(0), m.group(1)
            self._data_scanned = len(self._data)
            return None
        i = self._data.find(STRICT_END, max(self._data_scanned - 4, 0))
        if i < 0:
            self._data_scanned = len(self._data)
            return None
        return i, i + len(STRICT_END), STRICT_END, b"\r\n"

    def _lf_only_end(self, scanned_from: int) -> bool:
        """``<LF>.<LF>`` from a client that has sent no CRLF in this message before it (what
        follows it, pipelined, does not count: the same answer however the bytes arrive)."""
        if self._crlf_in_data:
            return False
        start = max(scanned_from - 3, self._head - 1, 0)  # _head - 1: the LF of the line that said DATA
        crlf = self._data.find(b"\r\n", max(start, self._head))
        if crlf < 0:
            return self._data.find(b"\n.\n", start) >= 0
        if self._data.find(b"\n.\n", start, crlf + 2) >= 0:  # before the first CRLF
            return True
        self._crlf_in_data = True
        return False

    # -- output ------------------------------------------------------------
    def send(self, reply: Reply) -> bytes:
        """Answer the pending event (or send the greeting) and move the state."""
        event, self._pending = self._pending, None
        typed_verb = self.last_line.split(None, 1)[0].upper() if self.last_line.strip() else ""
        if reply.code >= 400 and (isinstance(event, (ev.Auth, ev.AuthResponse)) or self.state is State.AUTH
                                  or isinstance(event, ev.CommandError) and typed_verb == "AUTH"):
            self._mask_next = True  # a user name and a password may follow, typed or pipelined
        if event is not None and not isinstance(event, ev.CommandError):
            if reply.code != 334:  # a 334 goes on with the exchange: not a final answer
                self._done = done_after(self._done, type(event), positive=reply.code < 400)
            self.state = next_state(self.state, type(event), positive=reply.code < 400,
                                    intermediate=reply.code == 334)
            if self.state is State.DATA:
                self._data[:] = b"\r\n"  # the CRLF that ended DATA belongs to the end marker
                self._head = 2
                self._crlf_in_data = False
        elif self.state is State.DATA and isinstance(event, ev.CommandError):
            self.state = State.READY  # a refused message ends the transaction
        out = reply.to_bytes()
        if reply.code >= 500:
            self.errors += 1
        if reply.code in (421, 521):  # both say "closing" (RFC 5321 3.8, RFC 7504)
            self.state = State.CLOSED
        elif self.errors > self.limits.max_errors and self.state is not State.CLOSED:
            self.state = State.CLOSED
            out += Reply(421, "4.7.0", "Too many errors in this session, closing").to_bytes()
        elif self.commands > self.limits.max_commands and self.state is not State.CLOSED:
            self.state = State.CLOSED
            out += Reply(421, "4.7.0", "Too many commands in this session, closing").to_bytes()
        return out


_CONTROL = re.compile(rb"[\x01-\x08\x0a-\x1f\x7f]")
_LINE_START_DOT = re.compile(rb"([\r\n])\.")


# SASL mechanism names shown in transcripts; anything else after AUTH may be the credential itself.
_MECHANISMS = {"PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "XOAUTH2", "OAUTHBEARER", "GSSAPI", "NTLM",
               "EXTERNAL", "ANONYMOUS", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"}
MASKED_RESPONSE = "<AUTH response ****>"


def _safe_to_show(line: str, state: State, after_refused_auth: bool = False) -> str:
    """The line for transcripts: a credential is never shown, however the AUTH was typed.

    After a refused AUTH the client may still send its credentials: every line up to the next
    command (a known verb) is masked."""
    if state is State.AUTH:
        return MASKED_RESPONSE
    words = line.split(None, 2)
    if words and words[0][:4].upper() == "AUTH":
        if words[0].upper() != "AUTH" or len(words) > 1 and words[1].upper() not in _MECHANISMS:
            return f"{words[0][:4]} ****"
        return f"{words[0]} {words[1]} ****" if len(words) > 2 else line
    if after_refused_auth and not (words and words[0].upper() in COMMANDS):
        return MASKED_RESPONSE
    if lone_word(line, COMMANDS):
        return MAYBE_CREDENTIAL
    return line


def _unstuff(body: bytes, lenient: bool = False) -> bytes:
    """RFC 5321 4.5.2: remove the first dot of every line that starts with one.

    A lenient server also takes a bare LF or CR as the end of a line.
    """
    if body.startswith(b"."):
        body = body[1:]
    if lenient:
        return _LINE_START_DOT.sub(rb"\1", body)
    return body.replace(b"\r\n.", b"\r\n")


def _message(text: bytes, ending: bytes, lenient: bool) -> ev.Message:
    raw = _unstuff(text, lenient)
    return ev.Message(raw, ending, wire=text if len(raw) != len(text) else raw)


def _longest_line(text: bytes, carried: int = 0) -> int:
    """The longest CRLF-delimited line of ``text``, the first one ``carried`` octets longer."""
    if len(text) + carried < 999:
        return len(text) + carried
    return _line_lengths(text, carried)[0]


def _line_lengths(text: bytes, carried: int) -> tuple[int, int]:
    """(the longest line of ``text``, the length of its last line), the first ``carried`` longer."""
    lines = text.split(b"\r\n")
    longest = max(map(len, lines))
    if carried:
        longest = max(longest, carried + len(lines[0]))
    return longest, (carried if len(lines) == 1 else 0) + len(lines[-1])
