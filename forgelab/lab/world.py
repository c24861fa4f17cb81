"""The lab world: which domains exist, what they publish, and which loopback address
is "legitimate" for each. The banner and docs/lab.md show this; lab.zone holds the
records themselves (tests check the two agree).

127.0.0.0/8 is all local on Linux, so each sender gets its own address and SPF is
real on one machine: bind to the address (``forgelab forge --source-ip``) or, in lab
mode, set it with XCLIENT.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabDomain:
    name: str
    role: str
    addresses: tuple[str, ...]  # client IPs that legitimately send for it
    mail_host: str | None       # its outgoing server (PTR and forward-confirmed A)
    spf: str | None
    dmarc: str | None
    selectors: tuple[str, ...]  # DKIM keys it publishes (private halves in lab/keys)
    lesson: str


ATTACKER_IP = "127.0.66.1"
# Same attacker, but its PTR claims to be the bank's server; the forward lookup says otherwise.
SPOOFED_PTR_IP = "127.0.66.2"

DOMAINS: tuple[LabDomain, ...] = (
    LabDomain("corp.example", "local mailboxes", ("127.0.0.1",), "mx.corp.example",
              "v=spf1 ip4:127.0.0.1 -all", "v=DMARC1; p=none", ("lab",),
              "Where alice, bob, carol and student live; 127.0.0.1 is the server itself."),
    LabDomain("bank.example", "bank", ("127.0.1.1",), "mail.bank.example",
              "v=spf1 ip4:127.0.1.1 -all", "v=DMARC1; p=reject; rua=mailto:dmarc@bank.example", ("lab",),
              "Publishes everything, strictly: SPF -all, a 2048-bit DKIM key, DMARC p=reject. "
              "Forging it fails loudly."),
    LabDomain("shop.example", "shop", ("127.0.2.1",), "mail.shop.example",
              "v=spf1 ip4:127.0.2.1 ~all", "v=DMARC1; p=none", ("lab", "ed"),
              "SPF ~all (softfail) and DMARC p=none: forgeries are only marked. Signs twice, "
              "rsa-sha256 and ed25519-sha256 (RFC 8463)."),
    LabDomain("news.example", "newsletter", ("127.0.3.1",), None, None, None, (),
              "Publishes nothing at all (not even a PTR for its sender): SPF none, DKIM none, "
              "DMARC none. Anyone can be it."),
    LabDomain("insure.example", "insurer", ("127.0.4.1",), "mail.insure.example",
              "v=spf1 ip4:127.0.4.1 -all", "v=DMARC1; p=quarantine; sp=none; np=reject", ("lab",),
              "DMARC p=quarantine: forgeries land in the Junk folder. sp= and np= show the "
              "subdomain policies."),
    LabDomain("lists.example", "mailing list", ("127.0.5.1",), "mail.lists.example",
              "v=spf1 ip4:127.0.5.1 -all", "v=DMARC1; p=none", ("lab",),
              "A list server that re-sends others' mail: SPF alignment breaks, DKIM may survive, "
              "ARC explains."),
    LabDomain("phish.example", "attacker", (ATTACKER_IP, SPOOFED_PTR_IP), "mail.phish.example",
              "v=spf1 ip4:127.0.66.0/24 -all", None, ("lab", "weak512"),
              "The attacker's own domain: valid SPF and DKIM of its own, which never align with "
              "bank.example. Also holds a 512-bit key (weak512) to show RFC 8301."),
    LabDomain("bank-secure.example", "lookalike of the bank", (ATTACKER_IP,), "mail.phish.example",
              "v=spf1 ip4:127.0.66.0/24 -all", "v=DMARC1; p=reject", ("lab",),
              "Registered by the attacker to look like the bank. SPF, DKIM and DMARC all pass: "
              "authentication proves who sent it, not that they are honest."),
)


def by_name(name: str) -> LabDomain | None:
    name = name.strip(".").lower()
    return next((d for d in DOMAINS if d.name == name), None)


def owners_of(ip: str) -> list[LabDomain]:
    """The lab domains for which ``ip`` is a legitimate sender."""
    return [d for d in DOMAINS if ip in d.addresses]


def banner_lines() -> list[str]:
    """One line per lab domain for the start-up banner."""
    width = max(len(d.name) for d in DOMAINS)
    lines = []
    for d in DOMAINS:
        ips = ", ".join(d.addresses)
        published = []
        if d.spf:
            published.append("SPF " + d.spf.split()[-1])
        if d.selectors:
            published.append("DKIM " + ",".join(d.selectors))
        if d.dmarc:
            policy = next(t.split("=")[1] for t in d.dmarc.replace(" ", "").split(";") if t.startswith("p="))
            published.append("DMARC p=" + policy)
        lines.append(f"{d.name:<{width}}  {d.role:<22} from {ips:<22} {'; '.join(published) or 'no records'}")
    return lines
