"""forgelab.lab.dns's reverse name of an address (``1.1.0.127.in-addr.arpa``), remembered.

Replaces, when ``forgelab.speedups.install()`` runs, ``forgelab.lab.dns._reverse``
(``dns.reversename.from_address``) with the same function behind a bounded memo: a few
client addresses are asked about for every message (iprev, SPF's ``ptr``). Why: part of
iprev's drop from 57 to 10 µs of CPU per message (docs/performance.md, "Third round").
Unnecessary if dnspython built reverse names faster.
"""
from __future__ import annotations

from ..lab import dns as lab_dns
from .originals import plain
from .memo import short_memo

reverse = short_memo(longest=64)(plain(lab_dns, "_reverse"))  # an address: longer text is not one


# (module, name, replacement): what forgelab.speedups.install() puts in place
REPLACEMENTS = [
    (lab_dns, "_reverse", reverse),
]
