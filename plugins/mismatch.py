"""Envelope sender versus header From (and Sender, Reply-To)."""
from __future__ import annotations

import dataclasses

import forgelab
from forgelab.auth import dkim, dmarc
from forgelab.core.networks import contains, parse_networks

from ._domains import domain_of, is_local_domain, normalise_domain, org_domain, same_domain
from ._facts import facts
from ._findings import SHOWN, finding, show, shown_list, verdict

COMPARE_MODES = ("organizational", "exact")


class Mismatch:
    """Does the header From agree with the SMTP envelope and with the client?

    Findings, harshest first:

    - ``fail`` (``details["strongest"] = True``): the header From claims one of our
      local domains but the client did not authenticate, or authenticated as a
      different local user;
    - ``fail``: the From domain differs from the MAIL FROM domain (``neutral`` when a
      ``Sender:`` in the envelope's domain says who sent it on the author's behalf,
      as mailing lists do);
    - ``softfail``: ``Reply-To`` sends answers to a domain other than the From's
      (and other than the Sender's);
    - ``neutral``: the null sender ``<>`` with a From: bounces are legitimate, but
      nothing ties the From to the sender.

    A ``fail`` suggests ``reject`` for the strongest case and ``quarantine`` otherwise
    (honoured by a policy whose action for ``mismatch`` is ``suggested``, as in strict).

    Every parser's reading of the address fields counts (see ``_facts``), so an
    address hidden from one parser is still compared.

    Settings:

    - ``compare`` (default ``"organizational"``): ``"organizational"`` compares
      organisational domains (``mail.corp.example`` matches ``corp.example``, via the
      Public Suffix List); ``"exact"`` compares the domains as written.
    - ``trusted_ips`` (default ``[]``): client addresses or networks (``127.0.0.48/29``)
      that may send as a local domain without logging in, like Postfix's ``mynetworks``;
      empty, every client must authenticate.
    """

    name = "mismatch"

    def __init__(self, settings: dict | None = None):
        settings = dict(settings or {})
        self.compare = settings.get("compare", "organizational")
        if self.compare not in COMPARE_MODES:
            raise ValueError(f"mismatch: setting 'compare' must be one of {', '.join(COMPARE_MODES)}, not {self.compare!r}")
        self.trusted_ips = parse_networks(settings.get("trusted_ips", []), "mismatch: setting 'trusted_ips'")

    def _same(self, a: str, b: str) -> bool:
        return same_domain(a, b, self.compare)

    def _key(self, domain: str) -> str:
        """What :meth:`_same` compares: two domains are the same when their keys are."""
        domain = normalise_domain(domain)
        return domain if self.compare == "exact" else org_domain(domain)

    @forgelab.hookimpl
    def forgelab_message(self, session, envelope, message, raw, lab):
        f = facts(envelope, message, raw)
        mail_from = getattr(envelope, "mail_from", "") or ""
        env_domain = domain_of(mail_from)
        from_domains = f.domains("from")
        sender_domains = f.domains("sender")
        reply_domains = f.domains("reply-to")
        details = {"mail_from": show(mail_from), "from_domains": shown_list(show(d) for d in from_domains),
                   "sender_domains": shown_list(show(d) for d in sender_domains),
                   "reply_to_domains": shown_list(show(d) for d in reply_domains), "compare": self.compare,
                   "strongest": False}
        findings = self._local_claims(session, f, lab)
        if findings:
            details["strongest"] = True
        if not from_domains:
            findings.append(finding("none", "There is no address with a domain in the header From to compare with the envelope."))
        elif mail_from == "":
            findings.append(finding(
                "neutral",
                f"The envelope sender is empty (<>), as for a bounce, and the header From claims {show(', '.join(shown_list(from_domains, 5)))}: "
                "bounces are legitimate, but nothing ties this From to whoever sent it."))
        known = {self._key(d) for d in from_domains + sender_domains}  # a set: one lookup per Reply-To domain
        elsewhere = [d for d in reply_domains if from_domains and self._key(d) not in known]
        if from_domains and mail_from:
            findings.extend(self._envelope(mail_from, env_domain, from_domains, sender_domains,
                                           lambda: _dmarc_view(session, envelope, raw, lab, bool(elsewhere))))
        for domain in elsewhere[:SHOWN]:
            findings.append(finding(
                "softfail",
                f"Reply-To sends answers to {show(domain)}, not to the From domain {show(from_domains[0])}."))
        pass_reason = f"The header From ({show(', '.join(shown_list(from_domains, 5)))}) matches the envelope sender {show(mail_from)}."
        result = verdict(self.name, findings, pass_reason, **details)
        if result.result == "fail":
            # A policy saying "suggested" refuses a local-domain claim and quarantines the rest, but only
            # tags where the From domain's DMARC p=none asks receivers to act on nothing.
            mild = not details["strongest"] and all(f.get("dmarc_none") for f in findings if f["result"] == "fail")
            result = dataclasses.replace(result, action="reject" if details["strongest"] else
                                         "tag" if mild else "quarantine")
        return result

    def _envelope(self, mail_from, env_domain, from_domains, sender_domains, dmarc_view=lambda: None) -> list[dict]:
        differing = [d for d in from_domains if not self._same(d, env_domain)]
        if not differing:
            return []
        claim = show(", ".join(shown_list(differing, 5)))
        vouching = [s for s in sender_domains if self._same(s, env_domain)]
        if vouching and len(vouching) == len(sender_domains):
            return [finding(
                "neutral",
                f"The header From claims {claim} but the envelope sender is {show(mail_from)}; the Sender header "
                f"({show(vouching[0])}) matches the envelope, as a mailing list or a delegate sending for the author would.")]
        view = dmarc_view()  # DMARC, asked only when the envelope differs
        if view:
            result, why, mild = view
            return [finding(result, f"The header From claims {claim} but the envelope sender is {show(mail_from)}; "
                                    f"{why}.", dmarc_none=mild)]
        return [finding("fail", f"The header From claims {claim} but the envelope sender is {show(mail_from)}.")]

    def _local_claims(self, session, f, lab) -> list[dict]:
        local = [m for m in f.mailboxes("from") if _local_or_below(lab, m.domain)]
        if not local:
            return []
        user = getattr(session, "authenticated", None)
        peer = getattr(session, "peer_ip", "") or ""
        client = show(peer or "?")
        if not user and contains(self.trusted_ips, peer):
            return []
        if not user:
            domain = show(local[0].domain.lower())
            return [finding(
                "fail",
                f"The header From claims our own domain {domain}, but the client {client} did not authenticate: "
                f"only our own users, logged in, may send as {domain}.", strongest=True)]
        login = str(user).partition("@")[0].lower()
        others = [m for m in local if m.local.lower() != login]
        if others:
            return [finding(
                "fail",
                f"The client logged in as {show(user)} but the header From claims {show(others[0].address)}, "
                "another local user.", strongest=True)]
        return []


def _local_or_below(lab, domain: str) -> bool:
    """A local domain or any name under one (``nx.corp.example`` too): a claim on either is ours."""
    labels = normalise_domain(domain).split(".")[-16:]  # a name has at most 127 labels; local ones are short
    return any(is_local_domain(lab, ".".join(labels[i:])) for i in range(len(labels)))


def _dmarc_view(session, envelope, raw, lab, reply_elsewhere: bool) -> tuple[str, str, bool] | None:
    """DMARC decides whether a differing envelope matters: (result, why, tag at most) when the From
    domain publishes DMARC. A pass (or a trusted ARC sealer's) makes it information only (neutral),
    unless DMARC passes only through a signature that leaves the body past ``l=`` or a Reply-To
    elsewhere unsigned (a replay's shape: still a fail); a fail under p=none suggests only tag.
    None (judge as before) without a DMARC record, or when DMARC fails under quarantine or reject
    (DMARC's own verdict then acts)."""
    r = dmarc.result(session, envelope, raw, lab)
    domain = show(r.from_domain or "?")
    if r.result == "pass" and not r.spf_aligned and not _covering(envelope, raw, lab, r.dkim_aligned, reply_elsewhere):
        return "fail", (f"DMARC passes for {domain} only through a signature that leaves the body past l= or "
                        "the Reply-To unsigned, so it does not vouch for this envelope"), False
    if r.result == "pass":
        return "neutral", (f"DMARC passes for {domain}, so the differing envelope is information only "
                           "(as for an ESP's bounce domain, SRS or a forwarder)"), False
    if r.override:
        return "neutral", (f"a trusted ARC sealer saw DMARC pass for {domain}, so the differing envelope is "
                           "information only (as for a mailing list)"), False
    if r.result == "fail" and r.disposition == "none":
        return "fail", f"DMARC fails for {domain}, whose policy asks receivers to act on nothing (p=none): tag at most", True
    return None


def _covering(envelope, raw, lab, aligned, reply_elsewhere: bool) -> bool:
    """Whether an aligned DKIM signature vouches for what a reader acts on: the whole body (no
    content past ``l=``) and a Reply-To that sends answers elsewhere (it is in ``h=``)."""
    for sig in dkim.signatures(envelope, raw, lab):
        if sig.result != "pass" or sig.domain not in aligned:
            continue
        if not any(risk.check == "dkim-length" for risk in sig.risks) and (
                not reply_elsewhere or "reply-to" in sig.signed_headers):
            return True
    return False
