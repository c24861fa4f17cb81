"""Client addresses a policy trusts: single addresses and CIDR networks, read one way everywhere.

Every option that takes addresses (``[defences.mismatch] trusted_ips``, ``[server] xclient``,
``[defences.dkim-replay] trusted_forwarders``) goes through :func:`parse_networks`, and every
client address is tested with :func:`contains`, so ``127.0.0.48/29``, ``127.0.0.1`` and
``::ffff:127.0.0.1`` mean the same thing in each.
"""
from __future__ import annotations

import functools
import ipaddress
from typing import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _unmapped(network: Network) -> Network:
    """``::ffff:127.0.0.0/104`` -> ``127.0.0.0/8``: an IPv4-mapped network is the IPv4 one."""
    if network.version == 6 and network.prefixlen >= 96 and network.network_address.ipv4_mapped:
        return ipaddress.IPv4Network((network.network_address.ipv4_mapped, network.prefixlen - 96))
    return network


def parse_networks(value, key: str) -> tuple[Network, ...]:
    """A list of addresses or networks (``"127.0.0.1"``, ``"127.0.0.48/29"``, ``"::1"``) -> networks.

    Host bits are allowed (``127.0.0.50/29`` is ``127.0.0.48/29``), as Postfix's mynetworks does.

    :param key: what the setting is called, for the error (``"mismatch: setting 'trusted_ips'"``;
        ``""`` when the caller names it).
    :raises ValueError: naming ``key`` and the bad entry.
    """
    named = f"{key}: " if key else ""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{named}must be a list of IP addresses or networks (e.g. [\"127.0.0.48/29\"]), "
                         f"not {value!r}")
    out = []
    for entry in value:
        try:
            if not isinstance(entry, str):
                raise ValueError
            out.append(_unmapped(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError:
            raise ValueError(f"{named}{entry!r} is not an IP address or network "
                             f"(write 127.0.0.1, 127.0.0.48/29 or ::1)") from None
    return tuple(out)


def client_address(ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address, IPv4-mapped IPv6 (``::ffff:127.0.0.1``) read as IPv4; None if not one."""
    try:
        address = ipaddress.ip_address((ip or "").strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def contains(networks: Iterable[Network], ip: str | None) -> bool:
    """Whether the client address ``ip`` is in one of ``networks``."""
    address = client_address(ip)
    return address is not None and any(address.version == n.version and address in n for n in networks)


@functools.lru_cache(maxsize=64)  # a policy's list is parsed once, not at every EHLO
def _parsed(entries: tuple) -> tuple[Network, ...]:
    return parse_networks(entries, "")


def allows(setting, ip: str | None, when_true: Iterable[Network] = ()) -> bool:
    """A key that takes true, false or a list (``[server] xclient``): whether it lets ``ip`` in.

    :param when_true: the networks ``true`` stands for (xclient: 127.0.0.1 alone).
    """
    if setting is True:
        return contains(when_true, ip)
    if not setting or isinstance(setting, bool):
        return False
    return contains(_parsed(tuple(setting)), ip)
