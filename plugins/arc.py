"""ARC (RFC 8617): is the chain of custody added by forwarders intact?"""
from __future__ import annotations

import forgelab
from forgelab.auth import arc


class ARC:
    """``arc=pass|fail|none``. A passing chain tells you what the first forwarder saw;
    it is only as good as your trust in the sealers, so the verdict suggests no action."""

    name = "arc"

    def __init__(self, settings: dict | None = None):
        self.settings = dict(settings or {})

    @forgelab.hookimpl
    def forgelab_message(self, envelope, raw, lab):
        r = arc.result(envelope, raw, lab)
        return forgelab.Verdict(check="arc", result=r.result, reason=r.reason, details=r.details())
