"""A stored message as network text: CRLF lines, as POP3 (and any protocol) sends it."""
from __future__ import annotations

import re

_BARE_LF = re.compile(rb"(?<!\r)\n")


def to_crlf(data: bytes) -> bytes:
    """Every line ended by CRLF, the last one too.

    A bare LF becomes CRLF: clients split on LF, so a bare ``LF . CRLF`` left as it is would
    end a POP3 multi-line response early and let message text pose as server replies.
    """
    data = _BARE_LF.sub(b"\r\n", data)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def wire_size(data: bytes) -> int:
    """Octets of ``data`` as RETR sends it, before dot-stuffing (what STAT and LIST report)."""
    if not data:
        return 0
    # What to_crlf would give, counted instead of built: every bare LF gains a CR.
    size = len(data) + data.count(b"\n") - data.count(b"\r\n")
    return size if data.endswith(b"\n") else size + 2
