"""A message as the web view shows it: the stored source (or, refused at DATA, the start its
event kept), its headers, its From."""
from __future__ import annotations

from email.parser import BytesHeaderParser
from email.policy import compat32

from .display import from_views

# Headers where the defences speak; the page highlights them.
HIGHLIGHTED = {"authentication-results", "arc-authentication-results", "x-forgelab-verdict", "received-spf"}
MAX_SHOWN = 512 * 1024  # characters of source put in the page; the full text is at /raw


def load_source(store, locations: list) -> tuple[bytes | None, str | None]:
    """The stored bytes of the first copy still there, and a note when none is."""
    notes = []
    for location in locations or []:
        try:
            return store.read_at(location), None
        except (LookupError, OSError, ValueError) as exc:
            notes.append(f"{location}: {type(exc).__name__}")
    if not locations:
        return None, "not stored (the server refused it)"
    return None, "no longer in the store (deleted by a POP3 client?): " + "; ".join(notes)


def headers_of(raw: bytes) -> list[dict]:
    """Each header as stored (folding kept), in order, flagged when a defence wrote it."""
    parsed = BytesHeaderParser(policy=compat32).parsebytes(raw)
    return [{"name": name, "value": str(value), "highlight": name.lower() in HIGHLIGHTED}
            for name, value in parsed.items()]


def message_detail(entry: dict, store) -> dict:
    """An index entry joined with what the store holds for it."""
    raw, note = load_source(store, entry.get("locations") or [])
    detail = dict(entry)
    if raw is None and entry.get("source") is not None:
        raw = entry["source"].encode("utf-8", "surrogateescape")
        note = "refused at DATA, so never stored: this is the start of the message as received, kept in its event"
    detail["source_note"] = note
    if raw is None:
        detail.update(source=None, headers=[], display=None)
        return detail
    headers = headers_of(raw)
    detail["source"] = raw.decode("utf-8", "replace")
    detail["headers"] = headers
    detail["display"] = from_views([h["value"] for h in headers if h["name"].lower() == "from"])
    return detail
