"""A forging SMTP client (in the spirit of swaks) that sends exactly the bytes it is given.

    client = ForgeClient("127.0.0.1", 1025, source_ip="127.0.66.1")
    client.connect()                       # the banner, as a Reply
    client.command("EHLO mail.phish.example")
    client.send_raw(b"MAIL FROM:<(any@bank.example>\\r\\n")   # verbatim, no checks
    client.read_reply()

or one whole transaction with :func:`send`. Nothing here "fixes" what it is told to
send: no dot-stuffing unless asked, no line-ending repair, no address validation.
Every byte in and out is kept in ``client.transcript`` for display.
"""
from __future__ import annotations

import base64

import socket
import time
from dataclasses import dataclass, field
from email.utils import format_datetime, make_msgid
from typing import Callable, Iterable, Sequence

CRLF = b"\r\n"
END_OF_DATA = b"\r\n.\r\n"

# Exit statuses of ``forgelab forge`` (and ForgeResult.exit_status).
EXIT_ACCEPTED = 0
EXIT_ERROR = 1      # could not connect, timed out, the server hung up, a local error
EXIT_REJECTED = 3   # a 5xx reply refused the message (at any stage)
EXIT_TEMPFAILED = 4  # a 4xx reply: try again later

LINE_ENDINGS = {"crlf": b"\r\n", "lf": b"\n", "cr": b"\r"}


class ForgeError(Exception):
    """The conversation could not go on: no connection, a timeout, the server hung up."""


@dataclass(frozen=True)
class Reply:
    """One (possibly multi-line) SMTP reply as received."""

    code: int
    lines: tuple[str, ...]
    raw: bytes

    @property
    def text(self) -> str:
        return " / ".join(self.lines)

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True)
class WireEntry:
    """One chunk on the wire: ``direction`` is ``"C"`` (client, us) or ``"S"`` (server)."""

    direction: str
    data: bytes
    at: float = field(default_factory=time.monotonic, compare=False)


def escape_bytes(data: bytes, double_backslash: bool = True) -> str:
    """Bytes made readable and safe to print: CR, LF, NUL, other controls and bytes that are
    not UTF-8 shown as escapes (``\\r \\n \\x00 \\xff \\u202e``).

    ``double_backslash`` shows a backslash that was sent as ``\\\\``, so the bytes we send
    read unambiguously; ``False`` shows a backslash as it is, for text such as a server's
    reply that writes ``\\n`` as prose (real control characters are still escaped).
    """
    out = []
    for ch in data.decode("utf-8", "surrogateescape"):
        if "\udc80" <= ch <= "\udcff":  # a byte that is not UTF-8
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\\":
            out.append("\\\\" if double_backslash else ch)
        elif not ch.isprintable():
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def split_wire_lines(data: bytes) -> list[bytes]:
    """Split at LF only, keeping every byte (a bare CR stays inside its line, visible)."""
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 4.5.2: double the dot that starts a CRLF line (only CRLF lines, as a strict server reads)."""
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")


def set_line_endings(data: bytes, ending: bytes) -> bytes:
    """Rewrite every line ending (CRLF, LF or CR) as ``ending``."""
    normal = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return normal.replace(b"\n", ending)


def parse_escapes(text: str) -> bytes:
    """``"\\r\\n.\\n"`` as typed on a command line -> the bytes (``\\r \\n \\t \\0 \\xHH \\\\``)."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1")


def build_message(*, from_: str | None = None, to: str | Sequence[str] | None = None,
                  subject: str | None = None, headers: Iterable[tuple[str, str]] = (),
                  body: str | bytes = "", date: str | None = None, message_id: str | None = None,
                  line_ending: bytes = CRLF) -> bytes:
    """A message from parts, header values as given (UTF-8), nothing escaped or encoded.

    ``date`` and ``message_id`` default to now and a fresh id; pass ``""`` to leave one out.
    A header in ``headers`` named From, To, Subject, Date or Message-ID replaces the one built
    from the other arguments or by default (give it twice in ``headers`` for two).
    A ``str`` body is text: its line endings become CRLF, as swaks does (a ``bytes`` body is
    sent as given); ``line_ending`` then rewrites every line ending of the message.
    """
    headers = list(headers)
    given = {name.lower() for name, _ in headers}  # exact names: "From :" is another header (a trick)
    if date is None:
        date = format_datetime(_now(), usegmt=True)
    if message_id is None:
        message_id = make_msgid(domain="forge.forgelab")
    own = [("From", from_), ("To", to if to is None or isinstance(to, str) else ", ".join(to)),
           ("Subject", subject), ("Date", date or None), ("Message-ID", message_id or None)]
    lines = [f"{name}: {value}" for name, value in own if value is not None and name.lower() not in given]
    lines.extend(f"{name}: {value}" for name, value in headers)
    head = "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n"
    raw_body = set_line_endings(body.encode("utf-8"), CRLF) if isinstance(body, str) else body
    if raw_body and not raw_body.endswith((b"\n", b"\r")):
        raw_body += b"\r\n"
    message = head + raw_body
    return message if line_ending == CRLF else set_line_endings(message, line_ending)


def _now():
    import datetime

    return datetime.datetime.now(datetime.timezone.utc)


def dkim_sign(message: bytes, spec: str) -> bytes:
    """Sign with the lab key(s) of ``DOMAIN[:SELECTOR]`` (forgelab.auth.keys)."""
    from .auth import keys

    domain, _, selector = spec.partition(":")
    return keys.sign(message, domain, selector or None)


class ForgeClient:
    """A raw-socket SMTP client. ``on_wire(entry)`` sees every chunk as it goes."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1025, source_ip: str | None = None,
                 timeout: float = 10.0, on_wire: Callable[[WireEntry], None] | None = None):
        self.host, self.port = host, port
        self.source_ip = source_ip
        self.timeout = timeout
        self.on_wire = on_wire
        self.transcript: list[WireEntry] = []
        self.sock: socket.socket | None = None
        self._buffer = b""
        self.local_address: tuple[str, int] | None = None

    # -- connection --------------------------------------------------------
    def connect(self) -> Reply:
        """Open the connection (from ``source_ip`` if given) and read the banner."""
        try:
            sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            if self.source_ip:
                sock.bind((self.source_ip, 0))
            sock.connect((self.host, self.port))
        except OSError as exc:
            raise ForgeError(f"cannot connect to {self.host}:{self.port}"
                             + (f" from {self.source_ip}" if self.source_ip else "") + f": {exc}") from None
        self.sock = sock
        self.local_address = sock.getsockname()[:2]
        return self.read_reply()

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def __enter__(self) -> "ForgeClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _record(self, direction: str, data: bytes) -> None:
        entry = WireEntry(direction, data)
        self.transcript.append(entry)
        if self.on_wire:
            self.on_wire(entry)

    # -- bytes -------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        """Send exactly ``data``."""
        if self.sock is None:
            raise ForgeError("not connected")
        self._record("C", data)
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ForgeError(f"sending failed: {exc}") from None

    def _read_line(self) -> bytes:
        while b"\n" not in self._buffer:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise ForgeError(f"no reply within {self.timeout:g} s") from None
            except OSError as exc:
                raise ForgeError(f"reading failed: {exc}") from None
            if not chunk:
                rest, self._buffer = self._buffer, b""
                if rest:
                    return rest
                raise ForgeError("the server closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def read_reply(self) -> Reply:
        """One reply: lines ``NNN-text`` up to the last ``NNN text``."""
        if self.sock is None:
            raise ForgeError("not connected")
        raw, lines = b"", []
        while True:
            line = self._read_line()
            raw += line
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            if len(text) < 3 or not text[:3].isdigit():
                self._record("S", raw)
                raise ForgeError(f"not an SMTP reply: {escape_bytes(line, double_backslash=False)[:80]}")
            lines.append(text[4:])
            if text[3:4] != "-":
                break
        self._record("S", raw)
        return Reply(int(text[:3]), tuple(lines), raw)

    def read_replies(self, count: int) -> list[Reply]:
        return [self.read_reply() for _ in range(count)]

    def drain(self, wait: float = 0.3) -> list[Reply]:
        """Every further reply that arrives within ``wait`` seconds (a smuggled second message answers)."""
        out, old = [], self.sock.gettimeout() if self.sock else None
        if self.sock is None:
            return out
        self.sock.settimeout(wait)
        try:
            while True:
                try:
                    out.append(self.read_reply())
                except ForgeError:
                    break
        finally:
            if self.sock is not None:
                self.sock.settimeout(old)
        return out

    # -- commands ----------------------------------------------------------
    def command(self, line: str | bytes) -> Reply:
        """Send one command line (CRLF added) and read its reply."""
        data = line if isinstance(line, bytes) else line.encode("utf-8")
        self.send_raw(data + CRLF)
        return self.read_reply()

    def ehlo(self, name: str) -> Reply:
        return self.command(f"EHLO {name}")

    def helo(self, name: str) -> Reply:
        return self.command(f"HELO {name}")

    def xclient(self, addr: str, name: str | None = None, helo: str | None = None) -> Reply:
        """Postfix XCLIENT: tell a lab server to judge us as ``addr`` (say EHLO again after)."""
        parts = [f"ADDR={addr}"] + ([f"NAME={name}"] if name else []) + ([f"HELO={helo}"] if helo else [])
        return self.command("XCLIENT " + " ".join(parts))

    def mail(self, address: str, params: str = "") -> Reply:
        return self.command(f"MAIL FROM:<{address}>" + (f" {params}" if params else ""))

    def rcpt(self, address: str) -> Reply:
        return self.command(f"RCPT TO:<{address}>")

    def data(self, message: bytes, stuff: bool = True, end: bytes = END_OF_DATA) -> tuple[Reply, Reply | None]:
        """``DATA``, then the message and ``end``; returns (reply to DATA, reply to the message).

        ``end`` is sent verbatim after the message. With the standard ending, a message
        that does not end in CRLF gets one (the CRLF belongs to the ending).
        """
        first = self.command("DATA")
        if first.code != 354:
            return first, None
        self.send_raw(self.payload(message, stuff, end))
        return first, self.read_reply()

    @staticmethod
    def payload(message: bytes, stuff: bool = True, end: bytes = END_OF_DATA) -> bytes:
        body = dot_stuff(message) if stuff else message
        if end == END_OF_DATA and body.endswith(CRLF):
            return body + end[2:]
        return body + end

    def quit(self) -> list[Reply]:
        """Send QUIT and read replies up to its 221 (or the close): replies to commands the
        server found inside our data (a smuggled message) arrive before it, and are returned."""
        out: list[Reply] = []
        try:
            self.send_raw(b"QUIT" + CRLF)
            while True:
                reply = self.read_reply()
                out.append(reply)
                if reply.code == 221 or reply.code == 421:
                    return out
        except ForgeError:
            return out


# ---------------------------------------------------------------- one transaction

@dataclass
class Transaction:
    """Everything one forged message needs. ``mail_from_arg``/``rcpt_args``, when given,
    are sent verbatim after ``MAIL FROM:``/``RCPT TO:`` (no brackets added)."""

    mail_from: str = ""
    rcpts: Sequence[str] = ()
    message: bytes = b""
    helo: str = "forge.forgelab"
    esmtp: bool = True
    xclient: str | None = None
    mail_params: str = ""
    mail_from_arg: str | None = None
    rcpt_args: Sequence[str] | None = None
    stuff: bool = True
    end: bytes = END_OF_DATA
    pipeline: bool = False
    auth: tuple[str, str] | None = None  # (user, password): AUTH PLAIN after the greeting

    def auth_line(self) -> bytes:
        user, password = self.auth
        token = base64.b64encode(f"\0{user}\0{password}".encode("utf-8")).decode()
        return f"AUTH PLAIN {token}".encode() + CRLF

    def mail_line(self) -> bytes:
        arg = self.mail_from_arg if self.mail_from_arg is not None else f"<{self.mail_from}>"
        return f"MAIL FROM:{arg}".encode("utf-8") + (f" {self.mail_params}".encode() if self.mail_params else b"") + CRLF

    def rcpt_lines(self) -> list[bytes]:
        args = self.rcpt_args if self.rcpt_args is not None else [f"<{r}>" for r in self.rcpts]
        return [f"RCPT TO:{a}".encode("utf-8") + CRLF for a in args]


@dataclass
class ForgeResult:
    """How the transaction ended: ``outcome`` is accepted, rejected, tempfailed or error."""

    outcome: str
    stage: str
    reply: Reply | None = None
    error: str | None = None
    transcript: list[WireEntry] = field(default_factory=list)
    extra_replies: list[Reply] = field(default_factory=list)
    local_address: tuple[str, int] | None = None

    @property
    def exit_status(self) -> int:
        return {"accepted": EXIT_ACCEPTED, "rejected": EXIT_REJECTED,
                "tempfailed": EXIT_TEMPFAILED}.get(self.outcome, EXIT_ERROR)


def _refused(stage: str, reply: Reply, client: ForgeClient) -> ForgeResult:
    outcome = "tempfailed" if 400 <= reply.code < 500 else "rejected"
    return ForgeResult(outcome, stage, reply, transcript=client.transcript)


def _greet(client: ForgeClient, tx: Transaction) -> Reply:
    return client.ehlo(tx.helo) if tx.esmtp else client.helo(tx.helo)


def _xclient_then_greet(client: ForgeClient, tx: Transaction) -> ForgeResult | None:
    """XCLIENT straight after the banner, then EHLO: a greeting sent first would be judged as
    coming from our real address (spf-helo fails the lab's names from 127.0.0.1). A server that
    wants EHLO before XCLIENT (Postfix answers 503) gets one first, and XCLIENT again."""
    reply = client.xclient(tx.xclient)
    if reply.code == 503:
        greet = _greet(client, tx)
        if not greet.positive:
            return _refused("helo", greet, client)
        reply = client.xclient(tx.xclient)
    if not reply.positive:
        return _refused("xclient", reply, client)
    greet = _greet(client, tx)
    return None if greet.positive else _refused("helo", greet, client)


def run_transaction(client: ForgeClient, tx: Transaction) -> ForgeResult:
    """Drive one transaction on a connected client (banner already read); QUIT at the end.

    With ``tx.xclient``: XCLIENT first, then EHLO/HELO (see :func:`_xclient_then_greet`)."""
    if tx.xclient:
        refused = _xclient_then_greet(client, tx)
        if refused is not None:
            return refused
    else:
        greet = _greet(client, tx)
        if not greet.positive:
            return _refused("helo", greet, client)
    if tx.auth:
        client.send_raw(tx.auth_line())
        reply = client.read_reply()
        if not reply.positive:
            return _refused("auth", reply, client)
    if tx.pipeline:
        result = _pipelined(client, tx)
    else:
        result = _lockstep(client, tx)
    replies = client.quit()
    result.extra_replies = [r for r in replies if r.code not in (221, 421)]
    result.transcript = client.transcript
    result.local_address = client.local_address
    return result


def _lockstep(client: ForgeClient, tx: Transaction) -> ForgeResult:
    client.send_raw(tx.mail_line())
    reply = client.read_reply()
    if not reply.positive:
        return _refused("mail_from", reply, client)
    accepted = 0
    last = reply
    for line in tx.rcpt_lines():
        client.send_raw(line)
        last = client.read_reply()
        accepted += last.positive
    if not accepted:
        return _refused("rcpt_to", last, client)
    first, final = client.data(tx.message, tx.stuff, tx.end)
    if final is None:
        return _refused("data", first, client)
    if not final.positive:
        return _refused("message", final, client)
    return ForgeResult("accepted", "message", final, transcript=client.transcript)


def _pipelined(client: ForgeClient, tx: Transaction) -> ForgeResult:
    """RFC 2920: MAIL, every RCPT and DATA in one write, then the replies in order."""
    rcpts = tx.rcpt_lines()
    client.send_raw(tx.mail_line() + b"".join(rcpts) + b"DATA" + CRLF)
    mail = client.read_reply()
    rcpt_replies = client.read_replies(len(rcpts))
    data = client.read_reply()
    if not mail.positive:
        return _refused("mail_from", mail, client)
    if not any(r.positive for r in rcpt_replies):
        return _refused("rcpt_to", rcpt_replies[-1] if rcpt_replies else data, client)
    if data.code != 354:
        return _refused("data", data, client)
    client.send_raw(ForgeClient.payload(tx.message, tx.stuff, tx.end))
    final = client.read_reply()
    if not final.positive:
        return _refused("message", final, client)
    return ForgeResult("accepted", "message", final, transcript=client.transcript)


def send(host: str, port: int, tx: Transaction, *, source_ip: str | None = None, timeout: float = 10.0,
         on_wire: Callable[[WireEntry], None] | None = None) -> ForgeResult:
    """Connect, run ``tx``, hang up. Never raises for network trouble: ``outcome="error"``."""
    client = ForgeClient(host, port, source_ip=source_ip, timeout=timeout, on_wire=on_wire)
    try:
        banner = client.connect()
        if not banner.positive:
            return _refused("connect", banner, client)
        return run_transaction(client, tx)
    except ForgeError as exc:
        return ForgeResult("error", "network", None, str(exc), client.transcript, local_address=client.local_address)
    finally:
        client.close()
