"""Caps on a message's header section and MIME structure, checked once before any defence runs.

Python's ``email`` parser is quadratic on some inputs (CPython gh-136063: long address
lists, runs of encoded words, deeply nested parts) and every defence reads the message
through it, so these caps keep what it is handed small. They protect the server, not a
lesson: every policy has them, ``open`` and ``observe`` included. Each scan here is one
linear pass over the raw bytes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields

from .address_list import count_addresses
from ..protocols.smtp.replies import Reply

# The defaults of the [server] keys, in one place; generous next to real mail (see docs/policies.md).
DEFAULTS = {
    "max_header_fields": 1000,   # fields in one header section (the message's or a MIME part's)
    "max_header_size": 16384,    # octets in one field, unfolded
    "max_header_bytes": 262144,  # octets in all the header fields of a message, its MIME parts' included
    "max_addresses": 1000,       # addresses in one address field (From, To, Cc, Resent-*...)
    "max_encoded_words": 1000,   # RFC 2047 encoded words in all the header fields of a message
    "max_mime_depth": 32,        # nested multipart / message parts
    "max_mime_parts": 1000,      # MIME parts in a message
}

# Fields read as address lists by Python's email package or by a defence.
ADDRESS_FIELDS = frozenset({
    "from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-sender", "resent-to",
    "resent-cc", "resent-bcc", "resent-reply-to", "mail-followup-to", "mail-reply-to",
    "disposition-notification-to", "return-receipt-to", "errors-to",
})


@dataclass(frozen=True)
class Limits:
    max_header_fields: int = DEFAULTS["max_header_fields"]
    max_header_size: int = DEFAULTS["max_header_size"]
    max_header_bytes: int = DEFAULTS["max_header_bytes"]
    max_addresses: int = DEFAULTS["max_addresses"]
    max_encoded_words: int = DEFAULTS["max_encoded_words"]
    max_mime_depth: int = DEFAULTS["max_mime_depth"]
    max_mime_parts: int = DEFAULTS["max_mime_parts"]

    @classmethod
    def from_policy(cls, policy) -> "Limits":
        return cls(**{f.name: int(policy.setting(f.name, DEFAULTS[f.name])) for f in fields(cls)})


class LimitExceeded(Exception):
    """A message over one of the caps: ``reply`` says which, ``limit`` is its policy key."""

    def __init__(self, limit: str, reply: Reply):
        super().__init__(str(reply))
        self.limit = limit
        self.reply = reply


def _too_big(limit: str, text: str) -> LimitExceeded:
    return LimitExceeded(limit, Reply(552, "5.3.4", text))


def _shown(name: str) -> str:
    return name if len(name) <= 40 and name.isprintable() else repr(name[:40])


class HeaderCounter:
    """Counts the header sections of one message field by field (lines in, :class:`LimitExceeded` out).

    Reads fields the lenient way (a line starting with a blank continues the field
    before it; the name is what comes before the first colon, trimmed), so it sees
    every field any of the defences' parsers can see. Call :meth:`section` before
    each MIME part's header section, :meth:`end_field` after the last line of one.
    """

    def __init__(self, limits: Limits):
        self.limits = limits
        self.fields = 0  # in the current section
        self.octets = 0  # in every section so far
        self.encoded_words = 0
        self._name: str | None = None
        self._parts: list[str] = []
        self._size = 0

    def section(self) -> None:
        self.end_field()
        self.fields = 0

    def line(self, text: str) -> None:
        """One header line, its end of line removed."""
        self.octets += len(text)
        if self.octets > self.limits.max_header_bytes:
            raise _too_big("max_header_bytes", f"Header too big: more than {self.limits.max_header_bytes} octets "
                                               f"in all (limit {self.limits.max_header_bytes})")
        if text[:1] in (" ", "\t") and self._name is not None:
            self._size += len(text)
            self._parts.append(text)
            return
        self.end_field()
        self.fields += 1
        if self.fields > self.limits.max_header_fields:
            raise _too_big("max_header_fields", f"Too many header fields: more than {self.limits.max_header_fields} "
                                                f"(limit {self.limits.max_header_fields})")
        self._name = text.partition(":")[0].strip(" \t")
        self._parts, self._size = [text], len(text)

    def end_field(self) -> None:
        if self._name is None:
            return
        value = "".join(self._parts)
        name, self._name, self._parts = self._name, None, []
        if name.lower() in ADDRESS_FIELDS:
            count = count_addresses(value.partition(":")[2])
            if count > self.limits.max_addresses:
                raise _too_big("max_addresses", f"Too many addresses in {_shown(name)}: {count} "
                                                f"(limit {self.limits.max_addresses})")
        self.encoded_words += value.count("=?")  # every "=?" is one encoded word the parser tries
        if self.encoded_words > self.limits.max_encoded_words:
            raise _too_big("max_encoded_words", f"Too many encoded words: {self.encoded_words} by header field "
                                                f"{_shown(name)} (limit {self.limits.max_encoded_words} per message)")
        if self._size > self.limits.max_header_size:
            raise _too_big("max_header_size", f"Header field {_shown(name)} too long: {self._size} octets "
                                              f"(limit {self.limits.max_header_size})")


def check_header_section(raw: bytes, limits: Limits) -> HeaderCounter:
    """Check the message's own header section (up to the first empty line); the counter, to go
    on with the MIME parts' sections.

    Raises :class:`LimitExceeded`. Lines may end in CRLF, LF or CR, as the parsers accept.
    """
    counter = HeaderCounter(limits)
    for line in _LINE_RE.finditer(raw):
        if not line[1]:
            break
        counter.line(line[1].decode("latin-1"))
    counter.end_field()
    return counter


# One line and its end (CRLF, LF or a lone CR), found in one pass however the lines end.
_LINE_RE = re.compile(rb"([^\r\n]*)(?:\r\n|\r|\n|\Z)")
