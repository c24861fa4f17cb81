"""Attacker text made safe to show on one line: the one rule for terminal, replies and events."""
from __future__ import annotations

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}  # as Python writes them: easier to read than \x09


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that surrogateescape kept
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(text, replacement: str | None = None) -> str:
    """``text`` with every non-printable character (controls, bidi marks, line breaks) shown
    as an escape such as ``\\x1b``, or as ``replacement`` when one is given."""
    text = str(text)
    if text.isprintable():  # the common case: one C call, no copy
        return text
    if replacement is not None:
        return "".join(ch if ch.isprintable() else replacement for ch in text)
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


# -- 7-bit: what goes on the wire in a protocol reply ---------------------------------
CUT_MARKER = " [...]"  # says a line was cut; 7-bit, unlike an ellipsis


def _escape_7bit(ch: str) -> str:
    code = ord(ch)
    if ch in _NAMED:
        return _NAMED[ch]
    if code < 0x80 or 0xDC80 <= code <= 0xDCFF:  # an ASCII control, or a byte that is not UTF-8
        return f"\\x{code & 0xFF:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _pieces_7bit(text: str) -> list[str]:
    return [ch if " " <= ch <= "~" else _escape_7bit(ch) for ch in text]


def seven_bit(text) -> str:
    """``text`` in printable 7-bit ASCII, the one rule for SMTP and POP3 replies: a character
    from space to ``~`` stays (a backslash too: reasons write ``\\n`` for a line feed); tab, LF
    and CR are ``\\t``, ``\\n``, ``\\r``; any other ASCII control ``\\xNN`` (``\\x00``); any other
    character ``\\uNNNN`` (``\\u00e9``, ``\\u202e``, ``\\u200b``) or ``\\UNNNNNNNN`` beyond U+FFFF;
    a byte that was not UTF-8 (kept by surrogateescape) ``\\xNN`` with NN 80 to ff. Nothing
    invisible or reordering reaches a terminal, and no client has to guess an encoding."""
    text = str(text)
    if text.isascii() and text.isprintable():  # the common case, no copy
        return text
    return "".join(_pieces_7bit(text))


def fit_7bit(text, width: int, marker: str = CUT_MARKER) -> str:
    """``seven_bit(text)`` in at most ``width`` characters: a longer one is cut after a word
    (or, with no space in its second half, between two escapes), and ``marker`` says so."""
    shown = seven_bit(text)
    if len(shown) <= width:
        return shown
    pieces = _pieces_7bit(str(text))
    room, used, kept = max(width - len(marker), 0), 0, 0
    while kept < len(pieces) and used + len(pieces[kept]) <= room:
        used += len(pieces[kept])
        kept += 1
    space = max((i for i in range(kept // 2, kept) if pieces[i] == " "), default=None)
    return "".join(pieces[:space if space is not None else kept]).rstrip() + marker
