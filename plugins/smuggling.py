"""End-of-data look-alikes, NUL bytes and lone CRs inside a message (SMTP smuggling)."""
from __future__ import annotations

import re

import forgelab

from ._findings import finding, show, verdict

# A dot between line breaks (each CRLF, CR or LF, a NUL allowed next to the dot):
# everything a lenient server might take for the end of DATA.
_EOD_RE = re.compile(rb"(\r\n|\r|\n)(\x00?)\.(\x00?)(?=(\r\n|\r|\n))")  # the end overlaps the next
# Every match of _EOD_RE holds one of these.
_DOT_AFTER_BREAK = (b"\r.", b"\n.", b"\r\x00.", b"\n\x00.")
# The probes of smtpsmug and SEC Consult's scanner (CVE-2023-51764, -51765, -51766).
KNOWN = {
    b"\n.\n": "lflf", b"\r.\r": "crcr", b"\r.\n": "crlf", b"\n.\r": "lfcr",
    b"\n.\r\n": "lfcrlf", b"\r\n.\n": "crlflf", b"\r.\r\n": "crcrlf", b"\r\n.\r": "crlfcr",
    b"\r\n\x00.\r\n": "nullbefore", b"\r\n.\x00\r\n": "nullafter",
}
_COMMAND_RE = re.compile(rb"^[\s\x00]*(MAIL\s+FROM|RCPT\s+TO|DATA|RSET|HELO|EHLO|QUIT|BDAT)\b", re.IGNORECASE)
_PREVIEW = 200
_LISTED = 10  # look-alikes described one by one; the rest are counted


def _line(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


class Smuggling:
    """Does the message hold something a lenient server would cut it at?

    ``fail`` for each of:

    - an end-of-data look-alike: a ``.`` between line breaks other than CRLF.CRLF
      (``\\n.\\n``, ``\\r.\\r``, ``\\r.\\n``, ``\\n.\\r``, ``\\n.\\r\\n``, ``\\r\\n.\\n``,
      ``\\r.\\r\\n``, ``\\r\\n.\\r``, ``\\r\\n\\x00.\\r\\n``, ``\\r\\n.\\x00\\r\\n`` and the like):
      a server that takes it for the end of DATA reads what follows as a second
      message, one that passed no check. ``details["sequences"]`` gives each sequence,
      where it is, and the start of that hidden message;
    - NUL bytes (C programs stop reading a string there);
    - lone CRs (``\\r`` without ``\\n``).

    Settings: none.
    """

    name = "smuggling"

    def __init__(self, settings: dict | None = None):
        self.settings = dict(settings or {})

    @forgelab.hookimpl
    def forgelab_message(self, envelope, raw):
        raw = raw if isinstance(raw, (bytes, bytearray)) else b""
        # Look at the text as sent: dot-unstuffing would hide the dot of "\r\n.\n".
        sent = getattr(envelope, "data_as_sent", b"") or raw
        sequences, total = self._sequences(sent)
        findings = []
        if total > len(sequences):
            findings.append(finding("fail", f"In all, {total} end-of-data look-alikes; the first {len(sequences)} "
                                            "are listed.", count=total))
        for seq in sequences:
            hidden = "; what follows starts with SMTP commands: a second message smuggled inside this one" \
                if seq["smtp_commands"] else ""
            findings.append(finding(
                "fail",
                f"At byte {seq['offset']} (line {seq['line']}) the sequence {seq['sequence']} ({seq['name']}) "
                f"is a dot a lenient server takes for the end of the data{hidden}.", **seq))
        nuls = raw.count(b"\x00")
        if nuls:
            first = raw.index(b"\x00")
            findings.append(finding(
                "fail", f"The message holds {nuls} NUL byte(s), the first at byte {first} "
                f"(line {_line(raw, first)}); C programs stop reading there.", count=nuls, offset=first))
        crs = raw.count(b"\r") - raw.count(b"\r\n")
        if crs:
            first = re.search(rb"\r(?!\n)", raw).start()
            findings.append(finding(
                "fail", f"The message holds {crs} lone CR(s) (\\r without \\n), the first at byte {first} "
                f"(line {_line(raw, first)}).", count=crs, offset=first))
        return verdict(self.name, findings,
                       "No end-of-data look-alike, NUL byte or lone CR in the message.",
                       sequences=sequences)

    @staticmethod
    def _sequences(raw: bytes) -> tuple[list[dict], int]:
        """The first few look-alikes in detail, and how many there are in all."""
        out, total = [], 0
        if not any(dot in raw for dot in _DOT_AFTER_BREAK):  # what nearly every message holds: no look-alike
            return out, total
        for match in _EOD_RE.finditer(raw):
            seq = match.group() + match.group(4)
            end = match.end() + len(match.group(4))
            if seq == b"\r\n.\r\n":  # a dot line the client stuffed: an ordinary line
                continue
            total += 1
            if len(out) >= _LISTED:
                continue
            after = raw[end:end + _PREVIEW]
            out.append({
                "offset": match.start(), "line": _line(raw, match.start()),
                "sequence": repr(seq)[2:-1], "name": KNOWN.get(seq, "variant"),
                "hidden_message": show(after, _PREVIEW),
                "smtp_commands": bool(_COMMAND_RE.match(after)),
            })
        return out, total
