"""DKIM (RFC 6376, RFC 8463): every signature verified and reported, plus the risks that teach."""
from __future__ import annotations

import forgelab
from forgelab.auth import dkim, dmarc

# When no signature passes, the message's DKIM result is the most hopeful of its signatures'.
_NO_PASS_ORDER = ("temperror", "fail", "permerror", "neutral")


class DKIM:
    """One ``dkim`` verdict for the message (RFC 6376 6.1): ``pass`` when any signature
    verifies, the others listed in its reason and details (each with d=, s=, algorithm and
    result, and one ``dkim=`` clause each in Authentication-Results); ``dkim=none`` when there
    is none. Plus a ``softfail`` verdict for each risk found on a signature: ``dkim-length``
    (content past l=), ``dkim-replay`` (From not oversigned), ``dkim-duplicate`` (a header
    signed fewer times than it appears), ``dkim-weakkey`` (an RSA key under 1024 bits).

    When no signature passes, the verdict suggests an action from DMARC, which decides
    whether a DKIM failure matters: ``reject`` when the From domain publishes no DMARC
    record (DKIM is then all there is), none when it does (DMARC's own verdict carries the
    domain's disposition; a policy's ``suggested`` then tags).

    Settings: ``risks`` (default true): report the risk verdicts.
    """

    name = "dkim"

    def __init__(self, settings: dict | None = None):
        self.risks = bool(dict(settings or {}).get("risks", True))

    @forgelab.hookimpl
    def forgelab_message(self, session, envelope, raw, lab):
        signatures = dkim.signatures(envelope, raw, lab)
        if not signatures:
            return forgelab.Verdict(check="dkim", result="none", reason="the message carries no DKIM-Signature",
                                    details={"authres": {"method": "dkim", "properties": [], "comment": "no signatures"}})
        out = [self._verdict(signatures, session, envelope, raw, lab)]
        if self.risks:
            for sig in signatures:
                label = f"signature {sig.index + 1} of {len(signatures)}"
                for risk in sig.risks:
                    out.append(forgelab.Verdict(check=risk.check, result="softfail",
                                                reason=f"{label} (d={sig.domain}): {risk.reason}",
                                                details={"header.d": sig.domain, "header.s": sig.selector,
                                                         "index": sig.index}))
        return out

    def _verdict(self, signatures, session, envelope, raw, lab) -> forgelab.Verdict:
        passing = [s for s in signatures if s.result == "pass"]
        broken = [s for s in signatures if s.result != "pass"]
        if passing:
            result, first = "pass", passing[0]
        else:
            result = min((s.result for s in signatures), key=_rank)
            first = next(s for s in signatures if s.result == result)
        count = len(signatures)
        reason = f"signature {first.index + 1} of {count}: {first.reason}"
        others = [s for s in (passing[1:] + broken) if s is not first]
        if others:
            reason += "; " + "; ".join(f"signature {s.index + 1} ({s.result}): {s.reason}" for s in others[:5])
        details = dict(first.details())
        details["signatures"] = [s.details() | {"result": s.result, "reason": s.reason} for s in signatures]
        details["authres"] = [s.details()["authres"] | {"result": s.result} for s in signatures]
        action = None if passing else _suggestion(session, envelope, raw, lab)
        return forgelab.Verdict(check="dkim", result=result, reason=reason, action=action, details=details)


def _rank(result: str) -> int:
    return _NO_PASS_ORDER.index(result) if result in _NO_PASS_ORDER else len(_NO_PASS_ORDER)


def _suggestion(session, envelope, raw, lab) -> str | None:
    """What a failing DKIM deserves: refusal only where no DMARC record speaks for the From domain."""
    return "reject" if dmarc.result(session, envelope, raw, lab).result == "none" else None
