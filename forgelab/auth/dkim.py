"""DKIM verification (RFC 6376, RFC 8463 ed25519-sha256) with dkimpy, through forgelab's resolver.

Every signature is verified and reported on its own (d=, s=, algorithm, result),
plus "risks" that teach even when the signature passes: an ``l=`` with content past
it, a From that is not oversigned (replayable), a header signed fewer times than it
appears, a key under 1024 bits.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import dkim
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError
from dkim.util import InvalidTagValueList, parse_tag_value

from ..lab.dns import DNSTempError, Lookups
from .context import lookups, once

CACHE_KEY = "dkim.signatures"
PARSED_KEY = "dkim.parsed"
MIN_KEY_BITS = 1024  # RFC 8301


@dataclass(frozen=True)
class Risk:
    check: str   # the verdict's check name: dkim-length, dkim-replay, dkim-duplicate, dkim-weakkey
    reason: str


@dataclass(frozen=True)
class Signature:
    """One DKIM-Signature and what became of it.

    :param index: 0 for the topmost signature.
    :param result: pass, fail, neutral, temperror or permerror.
    """

    index: int
    domain: str
    selector: str
    algorithm: str
    identity: str
    signed_headers: tuple
    result: str
    reason: str
    keysize: int | None = None
    b: str = ""
    risks: tuple = field(default=())

    def details(self) -> dict:
        props = [("header", "d", self.domain or "unknown"), ("header", "s", self.selector or "unknown")]
        if self.identity:
            props.append(("header", "i", self.identity))
        if self.algorithm:
            props.append(("header", "a", self.algorithm))
        if self.b:
            props.append(("header", "b", self.b[:8]))  # RFC 6008: enough of b= to tell signatures apart
        return {"index": self.index, "header.d": self.domain, "header.s": self.selector,
                "header.i": self.identity, "header.a": self.algorithm, "header.b": self.b[:8],
                "keysize": self.keysize, "signed_headers": list(self.signed_headers),
                "risks": [r.check for r in self.risks],
                "authres": {"method": "dkim", "comment": self._comment(), "properties": props}}

    def _comment(self) -> str:
        bits = f"{self.keysize}-bit key" if self.keysize else ""
        return "; ".join(x for x in (bits, "" if self.result == "pass" else self.reason[:120]) if x)


class _Collector:
    """A logger for dkimpy that keeps its error messages (the reason a signature failed)."""

    def __init__(self):
        self.errors: list[str] = []

    def error(self, msg, *args):
        self.errors.append(msg % args if args else str(msg))

    warning = error

    def debug(self, *a, **k):
        pass

    info = debug


def _dnsfunc(view: Lookups, temp_errors: list):
    def txt(name, timeout=5):
        name = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            texts = view.txt(name)
        except DNSTempError as e:
            temp_errors.append(str(e))
            raise dkim.DnsTimeoutError(str(e)) from e
        keys = [t for t in texts if t.replace(" ", "").startswith("v=DKIM1")] or texts
        return keys[0].encode() if keys else None
    return txt


def _headers_and_body(raw: bytes):
    """``dkim.rfc822_parse(raw)``: the header fields and the CRLF body, or ([], b"") where it raises."""
    try:
        return dkim.rfc822_parse(raw)
    except (dkim.MessageFormatError, IndexError):  # IndexError: a continuation line before any field
        return [], b""


def parsed(envelope, raw: bytes):
    """(header fields, body) as dkimpy splits the message, once per message (DKIM and DMARC share it)."""
    return once(envelope.cache, PARSED_KEY, lambda: _headers_and_body(raw))


def _risks(fields: dict, headers, body: bytes, keysize: int | None) -> list[Risk]:
    out = []
    present = Counter(n.lower() for n, _ in headers)
    h = [x.strip().lower() for x in re.split(rb"\s*:\s*", fields.get(b"h", b"")) if x.strip()]
    if b"l" in fields:
        try:
            policy = CanonicalizationPolicy.from_c_value(fields.get(b"c", b"simple/simple"))
            length, total = int(fields[b"l"]), len(policy.canonicalize_body(body))
        except (ValueError, InvalidCanonicalizationPolicyError):
            length, total = None, 0
        if length is not None and total > length:
            out.append(Risk("dkim-length", f"l={length}: only the first {length} bytes of the body are signed; "
                                           f"{total - length} more bytes follow that nobody signed (appended body)"))
    froms = present[b"from"]
    if h and h.count(b"from") <= froms:
        out.append(Risk("dkim-replay", "h= does not oversign From (it lists from only as many times as the "
                                       "message has From headers): another From could be added above it and "
                                       "the signed message replayed"))
    for name in sorted(set(h)):
        signed = h.count(name)
        if present[name] > signed:
            n = name.decode("ascii", "replace")
            out.append(Risk("dkim-duplicate", f"{n} appears {present[name]} times but is signed {signed} time(s): "
                                              f"one {n} header is not covered by the signature"))
    if keysize and fields.get(b"a", b"").startswith(b"rsa") and keysize < MIN_KEY_BITS:
        out.append(Risk("dkim-weakkey", f"the key is only {keysize} bits; RFC 8301 says keys under "
                                        f"{MIN_KEY_BITS} bits must not be trusted (they can be factored)"))
    return out


def _text(v: bytes | None) -> str:
    return (v or b"").decode("utf-8", "replace")


def verify_one(raw: bytes, index: int, header_value: bytes, view: Lookups, headers, body) -> Signature:
    log, temp = _Collector(), []
    verifier = dkim.DKIM(None, logger=log, minkey=MIN_KEY_BITS)
    verifier.headers, verifier.body = headers, body  # what DKIM(raw) would parse again: parsed once
    error = None
    try:
        ok = verifier.verify(idx=index, dnsfunc=_dnsfunc(view, temp))
    except dkim.DKIMException as e:
        ok, error = False, str(e)
    # dkimpy parsed this same header value first thing (before any lookup); an unparsable one leaves {}.
    fields = verifier.signature_fields
    if not fields:
        try:
            fields = parse_tag_value(header_value)
        except InvalidTagValueList as e:
            return Signature(index, "", "", "", "", (), "permerror", f"the signature cannot be parsed: {e}")
    d, s, a = _text(fields.get(b"d")), _text(fields.get(b"s")), _text(fields.get(b"a"))
    b = re.sub(r"\s+", "", _text(fields.get(b"b")))
    h = tuple(x.strip().lower() for x in _text(fields.get(b"h")).split(":") if x.strip())
    keysize = getattr(verifier, "keysize", None) or None
    detail = error or (log.errors[-1] if log.errors else "")
    name = f"{s}._domainkey.{d}"
    if ok:
        result, reason = "pass", f"the signature by {d} (selector {s}, {a}) verifies"
    elif temp:
        result, reason = "temperror", f"the key at {name} could not be fetched now: {temp[-1]}"
    elif "missing public key" in detail:
        result, reason = "permerror", f"no key is published at {name}, so the signature cannot be checked"
    elif "too small" in detail:
        weak = dkim.DKIM(raw, logger=_Collector(), minkey=0)
        try:
            maths = weak.verify(idx=index, dnsfunc=_dnsfunc(view, []))
        except dkim.DKIMException:
            maths = False
        result = "fail"
        reason = (f"the key at {name} is only {keysize} bits (RFC 8301: at least {MIN_KEY_BITS}); "
                  + ("the signature itself is mathematically valid, but a key that small proves nothing"
                     if maths else "and the signature does not verify either"))
    elif "body hash mismatch" in detail:
        result, reason = "fail", f"the body was changed after {d} signed it (body hash mismatch)"
    elif error or any(k in detail.lower() for k in ("key", "version", "unknown", "invalid", "missing")):
        result, reason = "permerror", f"the signature by {d or '?'} cannot be checked: {detail}"
    else:
        result, reason = "fail", (f"the signature by {d} (selector {s}) does not verify: a signed header "
                                  f"was changed after signing, or the key does not match")
    risks = tuple(_risks(fields, headers, body, keysize)) if result == "pass" or "too small" in detail else ()
    return Signature(index, d, s, a, _text(fields.get(b"i")), h, result, reason, keysize, b, risks)


def verify_all(raw: bytes, view: Lookups, split=None) -> list[Signature]:
    """Verify every DKIM-Signature of a message, topmost first; [] when it has none.

    :param split: the message's ``(headers, body)`` if already parsed (see :func:`parsed`).
    """
    headers, body = split if split is not None else _headers_and_body(raw)
    sigs = [v for n, v in headers if n.lower() == b"dkim-signature"]
    return [verify_one(raw, i, v, view, headers, body) for i, v in enumerate(sigs)]


def signatures(envelope, raw: bytes, lab) -> list[Signature]:
    """This message's DKIM results, computed once."""
    return once(envelope.cache, CACHE_KEY, lambda: verify_all(raw, lookups(envelope.cache, lab), parsed(envelope, raw)))
