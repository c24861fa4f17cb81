"""A message to forge, built from parts, and signed with a lab key if asked."""
from __future__ import annotations

import datetime
from email.utils import format_datetime, make_msgid
from typing import Iterable, Sequence

from .wire import CRLF, set_line_endings


def build_message(*, from_: str | None = None, to: str | Sequence[str] | None = None,
                  subject: str | None = None, headers: Iterable[tuple[str, str]] = (),
                  body: str | bytes = "", date: str | None = None, message_id: str | None = None,
                  line_ending: bytes = CRLF) -> bytes:
    """A message from parts, header values as given (UTF-8), nothing escaped or encoded.

    ``date`` and ``message_id`` default to now and a fresh id; pass ``""`` to leave one out.
    A header in ``headers`` named From, To, Subject, Date or Message-ID replaces the one built
    from the other arguments or by default (give it twice in ``headers`` for two).
    A ``str`` body is text: its line endings become CRLF, as swaks does (a ``bytes`` body is
    sent as given); ``line_ending`` then rewrites every line ending of the message.
    """
    headers = list(headers)
    given = {name.lower() for name, _ in headers}  # exact names: "From :" is another header (a trick)
    if date is None:
        date = format_datetime(_now(), usegmt=True)
    if message_id is None:
        message_id = make_msgid(domain="forge.forgelab")
    own = [("From", from_), ("To", to if to is None or isinstance(to, str) else ", ".join(to)),
           ("Subject", subject), ("Date", date or None), ("Message-ID", message_id or None)]
    lines = [f"{name}: {value}" for name, value in own if value is not None and name.lower() not in given]
    lines.extend(f"{name}: {value}" for name, value in headers)
    head = "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n"
    raw_body = set_line_endings(body.encode("utf-8"), CRLF) if isinstance(body, str) else body
    if raw_body and not raw_body.endswith((b"\n", b"\r")):
        raw_body += b"\r\n"
    message = head + raw_body
    return message if line_ending == CRLF else set_line_endings(message, line_ending)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def dkim_sign(message: bytes, spec: str) -> bytes:
    """Sign with the lab key(s) of ``DOMAIN[:SELECTOR]`` (forgelab.auth.keys)."""
    from ..auth import keys

    domain, _, selector = spec.partition(":")
    return keys.sign(message, domain, selector or None)
