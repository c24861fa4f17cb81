"""dkim-replay: a strict brand's real DKIM signature on a message it was not signed for.

A replay keeps the signature valid (DKIM and DMARC pass), so only what surrounds the
signature tells: where it comes from, what was added past the signed length or above the
signed headers, and whether the signature has expired.
"""
from __future__ import annotations

import re
import time
from collections import Counter

import dkim
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError
from dkim.util import InvalidTagValueList, parse_tag_value

import forgelab
from forgelab.auth import dkim as dkim_auth
from forgelab.auth import spf as spf_auth
from forgelab.auth.context import lookups
from forgelab.auth.dmarc import discover
from forgelab.core.networks import contains, parse_networks
from forgelab.lab.dns import DNSTempError

from ._domains import domain_of, org_domain
from ._facts import facts
from ._findings import finding, show, verdict

# Headers a reader sees: one added above the signed ones changes what the message says.
WATCHED = (b"from", b"to", b"subject", b"cc")
STRICT_DISPOSITIONS = ("reject", "quarantine")
MAX_SIGNATURES = 8  # signatures looked at per message (each may cost a DNS lookup and an RSA check)


class DKIMReplay:
    """``fail`` when a valid signature of a domain publishing DMARC ``p=reject`` or
    ``p=quarantine`` (aligned with the From) shows a sign of replay:

    - ``envelope``: the client's address is not authorised by the signing domain's SPF and
      the envelope sender is null (``MAIL FROM:<>``; with ``envelope = "unaligned"``, also one
      outside the signing domain);
    - ``length``: the signature has ``l=`` and the body goes on past the signed length;
    - ``added-headers``: From, To, Subject or Cc appears more times than ``h=`` signs it
      (a copy added above the signed one, which readers show);
    - ``expired``: ``x=`` is in the past (the signature is otherwise checked as valid).

    ``pass`` when such a signature shows none; no verdict at all when the message has no
    such signature. Its reason names each sign it saw.

    Not caught by default: a replay with nothing added, from an address the brand's SPF does
    not authorise, under the attacker's own envelope. An ESP sending for the brand under its
    bounce domain, and a forwarder (SRS) that keeps the signature intact, look exactly like it,
    and they are ordinary mail: ``envelope = "unaligned"`` counts them as replays too, for a
    trainer who lists the lab's ESPs and forwarders in ``trusted_forwarders``.

    Settings:

    - ``envelope`` (default ``"null"``): which envelope senders are a sign, ``"null"`` only or
      ``"unaligned"`` (null or outside the signing domain);
    - ``trusted_forwarders`` (default ``[]``): client addresses or networks
      (``127.0.9.0/24``) whose relayed mail is not a replay by its envelope alone
      (forwarders, ESPs the brand does not list in its SPF). A logged-in client is trusted too.
    """

    name = "dkim-replay"

    def __init__(self, settings: dict | None = None):
        settings = dict(settings or {})
        self.trusted = parse_networks(settings.get("trusted_forwarders", []),
                                      "dkim-replay: setting 'trusted_forwarders'")
        self.envelope_sign = settings.get("envelope", "null")
        if self.envelope_sign not in ("null", "unaligned"):
            raise ValueError(f"dkim-replay: setting 'envelope' must be \"null\" or \"unaligned\", "
                             f"not {self.envelope_sign!r}")

    @forgelab.hookimpl
    def forgelab_message(self, session, envelope, message, raw, lab):
        headers, body = dkim_auth.parsed(envelope, raw)
        values = [v for n, v in headers if n.lower() == b"dkim-signature"][:MAX_SIGNATURES]
        if not values:
            return None
        results = {s.index: s for s in dkim_auth.signatures(envelope, raw, lab)}
        from_orgs = {org_domain(d) for d in facts(envelope, message, raw).domains("from")}
        view = lookups(envelope.cache, lab)
        findings, brands = [], []
        for index, value in enumerate(values):
            try:
                fields = parse_tag_value(value)
            except InvalidTagValueList:
                continue
            domain = fields.get(b"d", b"").decode("ascii", "replace").strip().lower()
            if not domain or org_domain(domain) not in from_orgs:
                continue  # a signature not aligned with the From speaks for someone else
            expired = _expired(fields)
            result = results.get(index)
            valid = result is not None and result.result == "pass"
            if expired and not valid:
                valid = _valid_but_expired(headers, body, index, fields, view)
            disposition = _disposition(domain, view) if valid else None
            if disposition not in STRICT_DISPOSITIONS:
                continue
            brand = f"{show(domain)} (DMARC p={disposition})"
            brands.append(brand)
            signs = self._envelope(session, envelope, domain, view)
            signs += _length(fields, body) + _added(fields, headers)
            if expired:
                signs.append(("expired", f"its x= says it expired at {_utc(expired)}"))
            if signs:
                named = "; ".join(f"[{sign}] {text}" for sign, text in signs)
                findings.append(finding("fail", f"The valid signature of {brand} is replayed: {named}.",
                                        signs=[sign for sign, _ in signs], domain=domain, index=index))
        if not brands:
            return None  # nothing a strict brand signed: nothing to judge (and no line on every message)
        signs = list(dict.fromkeys(sign for f in findings for sign in f["signs"]))
        return verdict(self.name, findings, f"The signature of {', '.join(brands)} shows no sign of replay: sent "
                                            f"from an address its SPF authorises or by its own envelope, nothing "
                                            f"past l=, no header added above the signed ones, not expired.",
                       signs=signs, brands=brands)

    def _envelope(self, session, envelope, domain: str, view) -> list[tuple[str, str]]:
        ip = getattr(session, "peer_ip", "") or ""
        if getattr(session, "authenticated", None) or contains(self.trusted, ip):
            return []
        mail_from = getattr(envelope, "mail_from", "") or ""
        if mail_from and (self.envelope_sign == "null" or org_domain(domain_of(mail_from)) == org_domain(domain)):
            return []
        spf = _spf(ip, domain, getattr(session, "helo", "") or "", view)
        if spf in ("pass", "temperror"):
            return []
        how = "null (MAIL FROM:<>)" if not mail_from else show(mail_from)
        return [("envelope", f"it comes from {show(ip)}, which {show(domain)}'s SPF does not authorise "
                             f"(SPF {spf}), and the envelope sender is {how}, not one of {show(domain)}'s")]


def _spf(ip: str, domain: str, helo: str, view) -> str:
    """SPF of the signing domain (or, failing that, its organisational domain) for the client."""
    result = "none"
    for name in dict.fromkeys((domain, org_domain(domain))):
        result = spf_auth.check(ip, f"postmaster@{name}", helo, view).result
        if result in ("pass", "temperror"):
            return result
    return result


def _disposition(domain: str, view) -> str | None:
    """What the signing domain's DMARC record asks for its mail: p= (sp= below where it was found)."""
    try:
        found = discover(domain, view)
    except DNSTempError:
        return None
    if found is None:
        return None
    record, where, _ = found
    try:
        tags = parse_tag_value(record.encode("utf-8", "replace"))
    except InvalidTagValueList:
        return None
    policy = tags.get(b"sp") if where != domain and b"sp" in tags else tags.get(b"p")
    return (policy or b"").decode("ascii", "replace").strip().lower() or None


def _length(fields: dict, body: bytes) -> list[tuple[str, str]]:
    if b"l" not in fields:
        return []
    try:
        signed = int(fields[b"l"])
        policy = CanonicalizationPolicy.from_c_value(fields.get(b"c", b"simple/simple"))
    except (ValueError, InvalidCanonicalizationPolicyError):
        return []
    total = len(policy.canonicalize_body(body))
    if total <= signed:
        return []
    return [("length", f"l={signed} signs only the first {signed} bytes of the body and {total - signed} "
                       f"more follow that nobody signed")]


def _added(fields: dict, headers) -> list[tuple[str, str]]:
    signed = Counter(x.strip().lower() for x in re.split(rb"\s*:\s*", fields.get(b"h", b"")) if x.strip())
    present = Counter(n.strip().lower() for n, _ in headers)
    out = []
    for name in WATCHED:
        if signed[name] and present[name] > signed[name]:
            shown = name.decode().capitalize()
            out.append(("added-headers", f"{shown} appears {present[name]} times but h= signs it "
                                         f"{signed[name]} time(s): a {shown} was added above the signed one "
                                         f"(not oversigned), and readers show the added one"))
    return out


def _expired(fields: dict) -> int | None:
    """The x= time when it is in the past, else None."""
    try:
        expires = int(fields.get(b"x", b""))
    except ValueError:
        return None
    return expires if expires < time.time() else None


def _utc(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def _valid_but_expired(headers, body: bytes, index: int, fields: dict, view) -> bool:
    """Whether signature ``index`` verifies when its expiry is set aside (dkimpy refuses it as past)."""
    unexpired = {k: v for k, v in fields.items() if k != b"x"}
    verifier = dkim.DKIM(None, minkey=dkim_auth.MIN_KEY_BITS, logger=_Quiet())
    verifier.headers, verifier.body = headers, body
    sig_headers = [(n, v) for n, v in headers if n.lower() == b"dkim-signature"]
    try:
        dkim.validate_signature_fields(unexpired)
        include = [x.lower() for x in re.split(rb"\s*:\s*", fields[b"h"])]
        return bool(verifier.verify_sig(fields, include, sig_headers[index], _txt(view)))
    except (dkim.DKIMException, KeyError, IndexError, ValueError):
        return False


def _txt(view):
    """dkimpy's dnsfunc over forgelab's resolver: the DKIM1 TXT record of a name, or None."""
    def txt(name, timeout=5):
        name = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            texts = view.txt(name.rstrip("."))
        except DNSTempError as exc:
            raise dkim.DnsTimeoutError(str(exc)) from exc
        keys = [t for t in texts if t.replace(" ", "").startswith("v=DKIM1")] or texts
        return keys[0].encode() if keys else None
    return txt


class _Quiet:
    """A logger for dkimpy that keeps nothing (this check only needs yes or no)."""

    def debug(self, *args, **kwargs):
        pass

    info = warning = error = debug
