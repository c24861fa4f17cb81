"""The authentication plugins against the embedded lab world, called directly."""
from email import policy
from email.parser import BytesParser

import pytest

from forgelab.auth import keys
from forgelab.auth.results import build_value
from forgelab.lab.dns import Resolver
from forgelab.lab import load_lab
from forgelab.plugins.arc import ARC
from forgelab.plugins.authres import AuthResults
from forgelab.plugins.dkim import DKIM
from forgelab.plugins.dmarc import DMARC
from forgelab.plugins.iprev import IPRev
from forgelab.plugins.spf import SPF
from forgelab.core.session import Envelope, Session


@pytest.fixture(scope="module")
def lab():
    lab = load_lab()
    lab.resolver = Resolver.lab()
    return lab


def message(from_addr, body="Your statement is ready.\r\n", extra=""):
    return (f"From: {from_addr}\r\nTo: alice@corp.example\r\nSubject: Statement\r\n"
            f"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <1@lab>\r\n{extra}\r\n{body}").encode()


def run(lab, ip, helo, mail_from, raw, dmarc_settings=None):
    """Every plugin, stage by stage, as the pipeline would call them; returns all verdicts."""
    session, envelope = Session(peer_ip=ip), Envelope(mail_from=mail_from)
    session.helo = helo
    verdicts = []
    for v in (IPRev({}).forgelab_helo(session=session, lab=lab), SPF({}).forgelab_helo(session=session, helo=helo, lab=lab),
              SPF({}).forgelab_mail_from(session=session, envelope=envelope, address=mail_from, lab=lab)):
        verdicts.append(v)
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    dkim = DKIM({}).forgelab_message(session=session, envelope=envelope, raw=raw, lab=lab)
    verdicts += dkim if isinstance(dkim, list) else [dkim]
    verdicts.append(DMARC(dmarc_settings or {}).forgelab_message(session=session, envelope=envelope, raw=raw, lab=lab))
    verdicts.append(ARC({}).forgelab_message(envelope=envelope, raw=raw, lab=lab))
    headers = AuthResults({}).forgelab_add_headers(verdicts=verdicts, lab=lab)
    return verdicts, headers, envelope, msg


def by(verdicts, check):
    return [v for v in verdicts if v.check == check]


def test_legit_bank_mail_passes_everything(lab):
    raw = keys.sign(message("Bank <alerts@bank.example>"), "bank.example")
    verdicts, headers, _, _ = run(lab, "127.0.1.1", "mail.bank.example", "bounces@bank.example", raw)
    assert by(verdicts, "spf")[0].result == "pass"
    assert [v.result for v in by(verdicts, "dkim")] == ["pass"]
    assert by(verdicts, "dmarc")[0].result == "pass" and by(verdicts, "dmarc")[0].action is None
    assert by(verdicts, "iprev")[0].result == "pass"
    assert by(verdicts, "arc")[0].result == "none"
    assert not by(verdicts, "dkim-replay")  # the lab signer oversigns From
    (name, value), = headers
    assert name == "Authentication-Results" and value.startswith("mx.corp.example;")
    flat = " ".join(value.split())
    for part in ("iprev=pass", "spf=pass", "smtp.mailfrom=bounces@bank.example", "dkim=pass", "header.d=bank.example",
                 "header.s=lab", "dmarc=pass", "header.from=bank.example", "policy.dmarc=reject", "arc=none"):
        assert part in flat


def test_attacker_forging_the_bank_fails_spf_and_dmarc_with_reject(lab):
    raw = message("Bank <alerts@bank.example>")
    verdicts, headers, _, _ = run(lab, "127.0.66.1", "mail.phish.example", "alerts@bank.example", raw)
    spf = by(verdicts, "spf")[0]
    assert spf.result == "fail" and "127.0.66.1" in spf.reason and "-all" in spf.reason
    dmarc = by(verdicts, "dmarc")[0]
    assert dmarc.result == "fail" and dmarc.action == "reject"
    assert by(verdicts, "dkim")[0].result == "none"
    assert "policy.dmarc=reject" in headers[0][1]


def test_attackers_own_valid_spf_and_dkim_do_not_align(lab):
    raw = keys.sign(message("Bank <alerts@bank.example>"), "phish.example")
    verdicts, _, _, _ = run(lab, "127.0.66.1", "mail.phish.example", "x@phish.example", raw)
    assert by(verdicts, "spf")[0].result == "pass"
    assert by(verdicts, "dkim")[0].result == "pass" and by(verdicts, "dkim")[0].details["header.d"] == "phish.example"
    dmarc = by(verdicts, "dmarc")[0]
    assert dmarc.result == "fail" and dmarc.action == "reject"
    assert "not aligned" in dmarc.reason


def test_lookalike_passes_everything(lab):
    raw = keys.sign(message("Bank <alerts@bank-secure.example>"), "bank-secure.example")
    verdicts, _, _, _ = run(lab, "127.0.66.1", "mail.phish.example", "alerts@bank-secure.example", raw)
    assert by(verdicts, "dmarc")[0].result == "pass"


def test_tampered_signed_message_fails_dkim(lab):
    raw = keys.sign(message("Bank <alerts@bank.example>"), "bank.example")
    tampered = raw.replace(b"Your statement", b"Your NEW statement")
    verdicts, headers, _, _ = run(lab, "127.0.66.1", "x", "alerts@bank.example", tampered)
    dkim = by(verdicts, "dkim")[0]
    assert dkim.result == "fail" and "body" in dkim.reason
    assert by(verdicts, "dmarc")[0].result == "fail"
    assert "dkim=fail" in headers[0][1]


def test_shop_p_none_is_only_marked(lab):
    raw = message("Shop <orders@shop.example>")
    verdicts, headers, _, _ = run(lab, "127.0.66.1", "x", "orders@shop.example", raw)
    assert by(verdicts, "spf")[0].result == "softfail"
    dmarc = by(verdicts, "dmarc")[0]
    assert dmarc.result == "fail" and dmarc.action is None and dmarc.details["policy.dmarc"] == "none"
    assert "dmarc=fail" in headers[0][1]


def test_shop_dual_signature_rsa_and_ed25519(lab):
    raw = keys.sign(message("Shop <orders@shop.example>"), "shop.example")
    verdicts, _, _, _ = run(lab, "127.0.2.1", "mail.shop.example", "orders@shop.example", raw)
    (dkim,) = by(verdicts, "dkim")  # one verdict for the message (RFC 6376 6.1), each signature in its details
    assert sorted(s["header.a"] for s in dkim.details["signatures"]) == ["ed25519-sha256", "rsa-sha256"]
    assert dkim.result == "pass" and all(s["result"] == "pass" for s in dkim.details["signatures"])


def test_quarantine_domain(lab):
    verdicts, _, _, _ = run(lab, "127.0.66.1", "x", "x@phish.example", message("<claims@insure.example>"))
    assert by(verdicts, "dmarc")[0].action == "quarantine"


def test_newsletter_publishes_nothing(lab):
    verdicts, _, _, _ = run(lab, "127.0.66.1", "x", "news@news.example", message("<news@news.example>"))
    assert by(verdicts, "spf")[0].result == "none" and by(verdicts, "dmarc")[0].result == "none"


def test_several_from_addresses_are_a_permerror_that_keeps_the_disposition(lab):
    raw = message("alerts@bank.example, me@phish.example")
    verdicts, _, _, _ = run(lab, "127.0.66.1", "x", "x@phish.example", raw)
    dmarc = by(verdicts, "dmarc")[0]
    assert dmarc.result == "permerror" and dmarc.action == "reject"


def test_teaching_risks_appended_body_and_replayable(lab):
    raw = keys.sign(message("Bank <alerts@bank.example>"), "bank.example", include_headers=["from", "subject"],
                    length=True)
    raw += b"Click http://phish.example/ now\r\n"
    verdicts, _, _, _ = run(lab, "127.0.1.1", "mail.bank.example", "a@bank.example", raw)
    assert by(verdicts, "dkim")[0].result == "pass"
    assert by(verdicts, "dkim-length") and by(verdicts, "dkim-replay")
    assert all(v.result == "softfail" for v in by(verdicts, "dkim-length"))


def test_teaching_risk_header_signed_once_present_twice(lab):
    signed = keys.sign(message("Bank <alerts@bank.example>"), "bank.example", include_headers=["from", "from", "to"])
    raw = signed.replace(b"To: alice", b"To: bob@corp.example\r\nTo: alice")
    verdicts, _, _, _ = run(lab, "127.0.1.1", "mail.bank.example", "a@bank.example", raw)
    dup = by(verdicts, "dkim-duplicate")
    assert dup and "to appears 2 times" in dup[0].reason


def test_weak_key_fails_and_is_explained(lab):
    raw = keys.sign(message("<x@phish.example>"), "phish.example", selector="weak512")
    verdicts, _, _, _ = run(lab, "127.0.66.1", "mail.phish.example", "x@phish.example", raw)
    assert by(verdicts, "dkim")[0].result == "fail" and "512 bits" in by(verdicts, "dkim")[0].reason
    assert by(verdicts, "dkim-weakkey")


def test_null_sender_uses_helo_identity(lab):
    verdicts, headers, _, _ = run(lab, "127.0.66.2", "mail.bank.example", "", message("<x@news.example>"))
    spf = by(verdicts, "spf")[0]
    assert spf.result == "fail" and spf.details["identity"] == "helo"
    assert "smtp.helo=mail.bank.example" in headers[0][1]
    assert by(verdicts, "iprev")[0].result == "fail"


def test_no_check_repeats_a_lookup(lab):
    raw = keys.sign(message("Bank <alerts@bank.example>"), "bank.example")
    _, _, envelope, _ = run(lab, "127.0.1.1", "mail.bank.example", "a@bank.example", raw)
    log = envelope.cache["dns.lookups"].log
    assert len(log) == len(set(log)) and ("bank.example", "TXT") in log and ("_dmarc.bank.example", "TXT") in log


def test_authserv_id_values_from_attackers_cannot_break_the_header(lab):
    from forgelab import Verdict
    v = Verdict("spf", "fail", details={"authres": {"method": "spf", "comment": "x) (y\r\nInjected: 1",
                                                     "properties": [("smtp", "mailfrom", 'a;b"\r\nX: y@evil')]}})
    value = build_value("mx.corp.example", [v])
    lines = value.split("\r\n")
    assert all(line.startswith("\t") for line in lines[1:]) and "\r" not in value.replace("\r\n\t", "")
    assert value.count(";") == 1 and value.count("(") == value.count(")") == 1


@pytest.mark.parametrize("raw", [
    b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=lists.example; s=lab; b=AAAA\r\n From: x@y.example\r\n\r\nbody\r\n",
    b"ARC-Message-Signature: i=1\r\nFrom\r\n :x@y.example\r\n\r\nbody\r\n",
])
def test_arc_on_a_message_dkimpy_cannot_parse_is_a_fail_not_a_crash(lab, raw):
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    verdict = ARC({}).forgelab_message(envelope=Envelope(mail_from="x@y.example"), raw=raw, lab=lab)
    assert verdict.check == "arc" and verdict.result in ("fail", "none")
    assert msg is not None


def test_arc_without_any_arc_header_is_none_without_parsing(lab):
    raw = b"From x\r\nnot a header at all\r\n\r\n"
    verdict = ARC({}).forgelab_message(envelope=Envelope(mail_from=""), raw=raw, lab=lab)
    assert verdict.result == "none"
