"""Events the POP3 core hands to the server: one per client command line.

Every event except ``ConnectionClosed`` needs exactly one reply through ``Pop3Connection.send``.
``line`` is the command as the client typed it, printable, with credentials masked (PASS,
APOP, AUTH, a line that may be a base64 credential):
what a transcript may show.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .replies import Pop3Reply


class Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return self.value


# next_event() returns this when no complete command line is buffered yet.
NEED_DATA = Sentinel.NEED_DATA


@dataclass(frozen=True)
class Event:
    line: str = field(default="", kw_only=True, compare=False)


@dataclass(frozen=True)
class User(Event):
    """USER name: the mailbox name; PASS may follow."""
    name: str


@dataclass(frozen=True)
class Pass(Event):
    """PASS password: everything after the first space, spaces included (RFC 1939 7)."""
    password: str = field(repr=False)


@dataclass(frozen=True)
class Apop(Event):
    """APOP name digest: MD5 of the greeting timestamp followed by the shared secret."""
    name: str
    digest: str = field(repr=False)


@dataclass(frozen=True)
class Capa(Event):
    """CAPA (RFC 2449): list the capabilities."""


@dataclass(frozen=True)
class Stls(Event):
    """STLS (RFC 2595): switch to TLS; after +OK the next bytes are the TLS handshake."""


@dataclass(frozen=True)
class Quit(Event):
    """QUIT; ``update`` is True when it ends a TRANSACTION: commit the deletions."""
    update: bool = False


@dataclass(frozen=True)
class Stat(Event):
    """STAT: messages and octets, without those marked deleted."""


@dataclass(frozen=True)
class List(Event):
    """LIST [msg]: sizes of every message, or of one."""
    msg: int | None = None


@dataclass(frozen=True)
class Retr(Event):
    """RETR msg: the whole message."""
    msg: int


@dataclass(frozen=True)
class Dele(Event):
    """DELE msg: mark for deletion at QUIT."""
    msg: int


@dataclass(frozen=True)
class Noop(Event):
    """NOOP."""


@dataclass(frozen=True)
class Rset(Event):
    """RSET: unmark every message marked deleted."""


@dataclass(frozen=True)
class Top(Event):
    """TOP msg n: the header and the first n body lines."""
    msg: int
    lines: int


@dataclass(frozen=True)
class Uidl(Event):
    """UIDL [msg]: unique ids of every message, or of one."""
    msg: int | None = None


@dataclass(frozen=True)
class Rejected(Event):
    """A line the core refused itself (unknown, out of sequence, bad arguments, too long).

    Answer it with ``reply``; the session goes on.
    """
    reply: Pop3Reply
    verb: str = ""


@dataclass(frozen=True)
class ConnectionClosed(Event):
    """The client closed its side (or QUIT already ended the session); nothing to answer."""
