"""DKIM (RFC 6376, RFC 8463): every signature verified and reported, plus the risks that teach."""
from __future__ import annotations

import forgelab
from forgelab.auth import dkim


class DKIM:
    """One ``dkim`` verdict per signature (d=, s=, algorithm, result), ``dkim=none`` when
    there is none, and a ``softfail`` verdict for each risk found on a signature:
    ``dkim-length`` (content past l=), ``dkim-replay`` (From not oversigned),
    ``dkim-duplicate`` (a header signed fewer times than it appears), ``dkim-weakkey``
    (an RSA key under 1024 bits).

    Settings: ``risks`` (default true): report the risk verdicts.
    """

    name = "dkim"

    def __init__(self, settings: dict | None = None):
        self.risks = bool(dict(settings or {}).get("risks", True))

    @forgelab.hookimpl
    def forgelab_message(self, envelope, raw, lab):
        signatures = dkim.signatures(envelope, raw, lab)
        if not signatures:
            return forgelab.Verdict(check="dkim", result="none", reason="the message carries no DKIM-Signature",
                                    details={"authres": {"method": "dkim", "properties": [], "comment": "no signatures"}})
        out = []
        for sig in signatures:
            label = f"signature {sig.index + 1} of {len(signatures)}"
            out.append(forgelab.Verdict(check="dkim", result=sig.result, reason=f"{label}: {sig.reason}",
                                        details=sig.details()))
            if self.risks:
                for risk in sig.risks:
                    out.append(forgelab.Verdict(check=risk.check, result="softfail",
                                                reason=f"{label} (d={sig.domain}): {risk.reason}",
                                                details={"header.d": sig.domain, "header.s": sig.selector,
                                                         "index": sig.index}))
        return out
