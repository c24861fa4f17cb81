"""Bare LF or bare CR in the DATA: the precondition of SMTP smuggling."""
from __future__ import annotations

import forgelab

from ._findings import finding, show, verdict

_SHOWN = 5  # positions listed in details; the counts cover the rest


def _first_bare(raw: bytes, char: bytes, count: int) -> list[int]:
    """The offsets of the first few (of ``count``) bare ``char``: not part of a CRLF."""
    offsets: list[int] = []
    pos = raw.find(char)
    while pos >= 0 and len(offsets) < min(_SHOWN, count):
        pair = raw[pos - 1:pos + 1] if char == b"\n" else raw[pos:pos + 2]
        if pair != b"\r\n":
            offsets.append(pos)
        pos = raw.find(char, pos + 1)
    return offsets


def _position(raw: bytes, offset: int) -> dict:
    line = raw.count(b"\n", 0, offset) + 1
    start = max(0, offset - 20)
    return {"offset": offset, "line": line, "context": show(raw[start:offset + 20], 80)}


class BareNewline:
    """Does every line of the DATA end in CRLF, as RFC 5321 2.3.8 requires?

    A bare LF (``\\n`` without ``\\r``) or bare CR (``\\r`` without ``\\n``) is how SMTP
    smuggling starts: a server that treats ``\\n.\\n`` as the end of the data lets a
    second, forged message ride inside the first. ``fail`` names the first offset and
    line of each kind; the policy decides whether to reject (as Postfix's
    ``smtpd_forbid_bare_newline`` does) or only to tag.

    Settings: none.
    """

    name = "bare-newline"

    def __init__(self, settings: dict | None = None):
        self.settings = dict(settings or {})

    @forgelab.hookimpl
    def forgelab_message(self, raw):
        raw = raw if isinstance(raw, (bytes, bytearray)) else b""
        crlf = raw.count(b"\r\n")
        counts = {"LF": raw.count(b"\n") - crlf, "CR": raw.count(b"\r") - crlf}
        shown = {"LF": _first_bare(raw, b"\n", counts["LF"]), "CR": _first_bare(raw, b"\r", counts["CR"])}
        findings = []
        for kind, name in (("LF", "line feed (\\n without \\r)"), ("CR", "carriage return (\\r without \\n)")):
            if counts[kind]:
                first = _position(raw, shown[kind][0])
                findings.append(finding(
                    "fail",
                    f"The message holds {counts[kind]} bare {name}, the first at byte {first['offset']} "
                    f"(line {first['line']}); every line must end in CRLF.",
                    kind=kind, count=counts[kind], positions=[_position(raw, o) for o in shown[kind]]))
        return verdict(self.name, findings, "Every line of the message ends in CRLF: no bare LF or CR.",
                       bare_lf=counts["LF"], bare_cr=counts["CR"])
