"""ARC (RFC 8617) chain validation with dkimpy, through forgelab's resolver; and sealing for lab list servers."""
from __future__ import annotations

from dataclasses import dataclass

import dkim

from ..lab.dns import Lookups
from . import keys as keys_mod
from .context import lookups, once
from .dkim import _Collector, _dnsfunc

CACHE_KEY = "arc"


@dataclass(frozen=True)
class ARCResult:
    result: str        # pass, fail or none (what A-R's arc= says)
    reason: str
    instances: int = 0
    sealers: tuple = ()  # d= of each ARC-Seal, oldest first

    def details(self) -> dict:
        return {"instances": self.instances, "sealers": list(self.sealers),
                "authres": {"method": "arc", "comment": "" if self.result == "none" else self.reason[:120],
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
