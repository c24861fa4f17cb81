"""What forgelab writes on a message before storing it: Received, verdict and auth headers."""
from __future__ import annotations

import re
import time
from email.utils import formatdate

from .lab import Lab
from .session import Envelope, Session
from .verdicts import Verdict

_AUTHRES_RE = re.compile(rb"^authentication-results[ \t]*:[ \t]*(?:\r?\n[ \t]+)*([^\s;]+)", re.IGNORECASE)


def _clean(value: str, limit: int = 900) -> str:
    """One header line's worth: no CR/LF/NUL from attacker text, bounded length."""
    value = " ".join(str(value).replace("\x00", " ").split())
    return value if len(value) <= limit else value[: limit - 3] + "..."


def header_lines(name: str, value: str) -> bytes:
    return f"{name}: {_clean(value)}\r\n".encode("utf-8", "replace")


def split_header_block(raw: bytes) -> tuple[list[bytes], bytes]:
    """The raw header fields (each with its folded continuation lines) and the rest."""
    end = raw.find(b"\r\n\r\n")
    head, rest = (raw, b"") if end < 0 else (raw[: end + 2], raw[end + 2:])
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields, rest


def strip_forged_authres(raw: bytes, authserv_id: str) -> bytes:
    """Drop incoming Authentication-Results headers that claim our authserv-id (RFC 8601 section 5)."""
    if b"uthentication-" not in raw[:65536] and b"UTHENTICATION-" not in raw[:65536]:
        return raw
    fields, rest = split_header_block(raw)
    ours = authserv_id.lower().encode()
    kept = [f for f in fields if not ((m := _AUTHRES_RE.match(f)) and m.group(1).lower() == ours)]
    return b"".join(kept) + rest if len(kept) != len(fields) else raw


def received(session: Session, envelope: Envelope, lab: Lab, for_rcpt: str | None) -> str:
    helo = session.helo or "unknown"
    name = f"{session.peer_name} " if session.peer_name else ""
    protocol = "ESMTP" if session.esmtp else "SMTP"
    if session.tls:
        protocol += "S"
    if session.authenticated:
        protocol += "A"
    target = f"\r\n\tfor <{for_rcpt}>" if for_rcpt else ""
    return (f"from {helo} ({name}[{session.peer_ip}])\r\n\tby {lab.hostname} (forgelab) with {protocol} id {envelope.id}"
            f"{target}; {formatdate(time.time(), localtime=False)}")


def prepare_for_delivery(raw: bytes, session: Session, envelope: Envelope, lab: Lab,
                         verdicts: list[Verdict], extra: list[tuple[str, str]], for_rcpt: str | None = None) -> bytes:
    """The bytes to store: our headers on top, then the message minus forged auth results."""
    body = strip_forged_authres(raw, lab.hostname)
    top = [header_lines(name, value) for name, value in extra]
    top += [header_lines("X-Forgelab-Verdict", v.header_value()) for v in verdicts]
    rcpt = f"{for_rcpt}@{lab.directory.primary_domain}" if for_rcpt and "@" not in for_rcpt else for_rcpt
    received_value = received(session, envelope, lab, rcpt).replace("\x00", " ")
    top.insert(0, f"Received: {received_value}\r\n".encode("utf-8", "replace"))
    return b"".join(top) + body
