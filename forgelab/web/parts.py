"""A stored message's MIME parts, listed and handed out as downloads (``/api/messages/{id}/parts``).

The stored copy passed the message limits (``core/message_limits.py``: depth and number of
parts) before it was stored, so the stdlib parser is handed a bounded structure; the walk
stops at ``MAX_PARTS`` all the same. A part's name and type are the sender's: the download
gets a file name made of safe characters and a content type from a short allow list.
"""
from __future__ import annotations

import re
from email import message_from_bytes
from email.message import Message
from email.policy import compat32

from ..core.message_limits import DEFAULTS

MAX_PARTS = DEFAULTS["max_mime_parts"]
# Types a browser shows without running anything; any other part is application/octet-stream.
PLAIN_TYPES = {"text/plain", "image/png", "image/jpeg", "image/gif"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CHARSET = re.compile(r"[A-Za-z0-9_.:-]{1,40}")


def _leaves(raw: bytes) -> list[Message]:
    """The parts that hold content (no multipart containers), in order."""
    out = []
    for part in message_from_bytes(raw, policy=compat32).walk():
        if not part.is_multipart():
            out.append(part)
            if len(out) >= MAX_PARTS:
                break
    return out


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # a malformed RFC 2231 name: treat as none
        return None
    return None if name is None else str(name)


def _payload(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def list_parts(raw: bytes) -> list[dict]:
    """``[{index, content_type, filename, size, disposition}]``: ``size`` is decoded octets."""
    return [{"index": i, "content_type": part.get_content_type(), "filename": _filename(part),
             "size": len(_payload(part)), "disposition": part.get_content_disposition()}
            for i, part in enumerate(_leaves(raw))]


def safe_filename(name: str | None, index: int) -> str:
    """ASCII letters, digits, ``.``, ``_`` and ``-`` only, no leading dot, at most 100 characters."""
    cleaned = _UNSAFE.sub("_", name or "").strip("._")[:100]
    return cleaned or f"part-{index}"


def part_download(raw: bytes, index: int) -> tuple[bytes, str, str] | None:
    """``(decoded bytes, content type to send, safe file name)`` of part ``index``; None if there is none."""
    parts = _leaves(raw)
    if not 0 <= index < len(parts):
        return None
    part = parts[index]
    content_type = part.get_content_type()
    if content_type not in PLAIN_TYPES:
        content_type = "application/octet-stream"
    elif content_type == "text/plain":
        charset = part.get_content_charset() or "us-ascii"
        content_type += f"; charset={charset}" if _CHARSET.fullmatch(charset) else ""
    return _payload(part), content_type, safe_filename(_filename(part), index)
