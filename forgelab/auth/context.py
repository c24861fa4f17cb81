"""Where a check finds its resolver and its once-per-message DNS view."""
from __future__ import annotations

import threading

from ..lab.dns import Lookups, Resolver

_default: Resolver | None = None
_default_lock = threading.Lock()

LOOKUPS_KEY = "dns.lookups"


def resolver_of(lab) -> Resolver:
    """``lab.resolver``, or the embedded lab zone when the lab has none (tests, library use)."""
    resolver = getattr(lab, "resolver", None)
    if resolver is not None:
        return resolver
    global _default
    with _default_lock:
        if _default is None:
            _default = Resolver.lab()
        return _default


def once(cache: dict, key, make):
    """``cache[key]``, made by ``make()`` the first time it is asked for.

    ``setdefault``: when two hooks race, both get the value stored first.
    """
    value = cache.get(key)
    if value is None:
        value = cache.setdefault(key, make())
    return value


def lookups(cache: dict, lab) -> Lookups:
    """The DNS view kept in a per-message (``envelope.cache``) or per-session cache dict."""
    return once(cache, LOOKUPS_KEY, lambda: resolver_of(lab).lookups())
