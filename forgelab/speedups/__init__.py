"""Every speed-up in one place, behind one switch.

The teaching path (``forgelab/auth``, ``forgelab/lab/dns.py``) calls its libraries the ordinary
way. :func:`install` then swaps in cheaper equivalents, each in a module of this package named
after what it speeds up, each with a test that it answers as the plain code does
(tests/test_speedups.py)::

    dkimpy           dkimpy's RSA verification, key-record parse, canonicalisation, b= blanking
    dkim_message     forgelab.auth.dkim's split of a message into header fields and body
    pyspf_memos      pyspf's address parsing, and pyspf's form of each cached DNS answer
    dmarc_memos      forgelab.auth.dmarc's organisational domains and parsed records
    iprev_memo       forgelab.auth.iprev's spelling of an address
    dns_memo         forgelab.lab.dns's reverse name of an address
    authres_text     forgelab.auth.results' Authentication-Results clauses, as text
    malloc           glibc's mmap threshold (memory, for ``serve`` and its workers only)

``serve``, its ``--workers`` children and every :class:`forgelab.app.Forgelab` call
:func:`install`. ``FORGELAB_SPEEDUPS=0`` in the environment turns them all off (the workers
inherit it): the plain path runs, slower, with the same verdicts (docs/performance.md).
"""
from __future__ import annotations

import threading

from .originals import ORIGINALS, plain, replace  # noqa: F401 (part of this package's interface)
from .switch import ENV, enabled  # noqa: F401 (part of this package's interface)

_lock = threading.Lock()
_installed = False


def installed() -> bool:
    """Whether :func:`install` has put the speed-ups in place in this process."""
    return _installed


def replacements() -> list:
    """Every ``(module, name, replacement)`` of every speed-up, in the order they go in."""
    from . import authres_text, dkim_message, dkimpy, dmarc_memos, dns_memo, iprev_memo, pyspf_memos

    found = [r for speedup in (dkimpy, dkim_message, pyspf_memos, dmarc_memos, iprev_memo, dns_memo, authres_text)
             for r in speedup.REPLACEMENTS]
    for module, name, _ in found:  # the plain objects, known from here on even if nothing is installed
        ORIGINALS.setdefault((module, name), getattr(module, name))
    return found


def install(process: bool = False) -> bool:
    """Put every speed-up in place, once per process; nothing when switched off.

    :param process: also fix glibc's mmap threshold (``serve`` and its workers: a program
        that embeds forgelab keeps its own malloc settings).
    :returns: whether the speed-ups are in place.
    """
    global _installed
    if not enabled():
        return False
    with _lock:
        if not _installed:
            for module, name, value in replacements():
                replace(module, name, value)
            _installed = True
    if process:
        from .malloc import keep_heap_small

        keep_heap_small()
    return True
