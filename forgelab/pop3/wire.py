"""POP3 wire form of a message: CRLF lines and dot-stuffing (RFC 1939 section 3)."""
from __future__ import annotations

import re

_BARE_LF = re.compile(rb"(?<!\r)\n")


def to_crlf(data: bytes) -> bytes:
    """Every line ended by CRLF, the last one too.

    A bare LF becomes CRLF: clients split on LF, so a bare ``LF . CRLF`` left as it is would
    end the multi-line response early and let message text pose as server replies.
    """
    data = _BARE_LF.sub(b"\r\n", data)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def wire_size(data: bytes) -> int:
    """Octets of ``data`` as RETR sends it, before dot-stuffing (what STAT and LIST report)."""
    return len(to_crlf(data))


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
