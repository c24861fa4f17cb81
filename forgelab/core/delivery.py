"""What forgelab writes on a message before storing it: Received, verdict and auth headers."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from email.utils import format_datetime

from ..auth.results import strip_forged_authres
from ..lab import Lab
from .session import Envelope, Session
from ..verdicts import Verdict


_date: tuple[int, str] = (0, "")  # the Received date of this second, made once per second


def _received_date() -> str:
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, format_datetime(datetime.fromtimestamp(now, timezone.utc)))
    return _date[1]


def _clean(value: str, limit: int = 900) -> str:
    """One header line's worth: no CR/LF/NUL from attacker text, bounded length."""
    value = " ".join(str(value).replace("\x00", " ").split())
    return value if len(value) <= limit else value[: limit - 3] + "..."


def header_lines(name: str, value: str) -> bytes:
    return f"{name}: {_clean(value)}\r\n".encode("utf-8", "replace")


def received(session: Session, envelope: Envelope, lab: Lab, for_rcpt: str | None) -> str:
    # Client-given parts are cleaned: no CR, LF or NUL may fold a header of our own into being.
    helo = _clean(session.helo or "unknown", 255)
    name = f"{_clean(session.peer_name, 255)} " if session.peer_name else ""
    protocol = "ESMTP" if session.esmtp else "SMTP"
    if session.tls:
        protocol += "S"
    if session.authenticated:
        protocol += "A"
    target = f"\r\n\tfor <{_clean(for_rcpt, 255)}>" if for_rcpt else ""
    return (f"from {helo} ({name}[{session.peer_ip}])\r\n\tby {lab.hostname} (forgelab) with {protocol} id {envelope.id}"
            f"{target}; {_received_date()}")


def folded_start(raw: bytes) -> int:
    """Octets of the folded (whitespace-led) lines a message's header starts with; 0 as a rule.

    Such a line continues no field: some programs drop it, others read it as a field of its own
    (``" From: <x@y>"``: Composition Kills, Fig. 6(f)). A header added above it would make it a
    continuation of that header instead, and change what a lenient program reads.
    """
    end = 0
    while raw[end:end + 1] in (b" ", b"\t"):
        newline = raw.find(b"\n", end)
        end = len(raw) if newline < 0 else newline + 1
    return end


def prepare_for_delivery(raw: bytes, session: Session, envelope: Envelope, lab: Lab,
                         verdicts: list[Verdict], extra: list[tuple[str, str]], for_rcpt: str | None = None) -> bytes:
    """The bytes to store: our headers on top, then the message minus forged auth results.

    A header that starts with folded lines keeps them first, above ours (``folded_start``): no
    header of ours can absorb them, so every parser reads the stored copy's fields as it read
    the received message's (under ``header_start = "strict"`` such a message is refused instead).
    """
    body = strip_forged_authres(raw, lab.hostname)
    lead = folded_start(body)
    top = [header_lines(name, value) for name, value in extra]
    top += [header_lines("X-Forgelab-Verdict", v.header_value()) for v in verdicts]
    rcpt = f"{for_rcpt}@{lab.directory.primary_domain}" if for_rcpt and "@" not in for_rcpt else for_rcpt
    received_value = received(session, envelope, lab, rcpt)
    top.insert(0, f"Received: {received_value}\r\n".encode("utf-8", "replace"))
    # RFC 5321 4.4: final delivery records the envelope sender, so a student can see it.
    top.insert(0, header_lines("Return-Path", f"<{envelope.mail_from}>"))
    head = body[:lead] if body[:lead].endswith(b"\n") or not lead else body[:lead] + b"\r\n"
    return head + b"".join(top) + body[lead:]
