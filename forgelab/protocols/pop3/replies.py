"""POP3 replies as values: +OK or -ERR, one status line, optional multi-line body."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ...core.printable import fit_7bit
from .wire import dot_stuff

MAX_STATUS = 510  # RFC 2449: a response line is at most 512 octets with its CRLF


@dataclass(frozen=True)
class Pop3Reply:
    """``+OK text`` or ``-ERR text``; ``body`` makes a positive reply multi-line.

    The body is message or listing text; ``to_bytes`` turns it into CRLF lines,
    dot-stuffs it and adds the terminating ``.CRLF``.
    """

    positive: bool
    text: str = ""
    body: bytes | None = None

    @classmethod
    def ok(cls, text: str = "", body: bytes | None = None) -> "Pop3Reply":
        return cls(True, text, body)

    @classmethod
    def err(cls, text: str) -> "Pop3Reply":
        return cls(False, text)

    @classmethod
    def listing(cls, text: str, lines: Iterable[str]) -> "Pop3Reply":
        """A positive multi-line reply whose body is the given lines (LIST, UIDL, CAPA)."""
        return cls(True, text, "".join(f"{line}\r\n" for line in lines).encode("utf-8", "replace"))

    @property
    def multiline(self) -> bool:
        return self.positive and self.body is not None

    @property
    def status_line(self) -> str:
        """The first line without CRLF, safe to show: one line, 7-bit (``seven_bit``: attacker
        text such as a user name must not break the framing), cut after a word when too long."""
        status = "+OK" if self.positive else "-ERR"
        return status + (f" {fit_7bit(self.text, MAX_STATUS - len(status) - 1)}" if self.text else "")

    def to_bytes(self) -> bytes:
        status = self.status_line.encode("ascii") + b"\r\n"
        return status + dot_stuff(self.body) if self.multiline else status


# Replies that are the same every time.
AUTH_FAILED = Pop3Reply.err("[AUTH] invalid user name or password")
IN_USE = Pop3Reply.err("[IN-USE] maildrop locked")
TOO_MANY_FAILURES = Pop3Reply.err("[SYS/TEMP] too many failed logins, try later")
TOO_MANY_CONNECTIONS = Pop3Reply.err("[SYS/TEMP] too many connections")
NO_SUCH_MESSAGE = Pop3Reply.err("no such message")
IDLE_TIMEOUT = Pop3Reply.err("idle timeout, closing connection")
SESSION_TIMEOUT = Pop3Reply.err("session time limit reached, closing connection")
