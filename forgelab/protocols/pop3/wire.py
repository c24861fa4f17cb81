"""POP3 wire form of a message: CRLF lines and dot-stuffing (RFC 1939 section 3)."""
from __future__ import annotations

from ...store.crlf import to_crlf, wire_size

__all__ = ["dot_stuff", "to_crlf", "top", "wire_size"]


def dot_stuff(data: bytes) -> bytes:
    """The body of a multi-line response: CRLF lines, leading dots doubled, then ``.CRLF``."""
    data = to_crlf(data)
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def top(data: bytes, lines: int) -> bytes:
    """The header, the blank line and the first ``lines`` lines of the body (the TOP command)."""
    data = to_crlf(data)
    if data.startswith(b"\r\n"):  # no header at all: the body starts after this blank line
        head, body = b"", data[2:]
    else:
        end = data.find(b"\r\n\r\n")
        if end < 0:  # header only, no body
            return data
        head, body = data[:end + 2], data[end + 4:]
    kept = body.split(b"\r\n")[:-1][:max(lines, 0)]
    return head + b"\r\n" + b"".join(line + b"\r\n" for line in kept)
