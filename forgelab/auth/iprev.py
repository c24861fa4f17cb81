"""iprev (RFC 8601 3): the client address's PTR names, each confirmed by a forward lookup."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..lab.dns import DNSTempError, Lookups
from .context import lookups, once

CACHE_KEY = "iprev"
MAX_NAMES = 10  # like SPF's ptr mechanism, look at no more than 10 PTR names


def _canonical(ip: str) -> str:
    """An address in one spelling (``::FFFF:127.0.1.1`` and ``::ffff:7f00:101`` compare equal)."""
    return str(ipaddress.ip_address(ip))


@dataclass(frozen=True)
class IPRevResult:
    result: str        # pass, fail, temperror (A-R's iprev results)
    ip: str
    name: str | None   # the forward-confirmed name (or the first PTR name on a fail)
    ptr_names: tuple
    reason: str

    def details(self) -> dict:
        return {"ip": self.ip, "name": self.name, "ptr_names": list(self.ptr_names), "policy.iprev": self.ip,
                "authres": {"method": "iprev", "comment": self.name or "", "properties": [("policy", "iprev", self.ip)]}}


def check(ip: str, view: Lookups) -> IPRevResult:
    try:
        addr = _canonical(ip)
    except (ValueError, TypeError):  # TypeError: not a str at all (or, with the speed-ups, unhashable)
        return IPRevResult("permerror", ip, None, (), f"{ip!r} is not an IP address")
    try:
        names = view.ptr(addr)[:MAX_NAMES]
        if not names:
            return IPRevResult("fail", ip, None, (), f"{ip} has no PTR record: the client has no name in DNS")
        for name in names:
            if addr in {_canonical(a) for a in view.addresses(name)}:
                return IPRevResult("pass", ip, name, tuple(names),
                                   f"{ip} is named {name} (PTR), and {name} points back to {ip}")
    except DNSTempError as e:
        return IPRevResult("temperror", ip, None, (), f"a reverse or forward lookup for {ip} failed for now: {e}")
    return IPRevResult("fail", ip, names[0], tuple(names),
                       f"{ip} claims to be {', '.join(names)} (PTR), but that name does not point back to {ip}: "
                       f"anyone can put any name in their own PTR")


def result(session, lab) -> IPRevResult:
    """iprev for this session's client address, computed once per address."""
    return once(session.cache, (CACHE_KEY, session.peer_ip),
                lambda: check(session.peer_ip, lookups(session.cache, lab)))
