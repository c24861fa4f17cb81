"""Who decides under strict (issue 17): DKIM by RFC 6376 6.1, DMARC over SPF/DKIM/mismatch, trusted
ARC sealers (RFC 8617 7.2), several authors, local subdomains; and the forgeries that stay refused."""
import poplib
from email import message_from_bytes, policy as email_policy

import pytest

from forgelab.auth.keys import DEFAULT_SIGNED_HEADERS, LAB_KEYS
from forgelab.testing import run_hook

from test_trust_legitimate import list_post, std
from trainer_world import (ACME, ACME_IP, ESP, ESP_IP, HUB, OTHER_HUB, OTHER_HUB_IP, PLAIN, PLAIN_IP, QUIET,
                           QUIET_IP, Shape, deliver, message, seal, sign, start)

ATTACKER_IP, ATTACKER_HELO = "127.0.66.1", "mail.phish.example"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trainer-decisions")
    app, keys_dir = start(tmp)
    yield app, keys_dir
    app.stop()


def newest_delivered(app):
    (user, folder, key), *_ = app.recorder.of("message.delivered")[-1]["locations"]
    client = poplib.POP3(*app.pop3.address, timeout=10)
    try:
        client.user("alice")
        client.pass_("rabbit-hole")
        count, _ = client.stat()
        return message_from_bytes(b"\r\n".join(client.retr(count)[1]), policy=email_policy.default)
    finally:
        client.quit()


# -- DKIM: one verdict, pass when any signature verifies (RFC 6376 6.1)

def test_one_valid_signature_makes_dkim_pass_and_lists_the_broken_one():
    raw = sign(message("From: <alerts@bank.example>", *std("Statement", "s1@bank")), "bank.example", LAB_KEYS)
    raw = raw.replace(b"DKIM-Signature:", b"DKIM-Signature: v=1; a=rsa-sha256; d=bank.example; s=gone; "
                                          b"h=from; bh=AAAA; b=AAAA\r\nDKIM-Signature:", 1)
    (dkim,) = [v for v in run_hook("dkim", "message", message=raw) if v.check == "dkim"]
    assert dkim.result == "pass" and dkim.action is None
    assert [s["result"] for s in dkim.details["signatures"]] == ["permerror", "pass"]
    assert "gone._domainkey.bank.example" in dkim.reason
    assert [c["result"] for c in dkim.details["authres"]] == ["permerror", "pass"]


def test_broken_dkim_without_any_dmarc_record_is_still_refused(world):
    app, k = world
    raw = sign(message(f"From: <news@{PLAIN}>", *std("Club", "c2@club")), PLAIN, k).replace(b"Hello.", b"Hullo.")
    outcome, why = deliver(app, Shape("x", PLAIN_IP, f"mx.{PLAIN}", f"news@{PLAIN}", raw))
    assert outcome == "refused" and "[dkim]" in why


def test_broken_dkim_of_a_p_none_domain_only_tags(world):
    app, k = world
    raw = sign(message(f"From: <jo@{QUIET}>", *std("Photos", "p1@quiet")), QUIET, k).replace(b"Hello.", b"Hullo.")
    outcome, why = deliver(app, Shape("x", ATTACKER_IP, ATTACKER_HELO, "x@phish.example", raw))
    assert outcome == "tagged", why


# -- DMARC keeps refusing forgeries

def test_p_reject_forgery_with_a_broken_aligned_and_a_valid_unaligned_signature_is_refused(world):
    app, k = world
    raw = sign(sign(message(f"From: <ceo@{ACME}>", *std("Wire", "w1@x")), ACME, k, "k1"), "phish.example", LAB_KEYS)
    raw = raw.replace(b"Hello.", b"Pay now.")
    outcome, why = deliver(app, Shape("x", ATTACKER_IP, ATTACKER_HELO, "x@phish.example", raw))
    assert outcome == "refused" and "[dmarc]" in why


def test_envelope_mismatch_without_dmarc_record_is_still_quarantined(world):
    app, _ = world
    raw = message(f"From: <news@{PLAIN}>", *std("Club", "c3@club"))
    outcome, why = deliver(app, Shape("x", ATTACKER_IP, ATTACKER_HELO, "x@phish.example", raw))
    assert outcome == "quarantined" and "mismatch" in why


# -- ARC: a trusted sealer overrides, an untrusted one never does

def test_trusted_sealer_overrides_dmarc_fail_and_authentication_results_say_so(world):
    app, k = world
    raw = list_post(k, f"<ann@{ACME}>", ACME, "Agenda", "ag1@acme")
    outcome, why = deliver(app, Shape("x", "127.0.10.1", f"mx.{HUB}", f"talk-bounces@{HUB}", raw))
    assert outcome in ("accepted", "tagged"), why
    authres = " ".join(str(newest_delivered(app)["Authentication-Results"]).split())
    assert "dmarc=fail" in authres and "local_policy" in authres and "policy.override=arc" in authres and f"as.1.d={HUB}" in authres
    assert f"header.from={ACME}" in authres


def test_untrusted_sealer_never_overrides(world):
    app, k = world
    raw = list_post(k, f"<ann@{ACME}>", ACME, "Agenda", "ag2@acme", list_domain=OTHER_HUB)
    outcome, why = deliver(app, Shape("x", OTHER_HUB_IP, f"mx.{OTHER_HUB}", f"talk-bounces@{OTHER_HUB}", raw))
    assert outcome == "refused" and "[dmarc]" in why


def test_trusted_sealer_whose_results_say_dmarc_fail_does_not_override(world):
    app, k = world
    raw = list_post(k, f"<ann@{ACME}>", ACME, "Agenda", "ag3@acme").replace(b"dmarc=pass", b"dmarc=fail")
    # Changing the sealed results breaks the seal too; either way nothing overrides.
    outcome, why = deliver(app, Shape("x", "127.0.10.1", f"mx.{HUB}", f"talk-bounces@{HUB}", raw))
    assert outcome == "refused" and "[dmarc]" in why


def test_untrusted_hop_after_a_trusted_sealer_does_not_override(world):
    app, k = world
    first = list_post(k, f"<ann@{ACME}>", ACME, "Agenda", "ag4@acme")
    again = (f"Authentication-Results: mx.{OTHER_HUB}; arc=pass; dmarc=pass header.from={ACME}\r\n").encode() + first
    raw = sign(seal(again.replace(b"Hello.", b"Pay now."), OTHER_HUB, k), OTHER_HUB, k,
               headers=[*DEFAULT_SIGNED_HEADERS, "list-id"])
    outcome, why = deliver(app, Shape("x", OTHER_HUB_IP, f"mx.{OTHER_HUB}", f"talk-bounces@{OTHER_HUB}", raw))
    assert outcome == "refused" and "[dmarc]" in why


def test_arc_setting_must_be_a_list_of_domains():
    from forgelab.plugins.arc import ARC

    with pytest.raises(ValueError, match="trusted_sealers"):
        ARC({"trusted_sealers": "groups-hub.example"})


# -- several authors

def test_several_authors_of_different_domains_stay_refused_with_a_clear_reason(world):
    app, k = world
    raw = sign(message(f"From: <ann@{ACME}>, <jo@{QUIET}>", f"Sender: <ann@{ACME}>", *std("Joint", "j2@acme")), ACME, k)
    outcome, why = deliver(app, Shape("x", ACME_IP, f"mx.{ACME}", f"ann@{ACME}", raw))
    assert outcome == "refused"
    dmarc = [v for v in run_hook("dmarc", "message", message=raw) if v.check == "dmarc"][0]
    assert dmarc.result == "permerror" and "different domains" in dmarc.reason


def test_several_authors_of_one_domain_without_sender_stay_a_permerror():
    raw = message(f"From: <ann@{ACME}>, <bo@{ACME}>", *std("Joint", "j3@acme"))
    (dmarc,) = [v for v in run_hook("dmarc", "message", message=raw) if v.check == "dmarc"]
    assert dmarc.result == "permerror"


# -- local and protected subdomains claimed from outside

@pytest.mark.parametrize("domain, mail_from", [("nx.corp.example", "it@nx.corp.example"),
                                               ("deep.nx.corp.example", "it@deep.nx.corp.example"),
                                               ("nx.corp.example", "x@phish.example"),
                                               ("mx.corp.example", "x@phish.example")])
def test_subdomain_of_the_local_domain_from_outside_is_refused(world, domain, mail_from):
    app, _ = world
    raw = message(f"From: IT Desk <it@{domain}>", *std("Reset your password", "it1@x"))
    outcome, why = deliver(app, Shape("x", ATTACKER_IP, ATTACKER_HELO, mail_from, raw))
    assert outcome == "refused" and "[mismatch]" in why and domain in why


@pytest.mark.parametrize("domain", ["nx.bank.example", "nx.insure.example"])
def test_subdomain_of_a_protected_domain_from_outside_is_refused(world, domain):
    app, _ = world
    raw = message(f"From: <alerts@{domain}>", *std("Statement", "st1@x"))
    outcome, why = deliver(app, Shape("x", ATTACKER_IP, ATTACKER_HELO, f"alerts@{domain}", raw))
    assert outcome == "refused" and "[dmarc]" in why


def test_esp_send_is_delivered_and_mismatch_says_why(world):
    app, k = world
    raw = sign(message(f"From: Acme <news@{ACME}>", *std("Catalogue", "cat@esp")), ACME, k, "k1")
    outcome, why = deliver(app, Shape("x", ESP_IP, f"mx.{ESP}", f"bounce+1@bounce.{ESP}", raw))
    assert outcome == "accepted", why
    mismatch = [e["verdict"] for e in app.recorder.of("verdict") if e["verdict"]["check"] == "mismatch"][-1]
    assert mismatch["result"] == "neutral" and "DMARC passes" in mismatch["reason"]


def test_replayed_signature_leaving_reply_to_unsigned_keeps_mismatch_failing(world):
    app, k = world
    signed = sign(message(f"From: Acme <news@{ACME}>", *std("Catalogue", "cat2@acme")), ACME, k, "k1",
                  headers=["from", "to", "subject", "date"])
    raw = signed.replace(b"\r\n\r\n", b"\r\nReply-To: <orders@phish.example>\r\n\r\n", 1)
    outcome, why = deliver(app, Shape("x", ATTACKER_IP, ATTACKER_HELO, "x@phish.example", raw))
    assert outcome in ("quarantined", "refused"), why  # refused where dkim-replay runs too
    mismatch = [e["verdict"] for e in app.recorder.of("verdict") if e["verdict"]["check"] == "mismatch"][-1]
    assert mismatch["result"] == "fail" and "Reply-To unsigned" in mismatch["reason"]
