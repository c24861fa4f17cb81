"""forgelab.auth.dmarc's organisational domains and parsed records, remembered.

Replaces, when ``forgelab.speedups.install()`` runs, ``forgelab.auth.dmarc.org_domain`` (a
Public Suffix List look-up) and ``forgelab.auth.dmarc._parse`` (a DMARC record parsed with the
``dmarc`` package) with the same functions behind a bounded memo: both are pure functions of short text, and the same
domains and records come back message after message. Errors are never remembered, and
``_parse``'s answer is only read by its callers, so sharing it is safe.

Why: with these, DMARC went from 107 to 39 µs of CPU per message (docs/performance.md, "Third
round"). Unnecessary if the dmarc and publicsuffixlist packages kept their own answers.
"""
from __future__ import annotations

from ..auth import dmarc
from .originals import plain
from .memo import short_memo

org_domain = short_memo()(plain(dmarc, "org_domain"))
parse = short_memo(1024, longest=1024)(plain(dmarc, "_parse"))  # a record is longer than a name


# (module, name, replacement): what forgelab.speedups.install() puts in place
REPLACEMENTS = [
    (dmarc, "org_domain", org_domain),
    (dmarc, "_parse", parse),
]
