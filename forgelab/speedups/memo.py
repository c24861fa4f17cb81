"""Memos for pure functions of short text (names, addresses, records) that come back message after message.

The bounded memo the speed-ups here (and a few plugins) wrap a pure function in. Bounded in
entries and in the size of what it keeps (tests/test_speedups.py). Behind the same switch as
every speed-up: with ``FORGELAB_SPEEDUPS=0`` nothing is remembered.
"""
from __future__ import annotations

import functools

from .switch import enabled

NAME_LENGTH = 253  # the longest DNS name; a longer argument cannot be one of the names that repeat


def short_memo(maxsize: int = 4096, longest: int = NAME_LENGTH):
    """``functools.lru_cache(maxsize)``, but a call with a ``str``/``bytes`` argument longer than
    ``longest`` is computed and not kept: attackers choose these strings (a folded From can hold a
    domain of megabytes), so the memo is bounded in size as well as in entries."""
    remember = enabled()  # read when the function is defined: the switch is the environment's

    def wrap(fn):
        cached = functools.lru_cache(maxsize)(fn)

        @functools.wraps(fn)
        def call(*args):
            if not remember:
                return fn(*args)
            if any(isinstance(a, (str, bytes)) and len(a) > longest for a in args):
                return fn(*args)
            return cached(*args)

        call.cache_info, call.cache_clear = cached.cache_info, cached.cache_clear
        return call
    return wrap
