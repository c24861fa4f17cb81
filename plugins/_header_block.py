"""A message's raw header block, read the way a lenient MTA and Python's compat32 parser read it.

Not a plugin (no hooks): the content defences share it through ``_facts``. Everything
here is attacker input, so nothing here raises.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_FIELD_NAME_RE = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")


@dataclass(frozen=True)
class RawField:
    """One header field as a lenient MTA sees it: folded lines joined, name trimmed.

    :param name: the field name as written, without surrounding whitespace.
    :param value: the unfolded value (UTF-8, invalid bytes kept as surrogates).
    :param line: 1-based line number of its first line.
    :param offset: byte offset of its first line in the raw message.
    :param raw: the field's bytes as written, folds and all (without the last end of line).
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
        """The name in lower case, as fields are looked up (``From`` and ``FROM`` are one name)."""
        return self.name.lower()

    @property
    def strict(self) -> bool:
        """Whether the field is well-formed per RFC 5322 (see the class's ``:param strict:``)."""
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
    """The header section split into fields, with the lines that are not fields and where the body starts."""

    fields: list[RawField]
    bad_lines: list[BadLine]
    body_offset: int
    first_line_indented: bool
    _by_name: dict | None = field(default=None, init=False, repr=False, compare=False)

    def get(self, name: str) -> list[RawField]:
        """Every field of this name (any case), in order."""
        if self._by_name is None:  # the defences ask for the same few names many times
            self._by_name = {}
            for f in self.fields:
                self._by_name.setdefault(f.key, []).append(f)
        return list(self._by_name.get(name.lower(), ()))

    def count(self, name: str) -> int:
        """How many fields of this name there are."""
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
    """Bytes as text: UTF-8, any other byte kept as a surrogate (``show`` makes it visible)."""
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

