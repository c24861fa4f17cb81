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
