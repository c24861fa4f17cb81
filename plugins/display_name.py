"""Display names that show another address, another domain, or a local user's name."""
from __future__ import annotations

import re
import unicodedata

import forgelab

from ._domains import is_local_domain, known_suffix, lab_directory, org_domain
from ._facts import facts
from ._findings import finding, show, verdict

_ADDRESS_RE = re.compile(r"[^\s<>@\"'(),;:]+@[^\s<>@\"'(),;:]+")
_SCANNED = 300  # longer display names are cut: the regexes are quadratic on long words
_DOMAIN_RE = re.compile(r"(?<![\w@.-])(?:[\w](?:[\w-]*\w)?\.)+[a-z][a-z0-9-]*[a-z0-9](?![\w-])", re.IGNORECASE)


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").casefold()
    return " ".join(text.strip(" \t\"'<>()[],.").split())


class DisplayName:
    """Does the name a reader sees tell the truth about the address behind it?

    ``fail`` when a From display name:

    - is or holds an email address other than the real one
      (``"ceo@corp.example" <x@evil.example>``; ``PayPal <x@evil.example>`` is fine);
    - holds a domain name (``paypal.com``, ``bank.example``) whose organisation differs
      from the real address's;
    - equals the full name of a local user (``Alice Liddell``, or ``Liddell, Alice``)
      while the address is outside the local domains: the CEO-fraud pattern.

    Every parser's reading of the From counts, display names decoded from RFC 2047.

    Settings: none.
    """

    name = "display-name"

    def __init__(self, settings: dict | None = None):
        self.settings = dict(settings or {})

    @forgelab.hookimpl
    def forgelab_message(self, envelope, message, raw, lab):
        mailboxes = facts(envelope, message, raw).mailboxes("from")
        findings: list[dict] = []
        checked = []
        for m in mailboxes[:50]:  # a From with more is a fail for headers and from-ambiguity anyway
            if not m.display.strip():
                continue
            checked.append({"display": show(m.display), "address": show(m.address)})
            findings.extend(self._foreign_address(m) or self._foreign_domain(m))
            findings.extend(self._local_name(m, lab))
        pass_reason = ("No display name shows another address, another domain or a local user's name."
                       if checked else "The From has no display name to check.")
        return verdict(self.name, _unique(findings), pass_reason, checked=checked)

    @staticmethod
    def _foreign_address(m) -> list[dict]:
        out = []
        for token in _ADDRESS_RE.findall(m.display[:_SCANNED]):
            token = token.strip(".")
            if token.lower() != m.address.lower():
                out.append(finding("fail", f"The display name shows the address {show(token)}, but the message is "
                                           f"from {show(m.address)}.", shown=show(token), address=show(m.address)))
        return out

    @staticmethod
    def _foreign_domain(m) -> list[dict]:
        out = []
        real = org_domain(m.domain)
        for token in _DOMAIN_RE.findall(m.display[:_SCANNED]):
            token = token.lower()
            if known_suffix(token) and org_domain(token) != real:
                out.append(finding("fail", f"The display name names the domain {show(token)}, but the message is "
                                           f"from {show(m.address)}.", shown=show(token), address=show(m.address)))
        return out

    @staticmethod
    def _local_name(m, lab) -> list[dict]:
        directory = lab_directory(lab)
        if directory is None or is_local_domain(lab, m.domain):
            return []
        name = _norm(m.display)
        for user in getattr(directory, "users", {}).values():
            full = _norm(getattr(user, "full_name", ""))
            first, _, last = full.rpartition(" ")
            if full and name in (full, f"{last}, {first}", f"{last} {first}"):
                local = show(getattr(directory, "primary_domain", "our domain"))
                return [finding("fail", f"The display name is {show(m.display)}, the name of our user "
                                        f"{show(user.name)}, but the address {show(m.address)} is not in {local}: "
                                        "the pattern of CEO fraud.", impersonates=user.name)]
        return []


def _unique(findings: list[dict]) -> list[dict]:
    seen, out = set(), []
    for f in findings:
        if f["reason"] not in seen:
            seen.add(f["reason"])
            out.append(f)
    return out
