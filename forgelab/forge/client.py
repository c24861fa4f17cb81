"""A raw-socket SMTP client that sends exactly the bytes it is given and keeps them all."""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from .wire import CRLF, END_OF_DATA, dot_stuff, escape_bytes


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
