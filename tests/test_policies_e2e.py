"""The three shipped policies, shown end to end over loopback with smtplib and poplib."""
import poplib
import smtplib
from email import message_from_bytes, policy as email_policy

import pytest

from forgelab.auth.keys import sign

ATTACKER = "127.0.66.1"
BANK = "127.0.1.1"


def bank_message(subject="Your statement", sender="alerts@bank.example") -> bytes:
    return (f"From: Bank <{sender}>\r\nTo: alice@corp.example\r\nSubject: {subject}\r\n"
            "Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@bank.example>\r\n\r\n"
            "Your statement is ready.\r\n").encode()


def send(lab, source_ip, mail_from, data, rcpt="alice@corp.example", helo=None):
    with smtplib.SMTP(*lab.smtp.address, timeout=10, source_address=(source_ip, 0)) as client:
        client.ehlo(helo or "client.example")
        return client.sendmail(mail_from, [rcpt], data)


def pop3_messages(lab, user="alice", password="rabbit-hole") -> list:
    client = poplib.POP3(*lab.pop3.address, timeout=10)
    try:
        client.user(user)
        client.pass_(password)
        count, _ = client.stat()
        return [message_from_bytes(b"\r\n".join(client.retr(i)[1]), policy=email_policy.default)
                for i in range(1, count + 1)]
    finally:
        client.quit()


def verdict_headers(message) -> dict[str, str]:
    return {v.split("=")[0]: v.split("=")[1].split(" ")[0] for v in message.get_all("X-Forgelab-Verdict", [])}


def test_legitimate_bank_mail_passes_everything_in_strict(forgelab_server):
    lab = forgelab_server(policy="strict")
    send(lab, BANK, "alerts@bank.example", sign(bank_message(), "bank.example"), helo="mail.bank.example")
    (message,) = pop3_messages(lab)
    verdicts = verdict_headers(message)
    assert verdicts["spf"] == verdicts["dkim"] == verdicts["dmarc"] == "pass"
    assert "fail" not in verdicts.values()
    authres = str(message["Authentication-Results"])
    assert authres.startswith("mx.corp.example") and "spf=pass" in authres and "dmarc=pass" in authres


def test_open_delivers_the_forgery_unmarked(forgelab_server):
    lab = forgelab_server(policy="open")
    send(lab, ATTACKER, "alerts@bank.example", bank_message())
    (message,) = pop3_messages(lab)
    assert message.get_all("X-Forgelab-Verdict") is None
    assert f"[{ATTACKER}]" in str(message["Received"])


def test_observe_delivers_the_forgery_and_stamps_every_verdict(forgelab_server):
    lab = forgelab_server(policy="observe")
    send(lab, ATTACKER, "alerts@bank.example", bank_message())
    (message,) = pop3_messages(lab)
    verdicts = verdict_headers(message)
    assert verdicts["spf"] == "fail" and verdicts["dmarc"] == "fail"
    assert "spf=fail" in str(message["Authentication-Results"])
    (delivered,) = lab.recorder.wait_for("message.delivered")
    assert delivered["action"] == "tag"


def test_strict_rejects_the_spf_forgery_at_mail_from(forgelab_server):
    lab = forgelab_server(policy="strict")
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send(lab, ATTACKER, "alerts@bank.example", bank_message())
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.7.1 [spf] 127.0.66.1 is not allowed to send for bank.example")
    assert pop3_messages(lab) == []


def test_strict_rejects_aligned_dmarc_failure_with_its_reason(forgelab_server):
    # The attacker's own SPF passes, but phish.example does not align with the From's bank.example.
    lab = forgelab_server(policy="strict")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(lab, ATTACKER, "bounce@phish.example", bank_message(), helo="mail.phish.example")
    assert refused.value.smtp_code == 550 and b"[dmarc]" in refused.value.smtp_error
    assert pop3_messages(lab) == []


def test_strict_quarantines_p_quarantine_forgery_out_of_the_pop3_inbox(forgelab_server):
    lab = forgelab_server(policy="strict")
    send(lab, ATTACKER, "bounce@phish.example", bank_message(sender="claims@insure.example"), helo="mail.phish.example")
    assert pop3_messages(lab) == []
    (delivered,) = lab.recorder.wait_for("message.delivered")
    assert delivered["action"] == "quarantine"
    assert [loc[1] for loc in delivered["locations"]] == ["quarantine"]
    assert len(lab.store.list("alice", "quarantine")) == 1


def test_strict_tags_p_none_shop_forgery(forgelab_server):
    lab = forgelab_server(policy="strict")
    data = bank_message(sender="orders@shop.example").replace(b"From: Bank", b"From: Shop")
    send(lab, ATTACKER, "orders@shop.example", data, helo="mail.phish.example")
    (message,) = pop3_messages(lab)
    verdicts = verdict_headers(message)
    assert verdicts["spf"] == "softfail" and verdicts["dmarc"] == "fail"


def test_tampered_signed_message_fails_dkim(forgelab_server):
    lab = forgelab_server(policy="observe")
    signed = sign(bank_message(), "bank.example").replace(b"Your statement is ready.", b"Send us your PIN.")
    send(lab, BANK, "alerts@bank.example", signed, helo="mail.bank.example")
    (message,) = pop3_messages(lab)
    assert verdict_headers(message)["dkim"] == "fail"


def test_forged_authentication_results_claiming_our_id_are_removed(forgelab_server):
    lab = forgelab_server(policy="observe")
    forged = b"Authentication-Results: mx.corp.example; spf=pass; dkim=pass; dmarc=pass\r\n" + bank_message()
    send(lab, ATTACKER, "alerts@bank.example", forged)
    (message,) = pop3_messages(lab)
    (authres,) = message.get_all("Authentication-Results")
    assert "spf=fail" in str(authres)


@pytest.mark.parametrize("policy, known, unknown", [
    ("observe", (250, b"Alice Liddell"), (550, b"5.1.1")),
    ("strict", (252, b"2.5.0"), (252, b"2.5.0")),
])
def test_vrfy_oracle_depends_on_the_policy(forgelab_server, policy, known, unknown):
    lab = forgelab_server(policy=policy)
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        client.ehlo("client.example")
        got_known, got_unknown = client.verify("alice"), client.verify("mallory")
        expn = client.expn("staff")
    assert got_known[0] == known[0] and known[1] in got_known[1]
    assert got_unknown[0] == unknown[0] and unknown[1] in got_unknown[1]
    if policy == "strict":
        assert got_known == got_unknown and b"bob" not in expn[1]


def test_plugin_that_raises_is_a_temperror_and_strict_answers_451(forgelab_server, tmp_path):
    plugin = tmp_path / "broken.py"
    plugin.write_text("from forgelab import hookimpl\n\n"
                      "class Broken:\n    name = 'broken'\n    def __init__(self, settings):\n        pass\n"
                      "    @hookimpl\n    def forgelab_message(self, message):\n        raise RuntimeError('boom')\n\n"
                      "def forgelab_plugin(settings):\n    return Broken(settings)\n")
    lab = forgelab_server(policy="strict", plugins=[str(plugin)])
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(lab, BANK, "alerts@bank.example", sign(bank_message(), "bank.example"), helo="mail.bank.example")
    assert refused.value.smtp_code == 451 and refused.value.smtp_error.startswith(b"4.3.0 [broken]")
    observe = forgelab_server(policy="observe", plugins=[str(plugin)])
    send(observe, BANK, "alerts@bank.example", sign(bank_message(), "bank.example"), helo="mail.bank.example")
    (message,) = pop3_messages(observe)
    assert verdict_headers(message)["broken"] == "temperror" and verdict_headers(message)["dkim"] == "pass"


def test_policy_switch_applies_to_the_next_message(forgelab_server):
    from forgelab.core.policy import load_policy

    lab = forgelab_server(policy="open")
    send(lab, ATTACKER, "alerts@bank.example", bank_message())
    lab.context.set_policy(load_policy("strict"))
    with pytest.raises(smtplib.SMTPSenderRefused):
        send(lab, ATTACKER, "alerts@bank.example", bank_message())
    assert len(pop3_messages(lab)) == 1


def test_strict_refuses_a_from_claiming_our_domain_from_outside(forgelab_server):
    lab = forgelab_server(policy="strict")
    data = b"From: Carol Danvers <carol@corp.example>\r\nTo: alice@corp.example\r\nSubject: wire\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\npay now\r\n"
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(lab, ATTACKER, "boss@phish.example", data, helo="mail.phish.example")
    assert refused.value.smtp_code == 550 and b"[mismatch] The header From claims our own domain corp.example" in refused.value.smtp_error


def test_connect_stage_refusal_is_554_and_the_connection_closes(forgelab_server, tmp_path):
    import socket

    plugin = tmp_path / "blocklist.py"
    plugin.write_text("from forgelab import Verdict, hookimpl\n\nname = 'blocklist'\n\n"
                      "@hookimpl\ndef forgelab_connect(session):\n"
                      "    if session.peer_ip == '127.0.66.1':\n"
                      "        return Verdict('blocklist', 'fail', f'{session.peer_ip} is on the lab blocklist')\n")
    lab = forgelab_server(policy="strict", plugins=[str(plugin)])
    with socket.create_connection(lab.smtp.address, timeout=10, source_address=(ATTACKER, 0)) as sock:
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data == b"554 5.7.1 [blocklist] 127.0.66.1 is on the lab blocklist\r\n"
    send(lab, BANK, "alerts@bank.example", sign(bank_message(), "bank.example"), helo="mail.bank.example")
    assert len(pop3_messages(lab)) == 1


def test_a_plugin_raising_in_any_hook_never_ends_the_session(forgelab_server, tmp_path):
    plugin = tmp_path / "clumsy.py"
    plugin.write_text(
        "from forgelab import hookimpl\n\nclass Clumsy:\n    name = 'clumsy'\n    def __init__(self, settings):\n        pass\n"
        + "".join(f"    @hookimpl\n    def {hook}(self):\n        raise RuntimeError('oops')\n"
                  for hook in ("forgelab_delivered", "forgelab_rejected", "forgelab_vrfy", "forgelab_expn",
                               "forgelab_add_headers"))
        + "\ndef forgelab_plugin(settings):\n    return Clumsy(settings)\n")
    lab = forgelab_server(policy="observe", plugins=[str(plugin)])
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        client.ehlo("client.example")
        assert client.verify("alice")[0] == 250  # the disclosure defence still answers
        assert client.sendmail("a@shop.example", ["alice@corp.example"], b"Subject: x\r\n\r\nhi\r\n") == {}
        client.mail("a@shop.example")
        code, _ = client.rcpt("victim@elsewhere.example")  # refused: forgelab_rejected raises
        assert code == 550 and client.noop()[0] == 250
    assert len(lab.store.list("alice")) == 1


def test_tryfirst_is_honoured_and_policy_order_kept(forgelab_server, tmp_path):
    plugin = tmp_path / "early.py"
    plugin.write_text("from forgelab import Verdict, hookimpl\n\nname = 'early'\n\n"
                      "@hookimpl(tryfirst=True)\ndef forgelab_mail_from(address):\n"
                      "    return Verdict('early', 'pass', 'ran first')\n")
    lab = forgelab_server(policy="observe", plugins=[str(plugin)])
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        client.sendmail("a@shop.example", ["alice@corp.example"], b"Subject: x\r\n\r\nhi\r\n")
    (delivered,) = lab.recorder.wait_for("message.delivered")
    mail_from = [e["verdict"]["check"] for e in lab.recorded("verdict") if e["stage"] == "mail_from"]
    assert mail_from == ["early", "spf"]
    message = [e["verdict"]["check"] for e in lab.recorded("verdict") if e["stage"] == "message"]
    assert message.index("dkim") < message.index("dmarc") < message.index("smuggling")  # the policy's order


def test_a_plugin_returning_bad_headers_costs_nothing_but_its_headers(forgelab_server, tmp_path):
    plugin = tmp_path / "sloppy.py"
    plugin.write_text("from forgelab import hookimpl\n\nname = 'sloppy'\n\n"
                      "@hookimpl\ndef forgelab_add_headers():\n"
                      "    return [('X-Good', 'yes'), 'X-Bad: no', ('X-Also-Bad', 3)]\n")
    lab = forgelab_server(policy="observe", plugins=[str(plugin)])
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        assert client.sendmail("a@shop.example", ["alice@corp.example"], b"Subject: x\r\n\r\nhi\r\n") == {}
    (message,) = pop3_messages(lab)
    assert message["X-Good"] == "yes" and message["X-Bad"] is None and message["X-Also-Bad"] is None
