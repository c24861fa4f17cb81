"""Address fields cut where their entries end: counted for the caps, read in pieces by the stdlib.

One scan (:func:`scan`) finds, in one linear pass over quotes, comments and ``<>``,
where a field's entries end. :func:`count_addresses` is how many there are (the
``max_addresses`` cap of ``message_limits``); :func:`address_list` hands Python's
address-list parser the field in pieces cut there.

``email._header_value_parser.get_address_list`` copies the rest of the field at every
token (CPython gh-136063), so its cost grows with the square of what it is handed: a
16 kB From of quotes or backslashes took 2.6 s. Cut between entries, a field reads the
same, in pieces of at most ``PIECE`` characters.
"""
from __future__ import annotations

import email._header_value_parser as _hvp
import email.errors
import re
from dataclasses import dataclass

# The longest piece handed to the stdlib parser; no honest address entry comes near it.
PIECE = 1024
# An encoded word as the stdlib reads one, with none of the characters that open or close
# something else (a quote, a comment, <>, a literal) inside it.
_ENCODED_WORD_RE = re.compile(r'=\?[^?\s"()<>\[\]\\]*\?[^?\s"()<>\[\]\\]*\?[^?\s"()<>\[\]\\]*\?=')
_BLANKS = " \t\r\n"
# The characters that open, close or end something in an address field; a run of any others
# (an ordinary word) changes nothing a scan keeps, so it is passed over at once.
_SPECIALS = '"()\\<>[]=:;,'
_ORDINARY_RUN_RE = re.compile(r'[^"()\\<>\[\]=:;, \t\r\n]+')


def address_list(value: str):
    """``get_address_list(value)``, the stdlib's parse, run on pieces of the field cut at the
    commas between its entries, so its cost grows with the field, not with its square.

    A field with an entry (or a group) longer than ``PIECE`` is not parsed: no honest
    address is that long, and one that long costs seconds. It reads as an empty list with
    a defect, which the defences see as a parser that found no address.
    """
    if len(value) <= PIECE:
        return _whole_address_list(value)
    pieces = address_pieces(value)
    if pieces is None:
        empty = _hvp.AddressList()
        empty.defects.append(email.errors.InvalidHeaderDefect(
            f"address list not parsed: an entry or group longer than {PIECE} characters"))
        return empty
    out = _hvp.AddressList()
    for piece in pieces:  # each but the last ends in the comma it was cut after
        piece = _whole_address_list(piece)
        out.extend(piece)
        out.defects.extend(piece.defects)
    return out


def _whole_address_list(value: str):
    address_list, rest = _hvp.get_address_list(value)
    assert not rest, "get_address_list reads everything"
    return address_list


@dataclass(frozen=True)
class Scan:
    """Where an address field's entries end, found in one pass by :func:`scan`.

    :param separators: every comma some parser may end an entry at: outside quoted
        strings, comments and ``<>`` (a group's members' commas too).
    :param cuts: the commas the stdlib parser certainly ends an entry at, with an entry on
        both sides: those of ``separators`` outside groups and encoded words.
    :param closed: every quote, comment and ``<>`` was closed.
    :param cuttable: ``closed``, no group left open, and nothing too odd to be sure where
        the stdlib parser ends its entries (a ``[``, a source route, a broken ``<>`` or
        encoded word).
    """

    separators: list[int]
    cuts: list[int]
    closed: bool
    cuttable: bool


def scan(value: str) -> Scan:
    """The :class:`Scan` of an address field's value: one pass, linear in its length."""
    separators: list[int] = []
    cuts: list[int] = []
    quoted = angle = group = escaped = odd = False  # inside "...", <...>, a group; after a backslash; too odd to cut
    depth = 0  # comments nest
    last = ","  # the last character that is not blank (as if a comma came before the first entry)
    pending = None  # a comma of an entry's end, waiting to see whether another entry follows it
    i, size = 0, len(value)
    while i < size:
        ch = value[i]
        if ch in _BLANKS:  # a blank changes nothing, but ends an escape
            escaped = False
            i += 1
            continue
        if pending is not None and ch != ",":
            cuts.append(pending)  # an entry before it and one after it: a safe place to cut
        pending = None
        if escaped:
            escaped = False
        elif ch not in _SPECIALS:  # an ordinary word: nothing opens or ends in it
            i = _ORDINARY_RUN_RE.match(value, i).end() - 1
        elif ch == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            if ch == "=" and value.startswith("=?", i):  # the stdlib decodes encoded words inside quotes too
                word = _ENCODED_WORD_RE.match(value, i)
                if word is None:
                    odd = True
                else:
                    i = word.end() - 1  # it holds no quote or backslash: the quoted string goes on after it
            quoted = ch != '"'
        elif depth:
            depth += (ch == "(") - (ch == ")")
        elif ch == '"':  # inside <> too: a malformed <> is read on as a phrase, quotes and all
            quoted = True
        elif ch == "(":
            depth = 1
        elif ch in "[]":  # a domain literal, or a misplaced special: too odd to cut (and rare)
            odd = True
        elif ch == "=" and value.startswith("=?", i):  # an encoded word may hold commas: no cut inside it
            word = _ENCODED_WORD_RE.match(value, i)
            if word is None:
                odd = True
            else:
                if not angle:  # a parser that does not decode it (getaddresses) splits it there
                    separators.extend(j for j in range(i, word.end()) if value[j] == ",")
                i = word.end() - 1
        elif angle and ch in ",;:<":  # a source route or a broken <>: the stdlib may read on past it
            odd = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == ":":  # a group's name ends; its members follow, up to the ";"
            group = True
        elif ch == ";":
            group = False
        elif ch == ",":
            separators.append(i)
            if not group and last != ",":
                pending = i
        last = value[i]  # the last character read: never a blank
        i += 1
    closed = not (quoted or depth or angle)
    return Scan(separators, cuts, closed, cuttable=closed and not group and not odd)


def count_addresses(value: str) -> int:
    """How many list entries an address field holds: its :attr:`Scan.separators`, plus one
    (empty entries count too: each costs a parser a step).

    Never below what a parser finds; a group's members count one each. An unclosed quote,
    comment or ``<`` makes every comma count.
    """
    if not value.strip(_BLANKS):
        return 0
    found = scan(value)
    count = len(found.separators) + 1
    if not found.closed:  # never closed: parsers disagree on what follows, so count every comma
        return max(count, value.count(",") + 1)
    return count


def address_pieces(value: str) -> list[str] | None:
    """``value`` cut after commas that end an entry, packed into pieces of at most ``PIECE``
    characters (and the comma); None if an entry is longer, or if the field is too odd to
    be sure where the stdlib parser ends its entries.

    It cuts only at the :attr:`Scan.cuts`: where that parser certainly ends an entry,
    outside quoted strings, comments, ``<>``, encoded words and groups, and only at a comma
    with an entry on both sides (empty entries read differently at a piece's edge). A field
    with a ``[``, a source route or a broken ``<>`` is not cut at all.
    """
    found = scan(value)
    if not found.cuttable:
        return None
    pieces, start, prev = [], 0, 0
    for cut in found.cuts + [len(value)]:
        if cut - prev > PIECE:  # one entry longer than a piece
            return None
        if cut - start > PIECE:
            pieces.append(value[start:prev + 1])  # the comma too: an entry reads differently at the very end
            start = prev + 1
        prev = cut
    pieces.append(value[start:])
    return pieces
