"""DMARC (RFC 7489, RFC 9091 np=): does SPF or DKIM pass for a domain aligned with the From?"""
from __future__ import annotations

import forgelab
from forgelab.auth import dmarc

DISCOVERY = ("psl", "treewalk")


class DMARC:
    """The verdict's ``action`` carries the disposition the From domain published
    (``reject``, ``quarantine``; None for p=none) so a policy can honour it; its
    result is pass, fail, none, permerror (e.g. several From addresses) or temperror.
    It reuses the SPF and DKIM results of the same message (computed once).

    Settings: ``discovery``: ``"psl"`` (RFC 7489, default) or ``"treewalk"`` (DMARCbis).
    """

    name = "dmarc"

    def __init__(self, settings: dict | None = None):
        self.discovery = dict(settings or {}).get("discovery", "psl")
        if self.discovery not in DISCOVERY:
            raise ValueError(f"dmarc: setting 'discovery' must be one of {', '.join(DISCOVERY)}, not {self.discovery!r}")

    @forgelab.hookimpl
    def forgelab_message(self, session, envelope, raw, lab):
        r = dmarc.result(session, envelope, raw, lab, self.discovery)
        return forgelab.Verdict(check="dmarc", result=r.result, reason=r.reason, action=r.action, details=r.details())
