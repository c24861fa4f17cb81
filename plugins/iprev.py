"""iprev: does the client address have a name that points back to it?"""
from __future__ import annotations

import forgelab
from forgelab.auth import iprev


class IPRev:
    """PTR then forward-confirm (RFC 8601 3), once per client address, at HELO/EHLO (so an
    address set with XCLIENT, which asks for EHLO again, is the one judged)."""

    name = "iprev"

    def __init__(self, settings: dict | None = None):
        self.settings = dict(settings or {})

    @forgelab.hookimpl
    def forgelab_helo(self, session, lab):
        r = iprev.result(session, lab)
        return forgelab.Verdict(check="iprev", result=r.result, reason=r.reason, details=r.details())
