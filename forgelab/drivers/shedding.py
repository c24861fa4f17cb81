"""Fairness when the server is full: which connection to close so a newcomer gets in.

A class shares one address (127.0.0.1), so a cap per address alone would let one student
lock the others out: the idle connections of the heaviest holder go first (docs/security.md,
"Fairness").
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from .connection import Connection, Limits

SHED_WHY = {"idle": "closing idle connection to make room", "slow": "closing slow connection to make room"}


def choose_shed(conns: Iterable[Connection], limits: Limits, now: float) -> Connection | None:
    """The connection to close so a newcomer gets in, or None: only refuse him then.

    Idle ones first: waiting for the client's next command, nothing in progress, quiet for
    ``shed_idle_after`` since its turn began (our last reply or its last byte); a quarter of
    that if it has not said a word since it connected. Then slow ones (a client that trickles bytes to look busy, or stalls
    mid-message): older than ``shed_idle_after`` and sending under ``min_data_rate`` lately.
    Within each, the address holding the most of them first, then the quietest (slowest).
    Sets ``shed`` on the one chosen (``"idle"`` or ``"slow"``).
    """
    idle, slow = [], []
    for conn in conns:
        if not conn.waiting or conn.shed:
            continue
        # One that never said a word after our greeting is idle sooner: every client speaks first
        # at once, a silent one only holds a slot (an attacker reconnecting in bursts to stay young).
        idle_after = limits.shed_idle_after if conn.spoke else limits.shed_idle_after / 4
        if not conn.in_progress and now - conn.turn_since >= idle_after:
            idle.append(conn)
        elif now - conn.opened >= limits.shed_idle_after and conn.rate(now) < limits.min_data_rate:
            slow.append(conn)
    for why, tier, order in (("idle", idle, lambda c: c.turn_since), ("slow", slow, lambda c: c.rate(now))):
        if tier:
            held = Counter(conn.peer_ip for conn in tier)
            victim = min(tier, key=lambda c: (-held[c.peer_ip], order(c)))
            victim.shed = why
            return victim
    return None
