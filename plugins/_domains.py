"""Domains compared the way the look-alike and mismatch defences compare them.

Not a plugin (no hooks): normalising a domain, its organisational domain by the Public
Suffix List, whether its suffix is real, and whether the lab calls it local.
"""
from __future__ import annotations

from forgelab.speedups.memo import short_memo

from ._mailbox import utf8_text


def normalise_domain(domain: str) -> str:
    """The domain as compared: trimmed, brackets and the final dot dropped, lower case."""
    return (domain or "").strip().strip("[]").lower().rstrip(".")


def domain_of(address: str) -> str:
    """The domain of an envelope address (``""`` for the null sender or no ``@``)."""
    local, at, domain = (address or "").strip().strip("<>").rpartition("@")
    return normalise_domain(utf8_text(domain)) if at else ""


def _psl():
    """The one Public Suffix List of the process, shared with DMARC (building one takes ~0.3 s and MBs)."""
    from forgelab.auth.dmarc import psl  # on first use: it brings the DMARC, DKIM and SPF code with it

    return psl()


def org_domain(domain: str) -> str:
    """The organisational domain (``mail.corp.example`` -> ``corp.example``), or the domain itself."""
    return _org_domain(normalise_domain(domain))


@short_memo()  # a pure function of the name (the PSL is fixed); domains come back
def _org_domain(domain: str) -> str:
    """:func:`org_domain` of a domain already normalised."""
    try:
        return _psl().privatesuffix(domain) or domain
    except Exception:
        return domain


def public_suffix(domain: str) -> str:
    """The public suffix of ``domain`` by the PSL (``co.uk`` of ``www.shop.co.uk``); a TLD the list
    does not know (``example``) is one, as browsers take it."""
    return _public_suffix(normalise_domain(domain))


@short_memo()
def _public_suffix(domain: str) -> str:
    """:func:`public_suffix` of a domain already normalised."""
    try:
        return _psl().publicsuffix(domain) or domain.rpartition(".")[2]
    except Exception:
        return domain.rpartition(".")[2]


def known_suffix(domain: str) -> bool:
    """Whether ``domain`` ends in a real public suffix or a reserved test TLD (RFC 2606)."""
    return _known_suffix(normalise_domain(domain))


@short_memo()
def _known_suffix(domain: str) -> bool:
    """:func:`known_suffix` of a domain already normalised."""
    if domain.rsplit(".", 1)[-1] in ("example", "test", "invalid", "localhost"):
        return True
    try:
        return _psl().publicsuffix(domain, accept_unknown=False) is not None
    except Exception:
        return False


def same_domain(a: str, b: str, compare: str = "organizational") -> bool:
    """Whether two domains are one: the same organisational domain, or (``compare="exact"``) the same name."""
    a, b = normalise_domain(a), normalise_domain(b)
    if compare == "exact":
        return a == b
    return org_domain(a) == org_domain(b)


def lab_directory(lab):
    """``lab.directory`` or None, so a defence works with a partial lab."""
    return getattr(lab, "directory", None)


def is_local_domain(lab, domain: str) -> bool:
    """Whether ``domain`` is one of the lab's local domains (False in a lab with no directory)."""
    directory = lab_directory(lab)
    try:
        return bool(directory and domain and directory.is_local_domain(domain))
    except Exception:
        return False
