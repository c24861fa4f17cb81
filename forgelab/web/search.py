"""Message search for ``GET /api/messages?q=``: a small query language over the index.

``invoice from:bank.example subject:"two words" check:dmarc outcome:quarantine policy:strict``:
every term must match (AND). A bare word or quoted phrase is looked for, case-insensitively,
in From, To, Subject and the start of the body; ``from:``, ``to:``, ``subject:`` in that one
field; ``check:NAME`` means that check did not pass (any result but pass or none);
``outcome:`` is accept, tag, quarantine or refused; ``policy:`` the policy the session ran under.

Body text is the first ``BODY_PREFIX`` octets of the stored copy, as stored (not decoded from
base64 or quoted-printable), read once per message and cached (bounded): a query never reads
megabytes.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from email.parser import BytesHeaderParser
from email.policy import compat32

MAX_QUERY = 512        # characters of a query
MAX_TERMS = 32
BODY_PREFIX = 4096     # octets of a stored message that free text searches
MAX_CACHED = 5000      # messages whose start is kept (at most ~20 MB)

FIELDS = ("from", "to", "subject", "check", "outcome", "policy")
OUTCOMES = ("accept", "tag", "quarantine", "refused")
QUIET = ("pass", "none")  # results that are not a finding


class QueryError(ValueError):
    """A query the API refuses with 400; the message names the problem."""


def parse_query(query: str) -> list[tuple[str | None, str]]:
    """``[(field or None for free text, lower-cased value)]``; QueryError on a bad query. One pass."""
    if len(query) > MAX_QUERY:
        raise QueryError(f"the query is {len(query)} characters long; at most {MAX_QUERY}")
    terms: list[tuple[str | None, str]] = []
    i, n = 0, len(query)
    while i < n:
        if query[i].isspace():
            i += 1
            continue
        start, field = i, None
        while i < n and not query[i].isspace() and query[i] not in ':"':
            i += 1
        if i < n and query[i] == ":":
            field = query[start:i].lower()
            if field not in FIELDS:
                raise QueryError(f"unknown field {query[start:i][:40]!r}; use one of: "
                                 + ", ".join(f + ":" for f in FIELDS))
            i += 1
            start = i
        else:
            i = start
        if i < n and query[i] == '"':
            end = query.find('"', i + 1)
            if end < 0:
                raise QueryError(f"unclosed quote at character {i + 1}")
            value, i = query[i + 1:end], end + 1
        else:
            while i < n and not query[i].isspace():
                i += 1
            value = query[start:i]
        value = value.strip().lower()
        if not value:
            raise QueryError(f"{field + ':' if field else 'a term'} needs a value (character {start + 1})")
        if field == "outcome" and value not in OUTCOMES:
            raise QueryError(f"outcome is one of {', '.join(OUTCOMES)}, not {value[:40]!r}")
        terms.append((field, value))
        if len(terms) > MAX_TERMS:
            raise QueryError(f"at most {MAX_TERMS} terms")
    return terms


class Searcher:
    """Filters index rows (``EventIndex.searchable``) by a parsed query; reads bodies through ``store``."""

    def __init__(self, store, max_cached: int = MAX_CACHED):
        self.store, self.max_cached = store, max_cached
        self._starts: OrderedDict[tuple, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def search(self, rows: list[dict], terms: list[tuple[str | None, str]], limit: int) -> list[dict]:
        out = []
        for row in rows:
            if all(self._matches(row, field, value) for field, value in terms):
                out.append({k: v for k, v in row.items() if k not in ("locations", "policy")})
                if len(out) >= limit:
                    break
        return out

    def _matches(self, row: dict, field: str | None, value: str) -> bool:
        if field == "outcome":
            if value == "refused":
                return row["status"] == "rejected"
            return row["status"] == "delivered" and row["action"] == value
        if field == "check":
            return any((c.get("check") or "").lower() == value and c.get("result") not in QUIET
                       for c in row["checks"])
        if field == "policy":
            return (row.get("policy") or "").lower() == value
        if field == "subject":
            return value in (row["subject"] or "").lower()
        if field == "from":
            return value in (row["from"] or "").lower() or value in (row["mail_from"] or "").lower()
        if field == "to":
            return value in " ".join(row["rcpt_tos"] or ()).lower() or value in self._start(row)[0]
        return any(value in (text or "").lower() for text in (
            row["from"], row["mail_from"], row["subject"], " ".join(row["rcpt_tos"] or ()))) \
            or any(value in part for part in self._start(row))

    def _start(self, row: dict) -> tuple[str, str]:
        """(To headers, body start), lower-cased, of the first stored copy; empty when none is left."""
        key = (row["id"], tuple(map(tuple, row["locations"])))
        with self._lock:
            if key in self._starts:
                self._starts.move_to_end(key)
                return self._starts[key]
        raw = b""
        for location in row["locations"]:
            try:
                raw = self.store.read_start_at(location, BODY_PREFIX)
                break
            except (LookupError, OSError, ValueError):
                continue
        head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
        to = BytesHeaderParser(policy=compat32).parsebytes(head + b"\n\n").get_all("to") or []
        start = (" ".join(map(str, to)).lower(), body.decode("utf-8", "replace").lower())
        with self._lock:
            self._starts[key] = start
            while len(self._starts) > self.max_cached:
                self._starts.popitem(last=False)
        return start
