"""SPF (RFC 7208): may the client's address send for the MAIL FROM domain (and the HELO name)?"""
from __future__ import annotations

import forgelab
from forgelab.auth import spf


def _verdict(check: str, r: spf.SPFResult) -> forgelab.Verdict:
    return forgelab.Verdict(check=check, result=r.result, reason=r.reason, details=r.details())


class SPF:
    """Checked at MAIL FROM (the earliest stage with the evidence), so a strict policy can
    refuse there. The HELO identity is checked at HELO as ``spf-helo``; with a null
    sender (``MAIL FROM:<>``) the HELO identity is the SPF result (RFC 7208 2.4).

    Settings: ``helo`` (default true): also check the HELO identity at HELO.
    """

    name = "spf"

    def __init__(self, settings: dict | None = None):
        settings = dict(settings or {})
        self.check_helo = bool(settings.get("helo", True))

    @forgelab.hookimpl
    def forgelab_helo(self, session, helo, lab):
        if not self.check_helo:
            return None
        return _verdict("spf-helo", spf.helo_result(session, lab, helo))

    @forgelab.hookimpl
    def forgelab_mail_from(self, session, envelope, address, lab):
        return _verdict("spf", spf.mailfrom_result(session, envelope, lab, address))
