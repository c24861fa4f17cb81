"""Authentication-Results (RFC 8601) on every delivered message, with this server's authserv-id."""
from __future__ import annotations

import forgelab
from forgelab.auth import results


class AuthResults:
    """Prepends one ``Authentication-Results`` header built from the spf, dkim, dmarc,
    arc and iprev verdicts (``authserv-id; none`` when there are none). Forged headers
    claiming our authserv-id are stripped by the pipeline (``strip_forged_authres``)."""

    name = "authres"

    def __init__(self, settings: dict | None = None):
        self.settings = dict(settings or {})

    @forgelab.hookimpl
    def forgelab_add_headers(self, verdicts, lab):
        return [(results.HEADER, results.build_value(lab.hostname, verdicts))]
