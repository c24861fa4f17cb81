"""Python's address-list parser, run on pieces of a field, so its cost grows with the field.

``email._header_value_parser.get_address_list`` copies the rest of the field at every
token (CPython gh-136063), so its cost grows with the square of what it is handed: a
16 kB From of quotes or backslashes took 2.6 s. Cut between entries, a field reads the
same, in pieces of at most ``PIECE`` characters.
"""
from __future__ import annotations

import email._header_value_parser as _hvp
import email.errors
import re

# The longest piece handed to the stdlib parser; no honest address entry comes near it.
PIECE = 1024
# An encoded word as the stdlib reads one, with none of the characters that open or close
# something else (a quote, a comment, <>, a literal) inside it.
_ENCODED_WORD_RE = re.compile(r'=\?[^?\s"()<>\[\]\\]*\?[^?\s"()<>\[\]\\]*\?[^?\s"()<>\[\]\\]*\?=')


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


def address_pieces(value: str) -> list[str] | None:
    """``value`` cut after commas that end an entry, packed into pieces of at most ``PIECE``
    characters (and the comma); None if an entry is longer, or if the field is too odd to
    be sure where the stdlib parser ends its entries.

    It cuts only where that parser certainly ends an entry: outside quoted strings,
    comments, ``<>``, encoded words and groups, and only at a comma with an entry on both
    sides (empty entries read differently at a piece's edge). A field with a ``[``, a source
    route or a broken ``<>`` is not cut at all.
    """
    cuts = []
    depth, quoted, angle, group, escaped, i, size = 0, False, False, False, False, 0, len(value)
    last = ","  # the last character that is not blank; pending: a comma waiting to see what follows it
    pending = None
    while i < size:
        ch = value[i]
        if ch not in " \t\r\n":
            if pending is not None and ch != ",":
                cuts.append(pending)  # an entry before it and one after it: a safe place to cut
            pending = None
        if escaped:
            escaped = False
        elif ch == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            if ch == "=" and value.startswith("=?", i):  # the stdlib decodes encoded words inside quotes too
                word = _ENCODED_WORD_RE.match(value, i)
                if word is None:
                    return None
                i = word.end() - 1
            quoted = ch != '"'
        elif depth:
            depth += (ch == "(") - (ch == ")")
        elif ch == '"':  # inside <> too: a malformed <> is read on as a phrase, quotes and all
            quoted = True
        elif ch == "(":
            depth = 1
        elif ch in "[]":  # a domain literal, or a misplaced special: too odd to cut (and rare)
            return None
        elif ch == "=" and value.startswith("=?", i):  # an encoded word may hold commas: skip it whole
            word = _ENCODED_WORD_RE.match(value, i)
            if word is None:
                return None
            i = word.end() - 1
        elif angle and ch in ",;:<":  # a source route or a broken <>: the stdlib may read on past it
            return None
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == ":" and not angle:
            group = True
        elif ch == ";" and not angle:
            group = False
        elif ch == "," and not (angle or group) and last != ",":
            pending = i
        if ch not in " \t\r\n":
            last = ch
        i += 1
    if quoted or depth or angle or group:
        return None
    pieces, start, prev = [], 0, 0
    for cut in cuts + [size]:
        if cut - prev > PIECE:  # one entry longer than a piece
            return None
        if cut - start > PIECE:
            pieces.append(value[start:prev + 1])  # the comma too: an entry reads differently at the very end
            start = prev + 1
        prev = cut
    pieces.append(value[start:])
    return pieces
