"""The bytes a forger sends and reads: line endings, dot-stuffing, escapes for display."""
from __future__ import annotations

CRLF = b"\r\n"
END_OF_DATA = b"\r\n.\r\n"
LINE_ENDINGS = {"crlf": b"\r\n", "lf": b"\n", "cr": b"\r"}


def escape_bytes(data: bytes, double_backslash: bool = True) -> str:
    """Bytes made readable and safe to print: CR, LF, NUL, other controls and bytes that are
    not UTF-8 shown as escapes (``\\r \\n \\x00 \\xff \\u202e``).

    ``double_backslash`` shows a backslash that was sent as ``\\\\``, so the bytes we send
    read unambiguously; ``False`` shows a backslash as it is, for text such as a server's
    reply that writes ``\\n`` as prose (real control characters are still escaped).
    """
    out = []
    for ch in data.decode("utf-8", "surrogateescape"):
        if "\udc80" <= ch <= "\udcff":  # a byte that is not UTF-8
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\\":
            out.append("\\\\" if double_backslash else ch)
        elif not ch.isprintable():
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def split_wire_lines(data: bytes) -> list[bytes]:
    """Split at LF only, keeping every byte (a bare CR stays inside its line, visible)."""
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 4.5.2: double the dot that starts a CRLF line (only CRLF lines, as a strict server reads)."""
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")


def set_line_endings(data: bytes, ending: bytes) -> bytes:
    """Rewrite every line ending (CRLF, LF or CR) as ``ending``."""
    normal = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return normal.replace(b"\n", ending)


def parse_escapes(text: str) -> bytes:
    """``"\\r\\n.\\n"`` as typed on a command line -> the bytes (``\\r \\n \\t \\0 \\xHH \\\\``)."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1")
