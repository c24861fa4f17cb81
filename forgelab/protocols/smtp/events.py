"""Events the SMTP core produces: one per complete command, or one per message.

Each is a small frozen record; the server answers every event with one Reply, except
``MessageText`` (a part of a big message's text, for the driver to keep).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .replies import Reply


class _Sentinel:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: ``next_event()`` needs more bytes before it can return an event.
NEED_DATA = _Sentinel("NEED_DATA")
#: ``next_event()`` waits for the reply to the previous event (pipelining keeps order).
PAUSED = _Sentinel("PAUSED")


@dataclass(frozen=True)
class Helo:
    name: str


@dataclass(frozen=True)
class Ehlo:
    name: str


@dataclass(frozen=True)
class MailFrom:
    """``MAIL FROM``; ``address`` is ``""`` for the null reverse-path ``<>``."""

    address: str
    params: dict = field(default_factory=dict, hash=False, compare=False)
    route: str = ""  # an obsolete source route (``@a,@b:``), kept to show it


@dataclass(frozen=True)
class RcptTo:
    address: str
    params: dict = field(default_factory=dict, hash=False, compare=False)
    route: str = ""


@dataclass(frozen=True)
class Data:
    """The ``DATA`` command: answer 354 to start receiving the message."""


@dataclass(frozen=True)
class Message:
    """The end of DATA: ``raw`` is the message with dot-stuffing removed.

    ``ending`` is the end-of-data sequence that closed it (``b"\\r\\n.\\r\\n"`` unless the
    server is lenient).
    """

    raw: bytes
    ending: bytes = b"\r\n.\r\n"
    # The text as sent, before dot-unstuffing (``raw`` itself when no line began with a dot):
    # unstuffing turns ``\r\n.\n`` into ``\r\n\n``, hiding a smuggling end-of-data.
    wire: bytes = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True)
class MessageText:
    """Part of a big message's text, handed out during DATA so the core never holds more
    than ``SmtpLimits.spool_threshold`` octets of it. No reply: the driver keeps the parts
    in order (a spool file) until the ``MessageEnd``.

    ``data`` is the text as sent (still dot-stuffed); parts never split a line break.
    """

    data: bytes


@dataclass(frozen=True)
class MessageEnd:
    """The end of DATA for a message that came partly in ``MessageText`` events.

    ``last`` is the rest of the text as sent, ``size`` the octets of the whole text (the
    parts and ``last``). The driver joins them and hands the whole text to
    ``SmtpConnection.spooled_message(text)``, which gives the ``Message`` to answer; or it
    answers this event with a refusal (4xx/5xx) if it cannot.
    """

    last: bytes
    ending: bytes
    size: int


@dataclass(frozen=True)
class Rset:
    pass


@dataclass(frozen=True)
class Noop:
    pass


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class Help:
    topic: str = ""


@dataclass(frozen=True)
class Vrfy:
    argument: str


@dataclass(frozen=True)
class Expn:
    argument: str


@dataclass(frozen=True)
class XClient:
    """Postfix's XCLIENT (ADDR, NAME, HELO, ...), upper-cased names to values."""

    attributes: dict = field(hash=False, compare=False)


@dataclass(frozen=True)
class StartTls:
    pass


@dataclass(frozen=True)
class Auth:
    mechanism: str
    initial: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AuthResponse:
    """A line the client sent in answer to a ``334`` challenge."""

    line: str = field(repr=False)


@dataclass(frozen=True)
class CommandError:
    """A line the core refused by itself (syntax, sequence, length); send ``reply``.

    ``line`` is what the client sent (cut short), for the transcript.
    """

    reply: Reply
    line: str = ""


@dataclass(frozen=True)
class ConnectionClosed:
    """The client closed its side (EOF)."""
