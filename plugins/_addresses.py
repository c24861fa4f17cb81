"""Parse a message's header block and its address fields once, and share the result.

Every content defence needs the same facts (which From fields are there, which
addresses each parser sees in them), so they are computed here, lazily, and kept
in ``envelope.cache``. Everything is attacker input: nothing here raises.

Three address parsers are compared, the way different real programs read mail:

- ``policy.default``: Python's modern ``email`` parser (the ``message`` forgelab shows);
- ``compat32``: Python's legacy parser with ``email.utils.getaddresses``;
- ``rfc5322``: the strict grammar below, over the raw bytes (no obsolete syntax,
  encoded-words never decoded into addresses);
- ``lenient``: a lenient MTA that unfolds the raw header block and trims the field
  name, so ``" From:"``, ``"From :"`` and ``"From\r\n :"`` all count as From.
"""
from __future__ import annotations

import email
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import functools
import re
from dataclasses import dataclass, field

from forgelab.memo import short_memo
from forgelab.printable import printable

CACHE_KEY = "forgelab.plugins.addresses"
# Fields of one name each parser reads: RFC 5322 allows one From; a second is already the
# finding, and reading hundreds would multiply the parsers' work (message_limits bounds each).
MAX_FIELDS = 2
# Items of a list a verdict's details show.
SHOWN = 20
PARSERS = ("policy.default", "compat32", "rfc5322", "lenient")
# The fields whose addresses the defences compare; From first.
ADDRESS_FIELDS = ("from", "sender", "reply-to")

_FIELD_NAME_RE = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")


# ---------------------------------------------------------------- raw header block

@dataclass(frozen=True)
class RawField:
    """One header field as a lenient MTA sees it: folded lines joined, name trimmed.

    :param name: the field name as written, without surrounding whitespace.
    :param value: the unfolded value (UTF-8, invalid bytes kept as surrogates).
    :param line: 1-based line number of its first line.
    :param offset: byte offset of its first line in the raw message.
    :param space_before_colon: whitespace between the name and the colon (``From :``).
    :param indented: the field's first line starts with whitespace (``" From: ..."``
        as the first line, where there is no field to continue).
    :param folded_name: the colon is on a continuation line (``From\\r\\n : ...``).
    :param strict: the field is well-formed per RFC 5322 (name directly followed by
        a colon on the first line); only these reach the strict parser.
    """

    name: str
    value: str
    line: int
    offset: int
    raw: bytes
    space_before_colon: bool = False
    indented: bool = False
    folded_name: bool = False

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def strict(self) -> bool:
        return not (self.space_before_colon or self.indented or self.folded_name)


@dataclass(frozen=True)
class BadLine:
    """A line in the header block that is not a header field (no colon, bad name)."""

    line: int
    offset: int
    text: str
    why: str


@dataclass
class HeaderBlock:
    fields: list[RawField]
    bad_lines: list[BadLine]
    body_offset: int
    first_line_indented: bool
    _by_name: dict | None = field(default=None, init=False, repr=False, compare=False)

    def get(self, name: str) -> list[RawField]:
        if self._by_name is None:  # the defences ask for the same few names many times
            self._by_name = {}
            for f in self.fields:
                self._by_name.setdefault(f.key, []).append(f)
        return list(self._by_name.get(name.lower(), ()))

    def count(self, name: str) -> int:
        return len(self.get(name))


# A blank line: an end of line (a CR only when no LF follows), then another.
_BLANK_LINE_RE = re.compile(rb"(\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")


def header_lines(raw: bytes) -> tuple[list[bytes], int]:
    """The lines before the first empty line, each with its end of line, and the body's offset.

    Lines end in CRLF, LF or CR, the way ``email`` splits them; the body is not split.
    """
    if raw[:1] in (b"\r", b"\n"):  # the first line is empty: no header at all
        return [], 2 if raw[:2] == b"\r\n" else 1
    crlf = raw.find(b"\r\n\r\n")
    if crlf >= 0:  # the usual case, found without the regex when every line before ends in CRLF
        head = raw[:crlf + 2]
        lines = head.splitlines(True)
        if len(lines) == head.count(b"\r\n"):
            return lines, crlf + 4
    blank = _BLANK_LINE_RE.search(raw)
    if blank is None:
        return raw.splitlines(True), len(raw)
    return raw[:blank.end(1)].splitlines(True), blank.end()


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def split_header_block(raw: bytes, lines: tuple[list[bytes], int] | None = None) -> HeaderBlock:
    """The raw header section, up to the first empty line, as a lenient parser reads it.

    :param lines: :func:`header_lines` of ``raw`` when the caller has them already.
    """
    lines, body_offset = lines if lines is not None else header_lines(raw)
    first_indented = bool(lines) and lines[0][:1] in (b" ", b"\t")
    fields: list[RawField] = []
    bad: list[BadLine] = []
    i, count, offset = 0, len(lines), 0
    while i < count:  # one logical field: a line and the indented lines after it
        number, start = i + 1, offset
        first = lines[i].rstrip(b"\r\n")
        offset += len(lines[i])
        i += 1
        parts, end = None, start + len(first)
        while i < count and lines[i][:1] in (b" ", b"\t"):
            content = lines[i].rstrip(b"\r\n")
            parts = parts or [first]
            parts.append(content)
            end = offset + len(content)
            offset += len(lines[i])
            i += 1
        text = _decode(b"".join(parts) if parts else first)
        name_part, colon, value = text.partition(":")
        name = name_part.strip(" \t")
        if not colon:
            bad.append(BadLine(number, start, text, "it has no colon, so it is not a header field"))
            continue
        if not _FIELD_NAME_RE.match(name):
            bad.append(BadLine(number, start, text, f"{name!r} is not a valid header field name"))
            continue
        fields.append(RawField(
            name=name, value=value, line=number, offset=start, raw=raw[start:end],
            space_before_colon=name_part != name_part.rstrip(" \t"),
            indented=name_part[:1] in (" ", "\t"),
            folded_name=b":" not in first,
        ))
    return HeaderBlock(fields=fields, bad_lines=bad, body_offset=body_offset, first_line_indented=first_indented)


# email.feedparser.headerRE, on bytes (non-ASCII bytes never match it, as their surrogates do not).
_COMPAT32_HEADER_RE = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")


def compat32_headers(lines: list[bytes]) -> list[tuple[str, list[bytes]]]:
    """The fields ``BytesParser(policy=compat32)`` stores for these header lines: (name, their lines).

    The same steps as ``email.feedparser.FeedParser._parse_headers`` (stop at the first
    line that is not a header, drop a leading continuation, a ``From `` line and a name-less
    field), without parsing the body or building a ``Message``; :func:`compat32_value`
    gives a field's value.
    """
    headers: list[bytes] = []
    for line in lines:
        if not _COMPAT32_HEADER_RE.match(line):
            break
        headers.append(line)
    out: list[tuple[str, list[bytes]]] = []
    last: list[bytes] = []
    for lineno, line in enumerate(headers):
        if line[:1] in (b" ", b"\t"):
            if last:
                last.append(line)
            continue
        last = []
        if line.startswith(b"From "):
            if lineno == len(headers) - 1 and lineno:  # feedparser: the first body line, pushed back
                break
            continue  # the unix-from line, or a misplaced one: not a header
        colon = line.find(b":")
        if colon > 0:
            last = [line]
            out.append((line[:colon].decode("ascii"), last))
    return out


def compat32_value(lines: list[bytes]) -> str:
    """``email.policy.compat32.header_source_parse``: the raw value of a field's lines."""
    text = [line.decode("ascii", "surrogateescape") for line in lines]
    value = text[0].split(":", 1)[1]
    return (value.lstrip(" \t") + "".join(text[1:])).rstrip("\r\n")


# ---------------------------------------------------------------- mailboxes

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
        local = self.local
        if local and not _DOT_ATOM_RE.match(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{local}@{self.domain}" if self.domain else local

    @functools.cached_property
    def key(self) -> tuple[str, str]:
        return (self.local, self.domain.lower().rstrip("."))

    def shown(self) -> str:
        """What a mail client would show: ``Name <addr>`` or just the address."""
        return f"{self.display} <{self.address}>" if self.display else self.address


@dataclass
class ParseResult:
    mailboxes: list[Mailbox] = field(default_factory=list)
    error: str | None = None

    @property
    def keys(self) -> list[tuple[str, str]]:
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


def _from_addr(display: str, addr: str) -> Mailbox:
    display, addr = utf8_text(display), utf8_text(addr)
    local, at, domain = addr.rpartition("@")
    if not at:
        local, domain = addr, ""
    if len(local) >= 2 and local[0] == local[-1] == '"':
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    return Mailbox(display=decode_words(display), local=local, domain=domain)


# ---------------------------------------------------------------- strict RFC 5322 grammar

_ATEXT = "!#$%&'*+-/=?^_`{|}~"
_DOT_ATOM_RE = re.compile(r"^[A-Za-z0-9" + re.escape(_ATEXT) + r"\x80-\U0010ffff]+(\.[A-Za-z0-9" + re.escape(_ATEXT) + r"\x80-\U0010ffff]+)*$")


class GrammarError(ValueError):
    pass


def _is_utf8_char(ch: str) -> bool:
    # RFC 6532 allows UTF-8 in headers; lone surrogates are bytes that were not UTF-8.
    return ord(ch) >= 0x80 and not 0xD800 <= ord(ch) <= 0xDFFF


def _is_atext(ch: str, lax8: bool = False) -> bool:
    return ch.isascii() and (ch.isalnum() or ch in _ATEXT) or _is_utf8_char(ch) or (lax8 and _is_8bit(ch))


def _is_vchar_except(ch: str, excluded: str, lax8: bool = False) -> bool:
    return ("\x21" <= ch <= "\x7e" and ch not in excluded) or _is_utf8_char(ch) or (lax8 and _is_8bit(ch))


def _is_8bit(ch: str) -> bool:
    # Raw Latin-1 in a display name is old, not deceptive: tolerated outside addresses.
    return 0xDC80 <= ord(ch) <= 0xDCFF


class _Strict:
    """Recursive descent over RFC 5322 3.4 (mailbox-list / address-list), no obsolete syntax."""

    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.lax8 = False

    def fail(self, what: str):
        ch = self.s[self.i] if self.i < len(self.s) else None
        where = f"at {ch!r} (character {self.i + 1})" if ch is not None else "at the end"
        raise GrammarError(f"{what} {where}")

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def cfws(self):
        while True:
            ch = self.peek()
            if ch in (" ", "\t"):
                self.i += 1
            elif ch == "(":
                self.comment()
            else:
                return

    def comment(self):
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
        nxt = self.s[self.i + 1] if self.i + 1 < len(self.s) else ""
        if not (nxt in (" ", "\t") or _is_vchar_except(nxt, "", self.lax8)):
            self.fail("bad quoted-pair")
        self.i += 2
        return nxt

    def quoted_string(self) -> str:
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
        start = self.i
        while self.i < len(self.s) and _is_atext(self.s[self.i], self.lax8):
            self.i += 1
        return self.s[start:self.i]

    def dot_atom_text(self) -> str:
        parts = [self.atom_text()]
        if not parts[0]:
            self.fail("expected an atom")
        while self.peek() == "." and self.i + 1 < len(self.s) and _is_atext(self.s[self.i + 1]):
            self.i += 1
            parts.append(self.atom_text())
        return ".".join(parts)

    def local_part(self) -> str:
        self.cfws()
        local = self.quoted_string() if self.peek() == '"' else self.dot_atom_text()
        self.cfws()
        return local

    def domain(self) -> str:
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
        local = self.local_part()
        if self.peek() != "@":
            self.fail("expected '@'")
        self.i += 1
        return local, self.domain()

    def phrase(self) -> list[str]:
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
_ATEXT_CLASS = "[A-Za-z0-9" + re.escape(_ATEXT) + "]"
_ASCII_DOT_ATOM = f"{_ATEXT_CLASS}++(?:\\.{_ATEXT_CLASS}++)*+"
_SIMPLE_MAILBOX_RE = re.compile(  # possessive runs: no backtracking on long attacker input
    rf"[ \t]*+(?:(?P<name>{_ATEXT_CLASS}++(?:[ \t]++{_ATEXT_CLASS}++)*)?[ \t]*+"
    rf"<(?P<local>{_ASCII_DOT_ATOM})@(?P<domain>{_ASCII_DOT_ATOM})>"
    rf"|(?P<bare_local>{_ASCII_DOT_ATOM})@(?P<bare_domain>{_ASCII_DOT_ATOM}))[ \t]*+")


def _simple_mailbox(text: str) -> Mailbox | None:
    """What the grammar below returns for the everyday shapes, without walking it; None otherwise."""
    match = _SIMPLE_MAILBOX_RE.fullmatch(text) if text.isascii() else None
    if match is None:
        return None
    if match["bare_local"] is not None:
        return Mailbox(display="", local=match["bare_local"], domain=match["bare_domain"])
    return Mailbox(display=decode_words(" ".join((match["name"] or "").split())), local=match["local"],
                   domain=match["domain"])


def parse_strict(text: str, groups: bool = False) -> ParseResult:
    """Parse a mailbox-list (``groups=True``: an address-list) by the strict RFC 5322 grammar."""
    simple = _simple_mailbox(text)
    if simple is not None:
        return ParseResult(mailboxes=[simple])
    return _parse_strict_grammar(text, groups)


def _parse_strict_grammar(text: str, groups: bool = False) -> ParseResult:
    try:
        return ParseResult(mailboxes=_Strict(text).mailbox_list(groups))
    except GrammarError as exc:
        return ParseResult(error=f"not valid RFC 5322: {exc}")
    except Exception as exc:  # a grammar bug must not become a temperror
        return ParseResult(error=f"strict parser gave up: {type(exc).__name__}")


# ---------------------------------------------------------------- the shared facts

class Facts:
    """What the content defences share about one message; build it with :func:`facts`."""

    def __init__(self, message, raw: bytes):
        self.raw = raw
        self.message = message
        self._lines = header_lines(raw)
        self.block = split_header_block(raw, self._lines)
        self._parsed: dict[str, dict[str, ParseResult]] = {}
        self._compat: list[tuple[str, list[bytes]]] | None = None
        self._addresses: dict[tuple[str, ...], list[Mailbox]] = {}
        self._mailboxes: dict[str, list[Mailbox]] = {}

    def _compat32_values(self, name: str) -> list[str]:
        """``[str(v) for v in compat32_message.get_all(name)]``, without parsing the message."""
        if self._compat is None:
            self._compat = compat32_headers(self._lines[0])
        fetch = email.policy.compat32.header_fetch_parse
        return [str(fetch(k, compat32_value(lines))) for k, lines in self._compat if k.lower() == name][:MAX_FIELDS]

    def _default_message(self):
        msg = self.message
        if isinstance(msg, email.message.Message) and msg.policy is not email.policy.compat32:
            return msg
        try:
            return email.parser.BytesParser(policy=email.policy.default).parsebytes(self.raw, headersonly=True)
        except Exception:
            return email.message.EmailMessage()

    def parsers(self, name: str) -> dict[str, ParseResult]:
        """Each parser's reading of every ``name`` field, in order (``from``, ``reply-to``...)."""
        name = name.lower()
        if name not in self._parsed:
            self._parsed[name] = {
                "policy.default": self._parse_default(name),
                "compat32": self._parse_compat32(name),
                "rfc5322": self._parse_rfc5322(name),
                "lenient": self._parse_lenient(name),
            }
        return self._parsed[name]

    def _parse_default(self, name: str) -> ParseResult:
        result = ParseResult()
        try:
            msg = self._default_message()
            # get_all() would parse every field of that name; only the first MAX_FIELDS are read.
            found = [(k, v) for k, v in msg.raw_items() if k.lower() == name][:MAX_FIELDS]
            values = [msg.policy.header_fetch_parse(k, v) for k, v in found]
            for value in values:
                addresses = getattr(value, "addresses", None)
                if addresses is None:
                    result.error = "policy.default did not parse it as an address field"
                    continue
                for a in addresses:
                    result.mailboxes.append(Mailbox(display=utf8_text(a.display_name or ""),
                                                    local=utf8_text(a.username or ""), domain=utf8_text(a.domain or "")))
        except Exception as exc:  # CPython's header parser has raised on odd input before
            result.error = f"policy.default raised {type(exc).__name__}"
        return result

    def _parse_compat32(self, name: str) -> ParseResult:
        result = ParseResult()
        try:
            result.mailboxes.extend(self._getaddresses(self._compat32_values(name)))
        except Exception as exc:
            result.error = f"compat32 raised {type(exc).__name__}"
        return result

    def _getaddresses(self, values: list[str]) -> list[Mailbox]:
        """The mailboxes ``email.utils.getaddresses(values)`` finds (empty ones dropped).

        compat32 and the lenient reading usually hand it the same one value, the lenient
        one with the blanks after the colon kept: getaddresses skips leading blanks before
        anything else, so one call serves both (an all-blank value gives only ``('', '')``,
        dropped either way).
        """
        if not values:
            return []
        if len(values) == 1:
            values = [values[0].lstrip(" \t")]
            simple = _simple_mailbox(values[0])  # getaddresses reads the everyday shapes as the grammar does
            if simple is not None:
                return [simple]
        key = tuple(values)
        if key not in self._addresses:
            self._addresses[key] = [_from_addr(display, addr) for display, addr in email.utils.getaddresses(values)
                                    if display or addr]
        return list(self._addresses[key])

    def _parse_rfc5322(self, name: str) -> ParseResult:
        result = ParseResult()
        for f in self.block.get(name)[:MAX_FIELDS]:
            if not f.strict:
                continue
            one = parse_strict(f.value, groups=name not in ("from", "sender"))
            result.mailboxes.extend(one.mailboxes)
            if one.error and not result.error:
                result.error = f"line {f.line}: {one.error}"
        return result

    def _parse_lenient(self, name: str) -> ParseResult:
        result = ParseResult()
        try:
            result.mailboxes.extend(self._getaddresses([f.value for f in self.block.get(name)[:MAX_FIELDS]]))
        except Exception as exc:
            result.error = f"lenient parser raised {type(exc).__name__}"
        return result

    def mailboxes(self, name: str) -> list[Mailbox]:
        """Every mailbox any parser saw in ``name``, de-duplicated, first parser first.

        Defences judge the union: an address one parser hides is still one a client
        may show.
        """
        name = name.lower()
        if name in self._mailboxes:
            return list(self._mailboxes[name])
        seen, out = set(), []
        for result in self.parsers(name).values():
            for m in result.mailboxes:
                ident = (m.key, m.display)
                if ident not in seen:
                    seen.add(ident)
                    out.append(m)
        self._mailboxes[name] = out
        return list(out)

    def domains(self, name: str) -> list[str]:
        out: dict[str, None] = {}  # ordered and de-duplicated in one pass
        for m in self.mailboxes(name):
            dom = normalise_domain(m.domain)
            if dom:
                out.setdefault(dom)
        return list(out)


def facts(envelope, message, raw) -> Facts:
    """The shared :class:`Facts` of this message, computed once per envelope."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    elif not isinstance(raw, (bytes, bytearray)):
        raw = b""
    raw = bytes(raw)
    cache = getattr(envelope, "cache", None)
    if not isinstance(cache, dict):
        return Facts(message, raw)
    hit = cache.get(CACHE_KEY)
    if hit is not None and hit.raw == raw:
        return hit
    made = Facts(message, raw)
    cache[CACHE_KEY] = made
    return made


# ---------------------------------------------------------------- domains

def normalise_domain(domain: str) -> str:
    return (domain or "").strip().strip("[]").lower().rstrip(".")


def domain_of(address: str) -> str:
    """The domain of an envelope address (``""`` for the null sender or no ``@``)."""
    local, at, domain = (address or "").strip().strip("<>").rpartition("@")
    return normalise_domain(utf8_text(domain)) if at else ""


def _psl():
    """The one Public Suffix List of the process, shared with DMARC (building one takes ~0.3 s and MBs)."""
    from forgelab.auth.dmarc import psl

    return psl()


def org_domain(domain: str) -> str:
    """The organisational domain (``mail.corp.example`` -> ``corp.example``), or the domain itself."""
    return _org_domain(normalise_domain(domain))


@short_memo()  # a pure function of the name (the PSL is fixed); domains come back
def _org_domain(domain: str) -> str:
    try:
        return _psl().privatesuffix(domain) or domain
    except Exception:
        return domain


def known_suffix(domain: str) -> bool:
    """Whether ``domain`` ends in a real public suffix or a reserved test TLD (RFC 2606)."""
    return _known_suffix(normalise_domain(domain))


@short_memo()
def _known_suffix(domain: str) -> bool:
    if domain.rsplit(".", 1)[-1] in ("example", "test", "invalid", "localhost"):
        return True
    try:
        return _psl().publicsuffix(domain, accept_unknown=False) is not None
    except Exception:
        return False


def same_domain(a: str, b: str, compare: str = "organizational") -> bool:
    a, b = normalise_domain(a), normalise_domain(b)
    if compare == "exact":
        return a == b
    return org_domain(a) == org_domain(b)


def lab_directory(lab):
    """``lab.directory`` or None, so a defence works with a partial lab."""
    return getattr(lab, "directory", None)


def is_local_domain(lab, domain: str) -> bool:
    directory = lab_directory(lab)
    try:
        return bool(directory and domain and directory.is_local_domain(domain))
    except Exception:
        return False


def shown_list(items, limit: int = SHOWN) -> list:
    """The first ``limit`` items, then one ``"... and N more"`` (verdict details stay small)."""
    items = list(items)
    return items if len(items) <= limit else items[:limit] + [f"... and {len(items) - limit} more"]


def show(text, limit: int = 200) -> str:
    """Attacker text made safe for a reason sentence: control characters visible, length capped."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    text = printable(text)
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------- one verdict from many findings

_SEVERITY = ("pass", "none", "neutral", "softfail", "fail")


def finding(result: str, reason: str, **details) -> dict:
    """One thing a defence noticed; :func:`verdict` folds them."""
    return {"result": result, "reason": reason, **details}


def verdict(check: str, findings: list[dict], pass_reason: str, **details):
    """One Verdict: the harshest finding's result, every finding's sentence, ``pass`` if none.

    One verdict per defence keeps one ``X-Forgelab-Verdict`` line per check; the
    individual findings stay in ``details["findings"]`` for the web view.
    """
    from forgelab import Verdict

    if not findings:
        return Verdict(check=check, result="pass", reason=pass_reason, details={"findings": [], **details})
    ordered = sorted(findings, key=lambda f: -_SEVERITY.index(f["result"]))
    return Verdict(check=check, result=ordered[0]["result"], reason=" ".join(f["reason"] for f in ordered),
                   details={"findings": ordered, **details})
