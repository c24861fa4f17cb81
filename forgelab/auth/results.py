"""Authentication-Results (RFC 8601): build ours from verdicts, strip forged ones claiming our name."""
from __future__ import annotations

import re
from typing import Iterable

import authres
from authres.core import AuthenticationResult, AuthenticationResultProperty

HEADER = "Authentication-Results"
# Order in the header: the connection, then envelope, then content, then the verdicts built on them.
METHOD_ORDER = ("iprev", "spf", "dkim", "arc", "dmarc")
_RANK = {m: i for i, m in enumerate(METHOD_ORDER)}
MAX_VALUE = 880  # the delivered header line is cut at 900 characters (core/delivery.py)
_UNSAFE_VALUE = re.compile(r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.@:\[\]]")
_UNSAFE_COMMENT = re.compile(r"[^\x20-\x7e]|[()\\]")


def _value(text) -> str:
    # Attacker-chosen values (MAIL FROM, HELO) must not break out of the property.
    return _UNSAFE_VALUE.sub("?", str(text))[:200] or "unknown"


def _comment(text: str) -> str | None:
    text = " ".join(_UNSAFE_COMMENT.sub(" ", text or "").split())
    return text[:160] or None


def resinfo(method: str, result: str, properties: Iterable[tuple[str, str, str]] = (), comment: str = "") -> str:
    """One ``method=result (comment) ptype.property=value ...`` clause, written by authres."""
    props = [AuthenticationResultProperty(t, n, _value(v)) for t, n, v in properties if v]
    return str(AuthenticationResult(method, result=result, result_comment=_comment(comment), properties=props))


def build_value(authserv_id: str, verdicts, fold: bool = True) -> str:
    """The header value (see :func:`_build`), kept within :data:`MAX_VALUE` characters: when the
    comments make it longer (several DKIM signatures, an ARC chain), they are left out but
    dmarc's, so no result is ever cut off the end of the line."""
    value = _build(authserv_id, verdicts, fold, comments=True)
    return value if len(value) <= MAX_VALUE else _build(authserv_id, verdicts, fold, comments=False)


def _build(authserv_id: str, verdicts, fold: bool, comments: bool) -> str:
    """The header value: our authserv-id and one resinfo per method result (``none`` when there are none).

    Verdicts contribute when their ``details["authres"]`` says how (``method``, ``properties``,
    ``comment``, and ``result`` when it is not the verdict's), or a list of such clauses. Folded with CRLF TAB between results unless ``fold`` is False.
    """
    clauses: list[tuple[int, str]] = []
    latest: dict[tuple, int] = {}
    for v, info in _clauses(verdicts):
        method = info["method"]
        comment = info.get("comment", "") if comments or method == "dmarc" else ""
        text = resinfo(method, info.get("result", v.result), info.get("properties", ()), comment)
        rank = _RANK.get(method, len(METHOD_ORDER))
        if any(text == c for _, c in clauses):
            continue
        # Session facts may be judged again (EHLO after XCLIENT): the latest judgement wins.
        kind = None
        if method == "iprev":
            kind = ("iprev",)
        elif method == "spf":
            kind = ("spf",) + tuple(p[1] for p in info.get("properties", ())[:1])
        if kind in latest:
            clauses[latest[kind]] = (rank, text)
            continue
        if kind:
            latest[kind] = len(clauses)
        clauses.append((rank, text))
    clauses.sort(key=lambda c: c[0])  # stable: keeps signature order within dkim
    if not clauses:
        return authres.AuthenticationResultsHeader(authserv_id=_value(authserv_id), results=[]).header_value()
    sep = ";\r\n\t" if fold else "; "
    return _value(authserv_id).lower() + sep + sep.join(c for _, c in clauses)


def _clauses(verdicts):
    """(verdict, clause) for each clause a verdict asks for: ``details["authres"]`` is one
    clause or a list of them (DKIM: one per signature, each with its own ``result``)."""
    for v in verdicts:
        info = (getattr(v, "details", None) or {}).get("authres")
        for clause in info if isinstance(info, (list, tuple)) else [info] if info else []:
            yield v, clause


def _authserv_id(value: str) -> str:
    """The authserv-id of an Authentication-Results value (comments and folding removed)."""
    flat = _without_comments(re.sub(r"\s+", " ", value))
    return flat.split(";", 1)[0].strip().split(" ")[0].strip().lower().strip('"')


def _without_comments(text: str) -> str:
    """``text`` with each matched pair of parentheses and what is inside it made one space; an
    unmatched one stays. One pass (removing the innermost pairs again and again was quadratic)."""
    opened: list[int] = []
    spans: list[tuple[int, int]] = []  # outermost matched pairs so far, in order
    for i, ch in enumerate(text):
        if ch == "(":
            opened.append(i)
        elif ch == ")" and opened:
            start = opened.pop()
            while spans and spans[-1][0] > start:  # pairs inside this one
                spans.pop()
            spans.append((start, i))
    out, last = [], 0
    for start, end in spans:
        out += [text[last:start], " "]
        last = end + 1
    out.append(text[last:])
    return "".join(out)


_HEADER_BYTES = HEADER.lower().encode()


def strip_forged_authres(message_bytes: bytes, authserv_id: str) -> bytes:
    """Remove incoming Authentication-Results headers that claim our authserv-id (RFC 8601 5).

    Everything else, including other servers' Authentication-Results, is kept byte for byte.
    """
    ours = authserv_id.strip().lower()
    m = re.search(rb"\r?\n\r?\n", message_bytes)
    head_end = m.end() - (2 if m.group().endswith(b"\r\n") else 1) if m else len(message_bytes)
    head, rest = message_bytes[:head_end], message_bytes[head_end:]
    if _HEADER_BYTES not in head.lower():  # the everyday case: no such header to look at
        return message_bytes
    fields: list[list[bytes]] = []  # each field's lines, joined once (+= on bytes is quadratic)
    for line in re.split(rb"(?<=\n)", head):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    kept = []
    for f in map(b"".join, fields):
        name, sep, value = f.partition(b":")
        if sep and name.strip().lower() == HEADER.lower().encode():
            if _authserv_id(value.decode("utf-8", "replace")) == ours:
                continue
        kept.append(f)
    return b"".join(kept) + rest
