"""pyspf's address parsing, and pyspf's form of each DNS answer, remembered.

Replaces, when ``forgelab.speedups.install()`` runs:

- ``spf.ipaddress`` (the ``ipaddress`` module as pyspf sees it) with the same module whose
  ``ip_address`` and ``ip_network`` are memoised: pyspf parses the client address and every
  network a record lists again for each query (RFC 7208 evaluation itself stays pyspf's);
- ``forgelab.auth.spf._pyspf_records`` (a DNS answer in pyspf's ``DNSLookup`` form) with the same
  function remembered on the answer itself: the resolver's TTL cache hands the same immutable
  answer to every message, so its pyspf form can stay with it (``Answer.memo``).

Why: with these and the resolver's lock-free reads, SPF (HELO and MAIL FROM) went from 119 to
95 µs of CPU per message (docs/performance.md, "Third round"). Unnecessary if pyspf kept
parsed addresses and networks itself.
"""
from __future__ import annotations

import ipaddress

import spf as pyspf

from ..auth import spf as spf_check
from .originals import plain
from .memo import short_memo

_plain_pyspf_records = plain(spf_check, "_pyspf_records")


def _memo_parse(parse):
    """``parse`` memoised for text (bounded: record contents are the sender's choice); the address
    and network objects are immutable, so every check may share them."""
    memo = short_memo(longest=64)(parse)  # an address or network: longer text is not one

    def parsed(text, *args, **kwargs):
        if args or kwargs or type(text) is not str:
            return parse(text, *args, **kwargs)
        return memo(text)
    parsed.cache_info, parsed.cache_clear = memo.cache_info, memo.cache_clear
    return parsed


class IPAddressForPyspf:
    """The ``ipaddress`` module with ``ip_address`` and ``ip_network`` memoised."""

    ip_address = staticmethod(_memo_parse(ipaddress.ip_address))
    ip_network = staticmethod(_memo_parse(ipaddress.ip_network))

    def __getattr__(self, name):
        return getattr(ipaddress, name)


ADDRESSES = IPAddressForPyspf()


def pyspf_records(answer, qtype: str) -> tuple:
    """``forgelab.auth.spf._pyspf_records(answer, qtype)``, made once per answer and type."""
    return answer.memo(("pyspf", qtype), lambda a: _plain_pyspf_records(a, qtype))


# (module, name, replacement): what forgelab.speedups.install() puts in place
REPLACEMENTS = [
    (pyspf, "ipaddress", ADDRESSES),
    (spf_check, "_pyspf_records", pyspf_records),
]
