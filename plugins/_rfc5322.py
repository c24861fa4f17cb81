"""The strict reading of an address field: RFC 5322's grammar, with none of its obsolete syntax.

Not a plugin (no hooks): one of the four parsers ``_facts`` compares (``rfc5322``). It
reads the raw field as written, never decodes encoded-words into addresses, and gives a
:class:`ParseResult` with the reason when the text breaks the grammar. Nothing here raises.
"""
from __future__ import annotations

import re

from ._mailbox import ATEXT, Mailbox, ParseResult, decode_words


class GrammarError(ValueError):
    """The text breaks the grammar; the message says what was expected and where."""


def _is_utf8_char(ch: str) -> bool:
    # RFC 6532 allows UTF-8 in headers; lone surrogates are bytes that were not UTF-8.
    return ord(ch) >= 0x80 and not 0xD800 <= ord(ch) <= 0xDFFF


def _is_atext(ch: str, lax8: bool = False) -> bool:
    """Whether ``ch`` may stand in an atom (``lax8``: raw 8-bit bytes too, in a display name)."""
    return ch.isascii() and (ch.isalnum() or ch in ATEXT) or _is_utf8_char(ch) or (lax8 and _is_8bit(ch))


def _is_vchar_except(ch: str, excluded: str, lax8: bool = False) -> bool:
    """Whether ``ch`` is a visible character (or UTF-8) other than those in ``excluded``."""
    return ("\x21" <= ch <= "\x7e" and ch not in excluded) or _is_utf8_char(ch) or (lax8 and _is_8bit(ch))


def _is_8bit(ch: str) -> bool:
    # Raw Latin-1 in a display name is old, not deceptive: tolerated outside addresses.
    return 0xDC80 <= ord(ch) <= 0xDCFF


class _Strict:
    """Recursive descent over RFC 5322 3.4 (mailbox-list / address-list), no obsolete syntax.

    Each method reads one rule of the grammar from position ``i`` of the text, moves ``i``
    past it and gives what it read, or raises :class:`GrammarError`.
    """

    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.lax8 = False  # inside a display name, where raw 8-bit bytes are tolerated

    def fail(self, what: str):
        """Raise :class:`GrammarError`: ``what`` was expected, at the current character."""
        ch = self.s[self.i] if self.i < len(self.s) else None
        where = f"at {ch!r} (character {self.i + 1})" if ch is not None else "at the end"
        raise GrammarError(f"{what} {where}")

    def peek(self) -> str:
        """The current character, ``""`` at the end."""
        return self.s[self.i] if self.i < len(self.s) else ""

    def cfws(self):
        """Skip blanks and comments (CFWS)."""
        while True:
            ch = self.peek()
            if ch in (" ", "\t"):
                self.i += 1
            elif ch == "(":
                self.comment()
            else:
                return

    def comment(self):
        """Skip one comment, nested ones inside it included."""
        depth = 0  # nested comments, counted rather than recursed into
        while True:
            ch = self.peek()
            if ch == "":
                self.fail("comment not closed")
            if ch == ")":
                self.i += 1
                depth -= 1
                if depth == 0:
                    return
            elif ch == "(":
                self.i += 1
                depth += 1
            elif ch == "\\":
                self.quoted_pair()
            elif ch in (" ", "\t") or _is_vchar_except(ch, "()\\", lax8=True):
                self.i += 1
            else:
                self.fail("character not allowed in a comment")

    def quoted_pair(self):
        """The character a backslash escapes."""
        nxt = self.s[self.i + 1] if self.i + 1 < len(self.s) else ""
        if not (nxt in (" ", "\t") or _is_vchar_except(nxt, "", self.lax8)):
            self.fail("bad quoted-pair")
        self.i += 2
        return nxt

    def quoted_string(self) -> str:
        """The content of a quoted string, escapes undone."""
        self.i += 1  # DQUOTE
        out = []
        while True:
            ch = self.peek()
            if ch == "":
                self.fail("quoted string not closed")
            if ch == '"':
                self.i += 1
                return "".join(out)
            if ch == "\\":
                out.append(self.quoted_pair())
            elif ch in (" ", "\t") or _is_vchar_except(ch, '"\\', self.lax8):
                out.append(ch)
                self.i += 1
            else:
                self.fail("character not allowed in a quoted string")

    def atom_text(self) -> str:
        """A run of atom characters (possibly empty)."""
        start = self.i
        while self.i < len(self.s) and _is_atext(self.s[self.i], self.lax8):
            self.i += 1
        return self.s[start:self.i]

    def dot_atom_text(self) -> str:
        """Atoms joined by single dots (``john.q.public``)."""
        parts = [self.atom_text()]
        if not parts[0]:
            self.fail("expected an atom")
        while self.peek() == "." and self.i + 1 < len(self.s) and _is_atext(self.s[self.i + 1]):
            self.i += 1
            parts.append(self.atom_text())
        return ".".join(parts)

    def local_part(self) -> str:
        """The part of an address before the ``@``: a dot-atom or a quoted string."""
        self.cfws()
        local = self.quoted_string() if self.peek() == '"' else self.dot_atom_text()
        self.cfws()
        return local

    def domain(self) -> str:
        """The part after the ``@``: a dot-atom or a domain literal (``[192.0.2.1]``), as written."""
        self.cfws()
        if self.peek() == "[":
            start = self.i
            self.i += 1
            while self.peek() not in ("]", ""):
                if not (self.peek() in (" ", "\t") or _is_vchar_except(self.peek(), "[]\\")):
                    self.fail("character not allowed in a domain literal")
                self.i += 1
            if self.peek() != "]":
                self.fail("domain literal not closed")
            self.i += 1
            dom = self.s[start:self.i]
        else:
            dom = self.dot_atom_text()
        self.cfws()
        return dom

    def addr_spec(self) -> tuple[str, str]:
        """A bare address, ``local@domain``: (local part, domain)."""
        local = self.local_part()
        if self.peek() != "@":
            self.fail("expected '@'")
        self.i += 1
        return local, self.domain()

    def phrase(self) -> list[str]:
        """The words of a display name (or a group's name), raw 8-bit bytes tolerated."""
        self.lax8 = True
        try:
            return self._phrase()
        finally:
            self.lax8 = False

    def _phrase(self) -> list[str]:
        words: list[str] = []
        while True:
            self.cfws()
            ch = self.peek()
            if ch == '"':
                words.append(self.quoted_string())
            elif ch and _is_atext(ch, lax8=True):
                words.append(self.atom_text())
            elif ch == "." and words:
                # obs-phrase: "John Q. Public" is everyday mail; accepting it changes no address.
                words[-1] += "."
                self.i += 1
                continue
            else:
                return words

    def mailbox(self, ends: tuple[str, ...] = ("", ",")) -> Mailbox:
        """One mailbox: a bare address or ``Name <address>``."""
        start, after_addr = self.i, None
        try:  # an addr-spec is a mailbox only if the list goes on or ends right after it
            local, dom = self.addr_spec()
            if self.peek() in ends:
                return Mailbox(display="", local=local, domain=dom)
            after_addr = self.i
        except GrammarError:
            pass
        self.i = start
        try:
            return self.name_addr()
        except GrammarError:
            if after_addr is None:
                raise
            self.i = after_addr
            self.fail("expected ',' between addresses")

    def name_addr(self) -> Mailbox:
        """A mailbox written ``Name <address>`` (the name may be empty)."""
        words = self.phrase()
        self.cfws()
        if self.peek() != "<":
            self.fail("expected an address or '<'")
        self.i += 1
        if self.peek() == "@":
            self.fail("obsolete source route not accepted")
        local, dom = self.addr_spec()
        if self.peek() != ">":
            self.fail("expected '>'")
        self.i += 1
        self.cfws()
        return Mailbox(display=decode_words(" ".join(words)), local=local, domain=dom)

    def group(self) -> list[Mailbox] | None:
        """A group (``undisclosed-recipients:;``) or None if this is not one."""
        start = self.i
        words = self.phrase()
        self.cfws()
        if not words or self.peek() != ":":
            self.i = start
            return None
        self.i += 1
        members: list[Mailbox] = []
        self.cfws()
        while self.peek() != ";":
            members.append(self.mailbox(ends=("", ",", ";")))
            if self.peek() == ",":
                self.i += 1
                self.cfws()
            elif self.peek() != ";":
                self.fail("expected ',' or ';' in a group")
        self.i += 1
        self.cfws()
        return members

    def mailbox_list(self, groups: bool) -> list[Mailbox]:
        """The whole field: mailboxes separated by commas (``groups``: groups allowed among them)."""
        out: list[Mailbox] = []
        while True:
            members = self.group() if groups else None
            if members is None:
                out.append(self.mailbox())
            else:
                out.extend(members)
            if self.peek() == "":
                return out
            if self.peek() != ",":
                self.fail("expected ',' between addresses")
            self.i += 1


# The everyday From, ASCII only: "addr@domain" or "Some Name <addr@domain>", nothing else
# (no quotes, comments, dots in the name, commas, groups or domain literals).
_ATEXT_CLASS = "[A-Za-z0-9" + re.escape(ATEXT) + "]"
_ASCII_DOT_ATOM = f"{_ATEXT_CLASS}++(?:\\.{_ATEXT_CLASS}++)*+"
_SIMPLE_MAILBOX_RE = re.compile(  # possessive runs: no backtracking on long attacker input
    rf"[ \t]*+(?:(?P<name>{_ATEXT_CLASS}++(?:[ \t]++{_ATEXT_CLASS}++)*)?[ \t]*+"
    rf"<(?P<local>{_ASCII_DOT_ATOM})@(?P<domain>{_ASCII_DOT_ATOM})>"
    rf"|(?P<bare_local>{_ASCII_DOT_ATOM})@(?P<bare_domain>{_ASCII_DOT_ATOM}))[ \t]*+")


def simple_mailbox(text: str) -> Mailbox | None:
    """What the grammar above gives for the everyday shapes, without walking it; None otherwise."""
    match = _SIMPLE_MAILBOX_RE.fullmatch(text) if text.isascii() else None
    if match is None:
        return None
    if match["bare_local"] is not None:
        return Mailbox(display="", local=match["bare_local"], domain=match["bare_domain"])
    return Mailbox(display=decode_words(" ".join((match["name"] or "").split())), local=match["local"],
                   domain=match["domain"])


def parse_strict(text: str, groups: bool = False) -> ParseResult:
    """Parse a mailbox-list (``groups=True``: an address-list) by the strict RFC 5322 grammar."""
    simple = simple_mailbox(text)
    if simple is not None:
        return ParseResult(mailboxes=[simple])
    return _parse_strict_grammar(text, groups)


def _parse_strict_grammar(text: str, groups: bool = False) -> ParseResult:
    """:func:`parse_strict` without the everyday shortcut: the grammar walked every time."""
    try:
        return ParseResult(mailboxes=_Strict(text).mailbox_list(groups))
    except GrammarError as exc:
        return ParseResult(error=f"not valid RFC 5322: {exc}")
    except Exception as exc:  # a grammar bug must not become a temperror
        return ParseResult(error=f"strict parser gave up: {type(exc).__name__}")


