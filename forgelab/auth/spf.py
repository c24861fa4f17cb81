"""SPF (RFC 7208) with pyspf, every lookup through forgelab's resolver.

pyspf resolves through its module-level ``spf.DNSLookup``. One dispatcher is
installed on import; it asks a ``ContextVar`` for the per-message DNS view of the
check that is running, so several servers in one process each use their own resolver.
"""
from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass, fields

import spf as pyspf

from ..lab.dns import DNSTempError, Lookups
from .context import lookups, once

_active: contextvars.ContextVar[Lookups | None] = contextvars.ContextVar("forgelab_spf_lookups", default=None)
_original_lookup = pyspf.DNSLookup

MAILFROM_KEY = "spf.mailfrom"
HELO_KEY = "spf.helo"
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z0-9-]{2,63}\.?$", re.I)


def _dispatch(name, qtype, strict=True, timeout=30):
    view = _active.get()
    if view is None:  # someone else's pyspf call, outside a forgelab check
        return _original_lookup(name, qtype, strict, timeout)
    try:
        answer = view.query(name, qtype)
    except DNSTempError as e:
        raise pyspf.TempError(f"DNS {e}") from e
    return list(_pyspf_records(answer, qtype))


def _pyspf_records(answer, qtype: str) -> tuple:
    """An answer in pyspf's ``DNSLookup`` form: ``((name, type), value)`` pairs, CNAMEs first."""
    out = [((alias, "CNAME"), target) for alias, target in answer.cnames]
    owner = answer.owner
    for r in answer.records:
        if qtype in ("A", "AAAA"):
            out.append(((owner, qtype), r.address))
        elif qtype == "MX":
            out.append(((owner, qtype), (r.preference, r.exchange.to_text(omit_final_dot=True))))
        elif qtype == "PTR":
            out.append(((owner, qtype), r.target.to_text(omit_final_dot=True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((owner, qtype), tuple(r.strings)))
    return tuple(out)


pyspf.DNSLookup = _dispatch


@dataclass(frozen=True)
class SPFResult:
    """One SPF evaluation.

    :param identity: ``mailfrom`` or ``helo`` (RFC 7208 2.3/2.4).
    :param sender: the address checked (``postmaster@<helo>`` for the HELO identity).
    :param domain: the domain whose record was evaluated.
    :param result: none, neutral, pass, fail, softfail, temperror or permerror.
    :param explanation: pyspf's text (the domain's own ``exp=`` text on a fail).
    :param reason: a sentence a student can read.
    """

    identity: str
    ip: str
    sender: str
    domain: str
    helo: str
    result: str
    explanation: str
    mechanism: str | None
    record: str | None
    reason: str

    def details(self) -> dict:
        d = {name: getattr(self, name) for name in _FIELDS}  # asdict's deep copy is not needed: every field is a str or None
        props = [("smtp", "mailfrom", self.sender)] if self.identity == "mailfrom" else [("smtp", "helo", self.domain)]
        d["authres"] = {"method": "spf", "comment": f"{self.ip} {self.result} for {self.domain}",
                        "properties": props}
        d["smtp.mailfrom" if self.identity == "mailfrom" else "smtp.helo"] = props[0][2]
        return d


_FIELDS = tuple(f.name for f in fields(SPFResult))


def _record_of(view: Lookups, domain: str) -> str | None:
    try:
        records = [t for t in view.txt(domain) if t.lower().startswith("v=spf1") and t[6:7] in ("", " ")]
    except DNSTempError:
        return None
    return records[0] if len(records) == 1 else None


def _reason(r: str, ip: str, domain: str, identity: str, record: str | None, mech: str | None, exp: str) -> str:
    who = f"the HELO name {domain}" if identity == "helo" else domain
    rec = f" (its SPF: {record!r})" if record else ""
    if r == "pass":
        return f"{ip} is allowed to send for {who}: it matches {mech or 'its SPF record'}{rec}"
    if r == "fail":
        how = f"its SPF ends in {mech or '-all'}" if not mech or mech.endswith("all") else f"it matches {mech}"
        text = f"{ip} is not allowed to send for {who}: {how}, a hard fail{rec}"
        default = pyspf.EXPLANATIONS.get("fail")
        return text + (f"; the domain explains: {exp!r}" if exp and exp != default else "")
    if r == "softfail":
        return (f"{ip} is not listed for {who}, whose SPF ends in {mech or '~all'}: "
                f"'probably not us, but do not reject'{rec}")
    if r == "neutral":
        return f"{who} says nothing about {ip} ({mech or '?all'}: neither allowed nor denied){rec}"
    if r == "none":
        return f"{who} publishes no SPF record, so SPF cannot tell whether {ip} may send for it"
    if r == "temperror":
        return f"a DNS lookup for {who}'s SPF failed for now; try again later ({exp})"
    return f"{who}'s SPF record is broken, so it proves nothing: {exp}"


def check(ip: str, sender: str, helo: str, view: Lookups, strict: bool | int = True) -> SPFResult:
    """Evaluate SPF for ``sender`` (``""`` = null sender: the HELO identity) from ``ip``.

    :param strict: pyspf's strictness (True; 2 = "harsh", only for its own tests).
    """
    helo = (helo or "").strip()
    identity = "mailfrom" if sender else "helo"
    if identity == "helo" and not _HOSTNAME.match(helo):
        return SPFResult("helo", ip, f"postmaster@{helo}", helo, helo, "none", "", None, None,
                         f"the HELO name {helo!r} is not a domain name, so it has no SPF record to check")
    token = _active.set(view)
    try:
        q = pyspf.query(i=ip, s=sender, h=helo, strict=strict, querytime=0, timeout=pyspf.MAX_PER_LOOKUP_TIME)
        result, _code, explanation = q.check()
        domain = q.o if identity == "mailfrom" else helo
        mech = getattr(q, "mechanism", None)
        record = _record_of(view, domain) if result not in ("temperror",) else None
    finally:
        _active.reset(token)
    domain = (domain or "").lower()
    return SPFResult(identity, ip, q.s, domain, helo, result, explanation, mech, record,
                     _reason(result, ip, domain, identity, record, mech, explanation))


def mailfrom_result(session, envelope, lab, address: str | None = None) -> SPFResult:
    """SPF for this message's MAIL FROM (or the HELO identity for a null sender), computed once.

    :param address: the reverse-path, when the hook has it before ``envelope.mail_from`` is set.
    """
    sender = envelope.mail_from if address is None else address
    cached = envelope.cache.get(MAILFROM_KEY)
    if cached is not None and (cached.identity == "helo") == (not sender):
        return cached
    if not sender:
        result = helo_result(session, lab)
    else:
        result = check(session.peer_ip, sender, session.helo or "", lookups(envelope.cache, lab))
    envelope.cache[MAILFROM_KEY] = result
    return result


def helo_result(session, lab, helo: str | None = None) -> SPFResult:
    """SPF for the HELO identity, computed once per (HELO name, client address).

    :param helo: the name, when the hook has it before ``session.helo`` is set.
    """
    helo = (session.helo if helo is None else helo) or ""
    return once(session.cache, (HELO_KEY, helo.lower(), session.peer_ip),
                lambda: check(session.peer_ip, "", helo, lookups(session.cache, lab)))
