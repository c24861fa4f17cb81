"""DMARC (RFC 7489, with RFC 9091 np=) using the ``dmarc`` package and the bundled Public Suffix List.

Discovery is forgelab's (the ``dmarc`` package only parses and evaluates): RFC 7489's
From domain then organisational domain (``psl``, the default), or DMARCbis' tree
walk (``treewalk``, honouring ``psd=``), both through forgelab's resolver. The
package's relaxed alignment treats any parent/child pair as aligned (even across a
public suffix), so alignment is overridden here to compare organisational domains.
"""
from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import re
import threading
from dataclasses import dataclass, field

import dmarc as dmarclib
from publicsuffixlist import PublicSuffixList

from ..lab.dns import DNSTempError, Lookups
from . import arc as arc_auth
from . import dkim as dkim_auth
from . import spf as spf_auth
from .context import lookups, once

CACHE_KEY = "dmarc"
MAX_WALK = 8  # DMARCbis: at most 8 labels are examined
_DOWNGRADE = {"reject": "quarantine", "quarantine": "none", "none": "none"}  # RFC 7489 6.6.4, pct sampling
_SPF_RESULTS = frozenset(r.value for r in dmarclib.SPFResult)
_DKIM_RESULTS = frozenset(r.value for r in dmarclib.DKIMResult)


_psl: PublicSuffixList | None = None
_psl_lock = threading.Lock()


def psl() -> PublicSuffixList:
    """The Public Suffix List bundled with publicsuffixlist (offline), built once per process.

    Building it takes about 0.5 s of CPU; the lock makes the sessions that need it first wait
    for one build instead of each building its own (lru_cache does not lock).
    """
    global _psl
    if _psl is None:
        with _psl_lock:
            if _psl is None:
                _psl = PublicSuffixList()
    return _psl


def org_domain(domain: str) -> str | None:
    """The organisational domain (RFC 7489 3.2): the registrable domain per the PSL."""
    domain = domain.rstrip(".").lower()
    return None if not domain or domain.startswith(".") else psl().privatesuffix(domain)


class _DMARC(dmarclib.DMARC):
    def check_alignment(self, fd, ad, mode, psl_=None):
        fd, ad = fd.strip(".").lower(), ad.strip(".").lower()
        if fd == ad:
            return True
        if mode is dmarclib.DMARCAlignment.STRICT:
            return False
        org = org_domain(fd)
        return org is not None and org == org_domain(ad)


@dataclass(frozen=True)
class Policy:
    domain: str             # where the record was found
    record: str
    p: str
    sp: str | None
    np: str | None
    pct: int
    adkim: str
    aspf: str
    psd: str | None = None


@dataclass(frozen=True)
class DMARCResult:
    result: str                     # pass, fail, none, permerror, temperror
    from_domain: str | None
    reason: str
    policy: Policy | None = None
    applied: str | None = None      # which tag decided: p, sp or np
    disposition: str | None = None  # published disposition that applies: none, quarantine, reject
    sampled_out: bool = False
    spf_aligned: bool = False
    dkim_aligned: tuple = ()
    from_domains: tuple = ()
    discovery: str = "psl"
    extra: dict = field(default_factory=dict)
    override: str | None = None     # RFC 8617 7.2 local policy: "arc" when a trusted sealer vouches

    @property
    def action(self) -> str | None:
        """The disposition as a verdict action (None for p=none, a pass or an override)."""
        if self.override:
            return None
        if self.result in ("fail", "permerror") and self.disposition in ("reject", "quarantine"):
            return self.disposition
        return None

    @property
    def authenticated(self) -> bool:
        """Whether the From domain is vouched for: DMARC passes, or a trusted ARC sealer saw it pass."""
        return self.result == "pass" or self.override is not None

    def details(self) -> dict:
        """policy.dmarc is the published policy that applies to the From domain (p=, or sp=/np=
        below the organisational domain), as authheaders reports it; ``dis=`` in the comment is
        what it asks for this message (NONE on a pass)."""
        published = self.extra.get("published") or self.disposition or "none"
        props = [("header", "from", self.from_domain or "none"), ("policy", "dmarc", published)]
        comment = ""
        if self.policy:
            dis = (self.disposition or "none").upper() if self.result != "pass" and not self.override else "NONE"
            comment = f"p={self.policy.p} sp={self.policy.sp or self.policy.p} dis={dis}"
            if self.sampled_out:
                comment += f" pct={self.policy.pct} sampled-out"
        if self.override:
            # RFC 7489 7.2 reports this as PolicyOverrideType local_policy; A-R says it with a policy property.
            comment += f" local_policy {self.extra.get('override_comment', '')}".rstrip()
            props.append(("policy", "override", self.override))
        return {"header.from": self.from_domain, "policy.dmarc": published, "disposition": self.disposition,
                "applied": self.applied, "policy_domain": self.policy.domain if self.policy else None,
                "record": self.policy.record if self.policy else None,
                "spf_aligned": self.spf_aligned, "dkim_aligned": list(self.dkim_aligned),
                "from_domains": list(self.from_domains), "discovery": self.discovery,
                "sampled_out": self.sampled_out, "override": self.override,
                "authres": {"method": "dmarc", "comment": comment, "properties": props}}


def from_domains(raw: bytes, headers=None) -> tuple[list[str], str | None]:
    """The RFC 5322.From domains, and an error text when there is no usable one.

    :param headers: the message's header fields as dkimpy parses them, if already parsed.
    """
    if headers is None:
        headers, _ = dkim_auth._headers_and_body(raw)
    values = [v.decode("utf-8", "replace") for n, v in headers if n.lower() == b"from"]
    if not values:
        return [], "the message has no From header"
    try:
        addresses = email.utils.getaddresses([" ".join(v.split()) for v in values])
    except (RecursionError, ValueError, IndexError):  # thousands of nested "(": the stdlib recurses per level
        addresses = []
    domains = []
    for _, addr in addresses:
        if "@" in addr and addr.rsplit("@", 1)[1].strip("."):
            domains.append(addr.rsplit("@", 1)[1].strip(".").lower())
    if not domains:
        shown = " ".join(values[0].split())[:80]
        return [], f"unable to extract a From domain from {shown!r}"
    if len(values) > 1:
        return domains, f"the message has {len(values)} From headers (RFC 5322 allows one)"
    if len(domains) > 1:
        more = f", ... and {len(domains) - 5} more" if len(domains) > 5 else ""
        return domains, f"From holds {len(domains)} addresses ({', '.join(domains[:5])}{more})"
    return domains, None


def _records(view: Lookups, domain: str) -> list[str]:
    return [t for t in view.txt(f"_dmarc.{domain}") if re.match(r"^v\s*=\s*DMARC1\s*(;|$)", t)]


def _tag(record: str, name: str) -> str | None:
    for part in record.split(";"):
        k, _, v = part.partition("=")
        if k.strip().lower() == name:
            return v.strip().lower()
    return None


def discover(domain: str, view: Lookups, discovery: str = "psl") -> tuple[str, str, str | None] | None:
    """(record, where found, organisational domain) or None. Raises DNSTempError."""
    found = _records(view, domain)
    if len(found) == 1:
        return found[0], domain, org_domain(domain)
    if len(found) > 1:
        return None  # several records: as if none (RFC 7489 6.6.3)
    if discovery == "treewalk":
        labels = domain.split(".")
        if len(labels) > MAX_WALK:
            labels = labels[-(MAX_WALK - 1):]
        for i in range(1, len(labels)):
            name = ".".join(labels[i:])
            found = _records(view, name)
            if len(found) == 1:
                if _tag(found[0], "psd") == "y":
                    return found[0], name, ".".join(domain.split(".")[-(len(name.split(".")) + 1):])
                return found[0], name, name
        return None
    org = org_domain(domain)
    if org and org != domain:
        found = _records(view, org)
        if len(found) == 1:
            return found[0], org, org
    return None


def _parse(record: str, from_domain: str, found_at: str, org: str | None) -> tuple[Policy, dmarclib.Policy]:
    parsed = _DMARC().parse_record(record, domain=from_domain, org_domain=org if found_at != from_domain else None)
    np_ = _tag(record, "np")
    return Policy(found_at, record, parsed.p.value, parsed.sp.value if parsed.sp.value else None,
                  np_ if np_ in ("none", "quarantine", "reject") else None, parsed.pct,
                  parsed.adkim.value, parsed.aspf.value, _tag(record, "psd")), parsed


def _sampled(pct: int, key: str) -> bool:
    """Whether this message is in the pct% the policy applies to (deterministic per message)."""
    if pct >= 100:
        return True
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100 < pct


def evaluate_domain(domain: str, spf_result, signatures, view: Lookups, discovery: str = "psl",
                    sample_key: str = "") -> DMARCResult:
    """DMARC for one From domain, given SPF (an SPFResult or None) and DKIM signatures."""
    try:
        found = discover(domain, view, discovery)
    except DNSTempError as e:
        return DMARCResult("temperror", domain, f"the DMARC record of {domain} could not be fetched now: {e}",
                           discovery=discovery)
    if found is None:
        return DMARCResult("none", domain, f"{domain} publishes no DMARC record (nor does its organisational "
                                           f"domain), so DMARC does not apply", discovery=discovery)
    record, found_at, org = found
    try:
        policy, parsed = _parse(record, domain, found_at, org)
    except dmarclib.RecordSyntaxError as e:
        if "tag p unspecified" in str(e):
            return DMARCResult("none", domain, f"the DMARC record at _dmarc.{found_at} has no p= tag, "
                                               f"so no policy applies", discovery=discovery)
        return DMARCResult("permerror", domain, f"the DMARC record at _dmarc.{found_at} is broken: {e} "
                                                f"(record: {record!r})", discovery=discovery)
    auth = dmarclib.AuthResults(dkim=[], spf=None)
    if spf_result is not None and spf_result.result in _SPF_RESULTS:
        auth.spf = dmarclib.SPFAuthResult(spf_result.domain, dmarclib.SPFResult(spf_result.result))
    for sig in signatures:
        if sig.domain and sig.result in _DKIM_RESULTS:
            auth.dkim.append(dmarclib.DKIMAuthResult(sig.domain, dmarclib.DKIMResult(sig.result), sig.selector))
    lib = _DMARC()
    res = lib.get_result(parsed, auth_results=auth)
    dkim_aligned = tuple(s.domain for s in signatures if s.result == "pass"
                         and lib.check_alignment(domain, s.domain, parsed.adkim))
    spf_ok = res.spf is dmarclib.DMARCResult.PASS
    mode = {"r": "relaxed", "s": "strict"}
    # Which tag applies: p for the domain that published it; sp/np below it (RFC 9091 np for names that do not exist).
    applied = "p"
    if found_at != domain and not (org == domain and discovery == "treewalk"):
        applied = "sp" if policy.sp else "p"
        if policy.np:
            try:
                if not view.exists(domain):
                    applied = "np"
            except DNSTempError:
                pass
    published = {"p": policy.p, "sp": policy.sp, "np": policy.np}[applied] or policy.p
    if res.result is dmarclib.DMARCResult.PASS:
        why = []
        if spf_ok:
            why.append(f"SPF passed for {spf_result.domain} ({mode[policy.aspf]} alignment)")
        if dkim_aligned:
            why.append(f"a DKIM signature by {dkim_aligned[0]} passed ({mode[policy.adkim]} alignment)")
        return DMARCResult("pass", domain, f"{domain} is authenticated: " + " and ".join(why), policy, applied,
                           None, False, spf_ok, dkim_aligned, (domain,), discovery, {"published": published})
    disposition = published
    sampled = _sampled(policy.pct, sample_key or domain)
    if not sampled:
        disposition = _DOWNGRADE[disposition]
    spf_text = ("SPF did not pass" if spf_result is None or spf_result.result != "pass" else
                f"SPF passed for {spf_result.domain}, which is not aligned with {domain}")
    passing = [s.domain for s in signatures if s.result == "pass"]
    dkim_text = (f"DKIM passed only for {', '.join(passing)}, not aligned with {domain}" if passing
                 else "no DKIM signature passed")
    where = f"_dmarc.{found_at}" + (f" ({applied}=)" if applied != "p" else "")
    reason = (f"{domain} is not authenticated: {spf_text}, and {dkim_text}; {where} asks receivers to "
              f"{ {'reject': 'reject it', 'quarantine': 'quarantine it', 'none': 'only report it'}[disposition]}")
    if not sampled:
        reason += f" (pct={policy.pct}: this message is outside the sample, so the policy is softened)"
    return DMARCResult("fail", domain, reason, policy, applied, disposition, not sampled, False, (), (domain,),
                       discovery, {"published": published})


def evaluate(raw: bytes, spf_result, signatures, view: Lookups, discovery: str = "psl",
             sample_key: str = "", headers=None) -> DMARCResult:
    """DMARC for a message. Several From addresses (or headers) are a permerror that still
    carries the harshest published disposition among their domains, so a policy can act.

    :param headers: the message's header fields as dkimpy parses them, if already parsed.
    """
    if headers is None:
        headers, _ = dkim_auth._headers_and_body(raw)
    domains, problem = from_domains(raw, headers)
    if not domains:
        return DMARCResult("permerror", None, f"DMARC needs exactly one From address: {problem}",
                           discovery=discovery)
    if problem is None:
        return evaluate_domain(domains[0], spf_result, signatures, view, discovery, sample_key)
    authors = _one_domain_authors(domains, headers)
    if authors:
        one = evaluate_domain(domains[0], spf_result, signatures, view, discovery, sample_key)
        return dataclasses.replace(one, reason=f"{authors}; {one.reason}", from_domains=(domains[0],))
    each = [evaluate_domain(d, spf_result, signatures, view, discovery, sample_key) for d in dict.fromkeys(domains)]
    order = (None, "none", "quarantine", "reject")
    worst = max(each, key=lambda r: order.index(r.disposition) if r.result == "fail" else 0)
    failing = [r for r in each if r.result == "fail"]
    reason = f"DMARC needs exactly one From address: {problem}"
    if len(set(domains)) > 1:
        reason += " of different domains, so no one domain's policy can speak for the message"
    if failing:
        reason += f"; {worst.reason}"
    return DMARCResult("permerror", worst.from_domain, reason, worst.policy, worst.applied,
                       worst.disposition if failing else None, worst.sampled_out, False, (),
                       tuple(dict.fromkeys(domains)), discovery, dict(worst.extra))


def _one_domain_authors(domains: list[str], headers) -> str | None:
    """DMARCbis: several authors in one From header, all of one domain, with the Sender RFC 5322
    3.6.2 asks for, are judged as that domain. A sentence saying so, or None when they are not."""
    if len(set(domains)) != 1 or sum(1 for n, _ in headers if n.lower() == b"from") != 1:
        return None
    if not any(n.lower() == b"sender" for n, _ in headers):
        return None
    return f"From holds {len(domains)} authors, all of {domains[0]}, with a Sender: judged as {domains[0]} (DMARCbis)"


def result(session, envelope, raw: bytes, lab, discovery: str | None = None) -> DMARCResult:
    """This message's DMARC result, computed once, reusing the SPF and DKIM results, with a
    trusted ARC sealer's override applied (see :func:`forgelab.auth.arc.trusted_pass`).

    :param discovery: ``psl`` or ``treewalk``; None (the other checks that consult DMARC): the
        result already computed for this message, whichever discovery made it, else ``psl``.
    """
    cached = envelope.cache.get(CACHE_KEY)
    if cached is not None and discovery in (None, cached.discovery):
        return cached

    def make():
        headers, _ = dkim_auth.parsed(envelope, raw)
        r = evaluate(raw, spf_auth.mailfrom_result(session, envelope, lab), dkim_auth.signatures(envelope, raw, lab),
                     lookups(envelope.cache, lab), discovery or "psl", envelope.id, headers)
        return _with_arc(r, envelope, raw, lab)
    if cached is not None:  # asked again with another discovery: that one counts from now on
        envelope.cache[CACHE_KEY] = made = make()
        return made
    return once(envelope.cache, CACHE_KEY, make)


def _with_arc(r: DMARCResult, envelope, raw: bytes, lab) -> DMARCResult:
    """RFC 8617 7.2: a DMARC fail is overridden when a sealer this receiver trusts saw DMARC pass."""
    if r.result != "fail" or not r.from_domain:
        return r
    vouch = arc_auth.trusted_pass(envelope, raw, lab, r.from_domain)
    if vouch is None:
        return r
    return dataclasses.replace(
        r, override="arc", reason=f"{r.reason}; but overridden by local policy (RFC 8617 7.2): {vouch.reason}",
        extra={**r.extra, "override_comment": vouch.comment})
