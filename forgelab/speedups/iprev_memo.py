"""forgelab.auth.iprev's one spelling of an address, remembered.

Replaces, when ``forgelab.speedups.install()`` runs, ``forgelab.auth.iprev._canonical``
(``str(ipaddress.ip_address(ip))``) with the same function behind a bounded memo: the same
client and forward addresses come back message after message. Why: with this and
``dns_memo``, iprev went from 57 to 10 µs of CPU per message (docs/performance.md, "Third
round"). Unnecessary if ``ipaddress`` parsed faster.
"""
from __future__ import annotations

from ..auth import iprev
from .originals import plain
from .memo import short_memo

canonical = short_memo(longest=64)(plain(iprev, "_canonical"))  # an address: longer text is not one


# (module, name, replacement): what forgelab.speedups.install() puts in place
REPLACEMENTS = [
    (iprev, "_canonical", canonical),
]
