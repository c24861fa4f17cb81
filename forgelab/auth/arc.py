"""ARC (RFC 8617) chain validation with dkimpy, through forgelab's resolver; and sealing for lab list servers."""
from __future__ import annotations

import re
from dataclasses import dataclass

import dkim

from ..lab.dns import Lookups
from . import keys as keys_mod
from .context import lookups, once
from .dkim import _Collector, _dnsfunc
from .dkim import parsed as dkim_parsed

CACHE_KEY = "arc"
TRUSTED_KEY = "arc.trusted_sealers"
_INSTANCE = re.compile(r"\s*i\s*=\s*(\d{1,2})\s*;\s*")
_SEAL_D = re.compile(r"(?:^|;)\s*d\s*=\s*([^;\s]+)", re.I)


@dataclass(frozen=True)
class ARCResult:
    result: str        # pass, fail or none (what A-R's arc= says)
    reason: str
    instances: int = 0
    sealers: tuple = ()  # d= of each ARC-Seal, oldest first

    def _comment(self) -> str:
        if self.result == "pass":
            return f"{self.instances} set(s) sealed by {' '.join(self.sealers)}"[:120]
        return "" if self.result == "none" else self.reason[:120]

    def details(self) -> dict:
        return {"instances": self.instances, "sealers": list(self.sealers),
                "authres": {"method": "arc", "comment": self._comment(),
                            "properties": []}}


def verify(raw: bytes, view: Lookups) -> ARCResult:
    log, temp = _Collector(), []
    end = raw.find(b"\r\n\r\n")  # the header block, without copying the body
    head = b"\n" + (raw if end < 0 else raw[:end]).lower()
    if b"\narc-" not in head:
        return ARCResult("none", "the message carries no ARC set")
    try:
        cv, results, reason = dkim.arc_verify(raw, logger=log, dnsfunc=_dnsfunc(view, temp))
    except (dkim.DKIMException, IndexError, ValueError) as exc:  # dkimpy's parser gives up on hostile headers
        return ARCResult("fail", f"the ARC chain cannot be checked: the message does not parse ({exc})")
    cv = (cv or b"").decode() if isinstance(cv, bytes) else (cv or "")
    sealers = tuple(r.get("as-domain", b"").decode("utf-8", "replace") if isinstance(r.get("as-domain"), bytes)
                    else str(r.get("as-domain", "")) for r in sorted(results, key=lambda r: r.get("instance", 0)))
    if cv == "pass":
        return ARCResult("pass", f"the ARC chain of {len(results)} set(s) verifies (sealed by "
                                 f"{', '.join(sealers)}); the first sealer's results can be trusted as far as "
                                 f"you trust the sealers", len(results), sealers)
    if cv == "none" or not cv and not results and not reason:
        return ARCResult("none", "the message carries no ARC set")
    why = (reason.decode() if isinstance(reason, bytes) else reason) or (log.errors[-1] if log.errors else "")
    if temp:
        why = f"a key could not be fetched now ({temp[-1]})"
    return ARCResult("fail", f"the ARC chain is broken: {why or 'a seal or message signature does not verify'}",
                     len(results), sealers)


def result(envelope, raw: bytes, lab) -> ARCResult:
    return once(envelope.cache, CACHE_KEY, lambda: verify(raw, lookups(envelope.cache, lab)))


@dataclass(frozen=True)
class Vouch:
    """A trusted sealer's word that DMARC passed when it received the message."""

    sealer: str
    instance: int
    reason: str
    comment: str  # for Authentication-Results: arc=pass as.<i>.d=<sealer>


def trust(envelope, sealers) -> None:
    """Record, for this message, the sealers the receiver trusts (``[defences.arc] trusted_sealers``)."""
    envelope.cache[TRUSTED_KEY] = frozenset(d.strip(".").lower() for d in sealers)


def newest_set(headers) -> tuple[int, str, str] | None:
    """(instance, the ARC-Seal's d=, the ARC-Authentication-Results value) of the highest i=, or None."""
    seals, aars = {}, {}
    for name, value in headers:
        name = name.lower()
        if name not in (b"arc-seal", b"arc-authentication-results"):
            continue
        text = " ".join(value.decode("utf-8", "replace").split())
        m = _INSTANCE.match(text)
        if not m:
            continue
        i = int(m.group(1))
        if name == b"arc-seal":
            d = _SEAL_D.search(text)
            seals.setdefault(i, d.group(1).lower() if d else "")
        else:
            aars.setdefault(i, text[m.end():])
    if not seals:
        return None
    top = max(seals)
    return top, seals[top], aars.get(top, "")


def trusted_pass(envelope, raw: bytes, lab, from_domain: str) -> Vouch | None:
    """RFC 8617 7.2: the ARC chain verifies, its newest set is sealed by a trusted sealer, and that
    sealer's ARC-Authentication-Results say ``dmarc=pass`` for ``from_domain``. Otherwise None.

    Only the newest set counts: RFC 8617 validates the newest AMS alone, so a later untrusted hop
    could have changed what an older trusted sealer saw.
    """
    trusted = envelope.cache.get(TRUSTED_KEY)
    if not trusted or result(envelope, raw, lab).result != "pass":
        return None
    headers, _ = dkim_parsed(envelope, raw)
    newest = newest_set(headers)
    if newest is None:
        return None
    instance, sealer, aar = newest
    if sealer not in trusted:
        return None
    flat = aar.lower()
    for clause in flat.split(";"):
        words = clause.split()
        if words and words[0] == "dmarc=pass" and f"header.from={from_domain.lower()}" in words:
            return Vouch(sealer, instance,
                         f"the ARC chain verifies and its newest set (i={instance}) is sealed by {sealer}, a "
                         f"trusted sealer, whose results say DMARC passed for {from_domain} when it received it",
                         f"arc=pass as.{instance}.d={sealer}")
    return None


def seal(message: bytes, domain: str, srv_id: str, selector: str | None = None,
         keys_dir=keys_mod.LAB_KEYS) -> bytes:
    """Add an ARC set as ``domain`` (e.g. the lab's list server); the chain status comes from the
    message's newest Authentication-Results for ``srv_id``. Returns the sealed message."""
    key = keys_mod.keys_for(domain, selector, keys_dir)[0]
    if key.algorithm != "rsa":
        raise keys_mod.KeyError_("ARC (RFC 8617) seals with rsa-sha256 only")
    headers = dkim.arc_sign(message, key.selector.encode(), key.domain.encode(), key.dkimpy_private(),
                            srv_id.encode())
    return b"".join(headers) + message
