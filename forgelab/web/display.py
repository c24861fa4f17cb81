"""How mail clients would show a message's From: the lesson of display-name and
multiple-From forgeries, computed from the header as stored."""
from __future__ import annotations

import re
import unicodedata
from email.header import decode_header, make_header
from email.utils import getaddresses

ADDRESS_LIKE = re.compile(r"[^\s<>@\"]+@[^\s<>@\"]+\.[^\s<>@\"]+")


def decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded, as a client would show them."""
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # broken encoded words: clients show the text as is
        return value


def reveal(text: str) -> str:
    """Invisible and look-alike characters made visible: \\u200b, \\u202e, non-ASCII code points."""
    out = []
    for ch in text:
        if ch.isascii() and (ch.isprintable() or ch == " "):
            out.append(ch)
        elif unicodedata.category(ch) in ("Cf", "Cc", "Zs", "Zl", "Zp") or not ch.isprintable():
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"{ch}[U+{ord(ch):04X}]")
    return "".join(out)


def _one(header: str) -> dict:
    decoded = " ".join(decode_words(header).split())
    pairs = [(name, address) for name, address in getaddresses([decoded]) if name or address]
    name, address = pairs[0] if pairs else ("", "")
    return {"raw": header, "decoded": decoded, "name": name, "address": address,
            "domain": address.rpartition("@")[2].lower() if "@" in address else "", "count": len(pairs),
            "addresses": [a for _, a in pairs]}


def from_views(headers: list[str]) -> dict:
    """``headers``: every From header value, raw. Returns what clients show and what to notice."""
    if not headers:
        return {"views": [{"client": "Every client", "shows": "(no sender)",
                           "note": "The message has no From header; RFC 5322 requires one."}],
                "warnings": ["No From header at all."], "froms": []}
    froms = [_one(h) for h in headers]
    first, last = froms[0], froms[-1]
    views = [
        {"client": "Name only (Outlook, Gmail and most phone apps, in the message list)",
         "shows": first["name"] or first["address"],
         "note": "The display name is whatever the sender typed; no defence checks it."},
        {"client": "Name and address (Thunderbird, Apple Mail with details shown)",
         "shows": f"{first['name']} <{first['address']}>" if first["name"] else first["address"],
         "note": "The address is what SPF alignment and DMARC judge; the name is not."},
        {"client": "The domain DMARC judges (RFC5322.From)",
         "shows": first["domain"] or "(none)",
         "note": "Authentication-Results header.from= should name this domain."},
        {"client": "Every character, nothing hidden",
         "shows": reveal(first["decoded"]),
         "note": "Invisible, right-to-left and look-alike characters spelled out."},
    ]
    if len(froms) > 1:
        views.append({"client": "A client that reads the last From header",
                      "shows": last["name"] or last["address"],
                      "note": "With several From headers, a checker and a client may read different ones."})
    warnings = []
    if len(froms) > 1:
        warnings.append(f"{len(froms)} From headers; RFC 5322 allows exactly one.")
    for item in froms:
        if item["count"] > 1:
            warnings.append(f"One From header holds {item['count']} addresses: {', '.join(item['addresses'])}.")
        claimed = ADDRESS_LIKE.search(item["name"] or "")
        if claimed and claimed.group(0).lower() != item["address"].lower():
            warnings.append(f"The display name looks like the address {claimed.group(0)}, "
                            f"but the message is from {item['address'] or '(nobody)'}.")
        if item["decoded"] != " ".join(item["raw"].split()):
            warnings.append("The header uses RFC 2047 encoded words; clients show the decoded text.")
        if reveal(item["decoded"]) != item["decoded"]:
            warnings.append("The header holds non-ASCII or invisible characters (see 'Every character').")
    return {"views": views, "warnings": warnings, "froms": froms}
