"""ARC (RFC 8617): is the chain of custody added by forwarders intact, and is its sealer trusted?"""
from __future__ import annotations

import forgelab
from forgelab.auth import arc


class ARC:
    """``arc=pass|fail|none``. A passing chain tells you what the first forwarder saw; it is
    only as good as your trust in the sealers, so the verdict suggests no action.

    Settings: ``trusted_sealers`` (default ``[]``): the sealing domains (ARC-Seal ``d=``) this
    receiver trusts, RFC 8617 7.2's local policy. When the chain verifies, its newest set is
    sealed by one of them and that set's ARC-Authentication-Results say ``dmarc=pass`` for the
    From domain, a DMARC failure here is overridden (``dmarc=fail ... policy.override=arc``).
    An untrusted sealer never overrides.
    """

    name = "arc"

    def __init__(self, settings: dict | None = None):
        settings = dict(settings or {})
        sealers = settings.get("trusted_sealers", [])
        if not isinstance(sealers, (list, tuple)) or not all(isinstance(d, str) and d.strip(".") for d in sealers):
            raise ValueError("arc: setting 'trusted_sealers' must be a list of domain names")
        self.trusted_sealers = tuple(d.strip(".").lower() for d in sealers)

    # At MAIL FROM, before any content check: DMARC, computed once per message by whichever check
    # asks first, must already know whom this receiver trusts. No verdict.
    @forgelab.hookimpl
    def forgelab_mail_from(self, envelope):
        arc.trust(envelope, self.trusted_sealers)

    @forgelab.hookimpl
    def forgelab_message(self, envelope, raw, lab):
        r = arc.result(envelope, raw, lab)
        details = r.details() | {"trusted_sealers": list(self.trusted_sealers)}
        reason = r.reason
        if r.result == "pass" and self.trusted_sealers:
            newest = r.sealers[-1].lower() if r.sealers else ""
            reason += (f"; its newest sealer {newest} is trusted here" if newest in self.trusted_sealers
                       else f"; its newest sealer {newest or '?'} is not a trusted sealer, so it overrides nothing")
        return forgelab.Verdict(check="arc", result=r.result, reason=reason, details=details)
