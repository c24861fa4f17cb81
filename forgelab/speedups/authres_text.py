"""Authentication-Results clauses written as text, not through authres' objects.

Replaces, when ``forgelab.speedups.install()`` runs, ``forgelab.auth.results.resinfo`` (one
``method=result (comment) ptype.property=value`` clause, built as an authres
``AuthenticationResult`` and turned into text) with the same text written directly: authres
builds several objects per clause, five clauses a message. Why: with this, writing the header
went from 64 to 33 µs of CPU per message (docs/performance.md, "Third round"). Unnecessary if
authres wrote its text more cheaply.
"""
from __future__ import annotations

import re
from typing import Iterable

from authres.core import RFC2045_TOKEN_PATTERN

from ..auth import results

_TOKEN = re.compile(r"^%s$" % RFC2045_TOKEN_PATTERN)
_QUOTED_PAIR = re.compile(r'(["\\])')


def _quoted(value: str) -> str:
    """authres' ``QuotableValue.quote_if_needed``: as is when it holds @ or is a token, else quoted."""
    if "@" in value or _TOKEN.match(value):
        return value
    return '"%s"' % _QUOTED_PAIR.sub(r"\\\1", value)


def resinfo(method: str, result: str, properties: Iterable[tuple[str, str, str]] = (), comment: str = "") -> str:
    """``forgelab.auth.results.resinfo``: the same text, written without authres' objects."""
    if not result:
        raise ValueError("Required result argument missing or None or empty")
    parts = [f"{method.lower()}={result.lower()}"]
    text = results._comment(comment)
    if text:
        parts.append(f"({text})")
    parts.extend(f"{t.lower()}.{n.lower()}={_quoted(results._value(v))}" for t, n, v in properties if v)
    return " ".join(parts)


# (module, name, replacement): what forgelab.speedups.install() puts in place
REPLACEMENTS = [
    (results, "resinfo", resinfo),
]
