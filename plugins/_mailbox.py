"""One address as a parser read it (:class:`Mailbox`), and how a mail client would display it.

Not a plugin (no hooks): the record every address parser of ``_facts`` and ``_rfc5322``
gives, with the decoding of display names a reader's client does.
"""
from __future__ import annotations

import email.header
import functools
import re
from dataclasses import dataclass, field

# The characters besides letters and digits an atom may hold (RFC 5322 3.2.3 atext).
ATEXT = "!#$%&'*+-/=?^_`{|}~"
_DOT_ATOM_RE = re.compile(r"^[A-Za-z0-9" + re.escape(ATEXT) + r"\x80-\U0010ffff]+(\.[A-Za-z0-9" + re.escape(ATEXT) + r"\x80-\U0010ffff]+)*$")


@dataclass(frozen=True)
class Mailbox:
    """One address as a parser understood it.

    :param display: the display name, encoded-words decoded (what a reader shows).
    :param local: the local part, unquoted.
    :param domain: the domain, as written ("" when the parser found none).
    :param route: an obsolete source route (``@a.example,@b.example``) when one was seen.
    """

    display: str
    local: str
    domain: str
    route: str = ""

    @functools.cached_property  # asked for again and again by the defences; the fields never change
    def address(self) -> str:
        """``local@domain`` as it would be written, the local part quoted when it needs to be."""
        local = self.local
        if local and not _DOT_ATOM_RE.match(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{local}@{self.domain}" if self.domain else local

    @functools.cached_property
    def key(self) -> tuple[str, str]:
        """What makes two mailboxes the same address: the local part, and the domain in any case."""
        return (self.local, self.domain.lower().rstrip("."))

    def shown(self) -> str:
        """What a mail client would show: ``Name <addr>`` or just the address."""
        return f"{self.display} <{self.address}>" if self.display else self.address


@dataclass
class ParseResult:
    """What one parser read in a field: its mailboxes, and why it stopped if it did."""

    mailboxes: list[Mailbox] = field(default_factory=list)
    error: str | None = None

    @property
    def keys(self) -> list[tuple[str, str]]:
        """The :attr:`Mailbox.key` of each mailbox, in order."""
        return [m.key for m in self.mailboxes]


def decode_words(text: str) -> str:
    """Decode RFC 2047 encoded-words in a display name; the text unchanged if it cannot be."""
    if "=?" not in text:
        return text
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except Exception:  # malformed encoded-words: show what was written
        return text


def utf8_text(text: str) -> str:
    """Undo ``email``'s surrogate escapes where the bytes were valid UTF-8 (RFC 6532 headers)."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:  # not UTF-8 after all: keep the escapes, show() makes them visible
        return text


def mailbox_of(display: str, addr: str) -> Mailbox:
    """The :class:`Mailbox` of one ``(display, address)`` pair from ``email.utils.getaddresses``."""
    display, addr = utf8_text(display), utf8_text(addr)
    local, at, domain = addr.rpartition("@")
    if not at:
        local, domain = addr, ""
    if len(local) >= 2 and local[0] == local[-1] == '"':  # getaddresses leaves a quoted local part quoted
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    return Mailbox(display=decode_words(display), local=local, domain=domain)
