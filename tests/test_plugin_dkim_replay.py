"""dkim-replay: a strict brand's valid signature replayed, each sign on its own (no sockets), and
under strict over loopback."""
import smtplib

import pytest

from forgelab.attacks.catalogue import _sign_expiring
from forgelab.auth.keys import sign
from forgelab.core.session import Envelope, Session
from forgelab.plugins.dkim_replay import DKIMReplay
from forgelab.testing import run_hook

BANK_IP, ATTACKER_IP = "127.0.1.1", "127.0.66.1"
OVERSIGNED = ["from", "from", "to", "subject", "subject", "date", "message-id"]


def bank_message(body="Your statement for December is ready.\r\n", sender="statements@bank.example",
                 to="alice@corp.example") -> bytes:
    return (f"From: Bank of Example <{sender}>\r\nTo: <{to}>\r\nSubject: Your statement\r\n"
            f"Date: Mon, 01 Jan 2024 09:00:00 +0000\r\nMessage-ID: <r1@bank.example>\r\n\r\n{body}").encode()


def judge(raw: bytes, ip=BANK_IP, mail_from="bounces@bank.example", helo="mail.bank.example", settings=None,
          authenticated=None):
    session = Session(peer_ip=ip, real_peer_ip=ip, helo=helo)
    session.authenticated = authenticated
    verdicts = run_hook(DKIMReplay(settings or {}), "message", message=raw, session=session,
                        envelope=Envelope(mail_from=mail_from))
    return verdicts[0] if verdicts else None


def test_the_bank_sending_its_own_mail_shows_no_sign():
    verdict = judge(sign(bank_message(), "bank.example"))
    assert verdict.result == "pass" and "bank.example (DMARC p=reject)" in verdict.reason


@pytest.mark.parametrize("mail_from,settings", [("", {}), ("", {"envelope": "unaligned"}),
                                               ("attacker@phish.example", {"envelope": "unaligned"})])
def test_replayed_from_an_address_the_brand_does_not_list_with_a_null_or_foreign_envelope(mail_from, settings):
    verdict = judge(sign(bank_message(), "bank.example"), ATTACKER_IP, mail_from, "mail.phish.example",
                    settings=settings)
    assert verdict.result == "fail" and verdict.details["signs"] == ["envelope"]
    assert "[envelope]" in verdict.reason and "127.0.66.1" in verdict.reason
    assert ("null (MAIL FROM:<>)" if not mail_from else mail_from) in verdict.reason


def test_by_default_a_foreign_envelope_is_no_sign_an_esp_or_a_forwarder_sends_so_too():
    raw = sign(bank_message(), "bank.example")
    assert judge(raw, ATTACKER_IP, "bounces@esp.example", "mail.esp.example").result == "pass"
    with pytest.raises(ValueError, match="envelope"):
        judge(raw, settings={"envelope": "any"})


def test_a_trusted_forwarder_network_or_a_logged_in_client_is_no_replay_by_its_envelope():
    raw = sign(bank_message(), "bank.example")
    assert judge(raw, "127.0.9.7", "", settings={"trusted_forwarders": ["127.0.9.0/24"]}).result == "pass"
    assert judge(raw, "::ffff:127.0.9.7", "", settings={"trusted_forwarders": ["127.0.9.0/24"]}).result == "pass"
    assert judge(raw, "127.0.10.7", "", settings={"trusted_forwarders": ["127.0.9.0/24"]}).result == "fail"
    assert judge(raw, ATTACKER_IP, "", authenticated="alice").result == "pass"


def test_body_past_l_is_a_sign_even_from_the_brand_own_address():
    raw = sign(bank_message(), "bank.example", include_headers=OVERSIGNED, length=True)
    assert judge(raw).result == "pass"
    verdict = judge(raw + b"\r\nUPDATE: unlock your account at http://phish.example/\r\n")
    assert verdict.result == "fail" and verdict.details["signs"] == ["length"] and "l=" in verdict.reason


@pytest.mark.parametrize("added", [b"Subject: URGENT: verify your account\r\n", b"To: <bob@corp.example>\r\n",
                                   b"Cc: <carol@corp.example>\r\n"])
def test_a_header_added_above_the_signed_one_is_a_sign(added):
    with_cc = bank_message().replace(b"Date:", b"Cc: <alice@corp.example>\r\nDate:")
    raw = sign(with_cc, "bank.example", include_headers=["from", "from", "to", "cc", "subject", "date"])
    assert judge(raw).result == "pass"
    verdict = judge(added + raw)
    name = added.split(b":")[0].decode()
    assert verdict.result == "fail" and verdict.details["signs"] == ["added-headers"]
    assert f"{name} appears 2 times but h= signs it 1 time(s)" in verdict.reason


def test_oversigned_headers_leave_nothing_to_add():
    raw = sign(bank_message(), "bank.example")  # the lab signer oversigns From and Subject
    assert judge(raw).result == "pass"


def test_an_expired_signature_is_a_sign_and_is_told_apart_from_a_broken_one():
    raw = _sign_expiring(bank_message(), "bank.example", 3600)
    verdict = judge(raw)
    assert verdict.result == "fail" and verdict.details["signs"] == ["expired"]
    assert "expired at 2024-01-01 10:00 UTC" in verdict.reason
    broken = raw.replace(b"is ready", b"is late")
    assert judge(broken) is None  # not the bank's valid signature: DKIM and DMARC say so


def test_only_strict_brands_aligned_with_the_from_are_judged():
    shop = sign(bank_message(sender="news@shop.example").replace(b"Bank of Example", b"Shop"), "shop.example")
    assert judge(shop, ATTACKER_IP, "", "mail.phish.example") is None  # shop.example is p=none
    foreign = sign(bank_message(sender="mallory@phish.example"), "bank.example")  # d=bank, From phish
    assert judge(foreign, ATTACKER_IP, "", "mail.phish.example") is None
    assert judge(bank_message(), ATTACKER_IP, "", "mail.phish.example") is None


def test_insure_p_quarantine_counts_as_strict():
    raw = sign(bank_message(sender="claims@insure.example"), "insure.example")
    verdict = judge(raw, ATTACKER_IP, "", "mail.phish.example")
    assert verdict.result == "fail" and "p=quarantine" in verdict.reason


def test_a_bad_trusted_forwarders_entry_names_the_key():
    with pytest.raises(ValueError, match="dkim-replay: setting 'trusted_forwarders': '127.0.9.0/33'"):
        DKIMReplay({"trusted_forwarders": ["127.0.9.0/33"]})


def test_strict_refuses_the_replay_and_names_the_sign(forgelab_server):
    lab = forgelab_server(policy="strict")
    raw = sign(bank_message(), "bank.example")
    with smtplib.SMTP(*lab.smtp.address, timeout=10, source_address=(ATTACKER_IP, 0)) as client:
        client.ehlo("mail.phish.example")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("", ["alice@corp.example"], raw)
    assert refused.value.smtp_code == 550 and b"[dkim-replay]" in refused.value.smtp_error
    assert b"[envelope]" in refused.value.smtp_error
    assert lab.store.list("alice", "inbox") == []
