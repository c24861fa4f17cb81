"""mismatch: envelope sender versus header From, Sender and Reply-To."""
import email
import email.policy
import inspect

import pytest

from forgelab.lab import load_lab
from forgelab.plugins.mismatch import Mismatch
from forgelab.core.session import Envelope, Session

LAB = load_lab()
DATE = b"Date: Mon, 17 Jun 1996 11:24:00 -0700"


def message(*lines, body=b"Hello.\r\n"):
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


def check(plugin, raw, mail_from="sender@shop.example", authenticated=None):
    try:
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception:  # the plugin must cope with raw bytes alone
        parsed = None
    args = {"session": Session(peer_ip="127.0.0.66", authenticated=authenticated),
            "envelope": Envelope(mail_from=mail_from, rcpt_tos=["alice@corp.example"]),
            "message": parsed, "raw": raw, "lab": LAB}
    wanted = inspect.signature(plugin.forgelab_message).parameters
    return plugin.forgelab_message(**{k: v for k, v in args.items() if k in wanted})


CASES = [
    # (id, raw, mail_from, authenticated, settings, expected result)
    ("aligned", message(b"From: Shop <orders@shop.example>", DATE), "orders@shop.example", None, {}, "pass"),
    ("subdomain-organizational", message(b"From: <orders@shop.example>", DATE), "bounce@mail.shop.example", None, {}, "pass"),
    ("subdomain-exact", message(b"From: <orders@shop.example>", DATE), "bounce@mail.shop.example", None,
     {"compare": "exact"}, "fail"),
    ("forged-from", message(b"From: CEO <ceo@bank.example>", DATE), "mallory@evil.example", None, {}, "fail"),
    ("null-sender", message(b"From: MAILER-DAEMON@mx.shop.example", DATE), "", None, {}, "neutral"),
    ("reply-to-elsewhere", message(b"From: <orders@shop.example>", b"Reply-To: <orders@evil.example>", DATE),
     "orders@shop.example", None, {}, "softfail"),
    ("list-with-sender", message(b"From: Bob <bob@shop.example>", b"Sender: owner@lists.example",
                                 b"Reply-To: talk@lists.example", b"List-Id: <talk.lists.example>", DATE),
     "talk-bounces@lists.example", None, {}, "neutral"),
    ("local-unauthenticated", message(b"From: Alice <alice@corp.example>", DATE), "alice@corp.example", None, {}, "fail"),
    ("local-authenticated", message(b"From: Alice <alice@corp.example>", DATE), "alice@corp.example", "alice", {}, "pass"),
    ("local-other-user", message(b"From: Bob <bob@corp.example>", DATE), "alice@corp.example", "alice", {}, "fail"),
    ("no-from", message(b"Subject: hi", DATE), "x@shop.example", None, {}, "none"),
]


@pytest.mark.parametrize("raw, mail_from, authenticated, settings, expected",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_results(raw, mail_from, authenticated, settings, expected):
    verdict = check(Mismatch(settings), raw, mail_from, authenticated)
    assert verdict.check == "mismatch"
    assert verdict.result == expected, verdict.reason


def test_reason_names_both_sides():
    verdict = check(Mismatch({}), message(b"From: <ceo@corp.example>", DATE), "mallory@evil.example")
    assert "corp.example" in verdict.reason and "mallory@evil.example" in verdict.reason


def test_local_domain_from_unauthenticated_client_is_strongest():
    verdict = check(Mismatch({}), message(b"From: <ceo@corp.example>", DATE), "ceo@corp.example")
    assert verdict.result == "fail"
    assert verdict.details["strongest"] is True
    assert "127.0.0.66" in verdict.reason and "authenticate" in verdict.reason
    other = check(Mismatch({}), message(b"From: <ceo@bank.example>", DATE), "mallory@evil.example")
    assert other.details["strongest"] is False


def test_address_hidden_from_python_still_compared():
    # espoofer A9: Python drops the indented first From; a lenient reader shows it.
    raw = message(b" From: <ceo@bank.example>", b"From: <any@evil.example>", DATE)
    verdict = check(Mismatch({}), raw, "any@evil.example")
    assert verdict.result == "fail"
    assert "bank.example" in verdict.reason


def test_trusted_ips_may_send_as_local_without_login():
    raw = message(b"From: Alice <alice@corp.example>", DATE)
    assert check(Mismatch({"trusted_ips": ["127.0.0.66"]}), raw, "alice@corp.example").result == "pass"
    assert check(Mismatch({"trusted_ips": ["127.0.0.1"]}), raw, "alice@corp.example").result == "fail"


@pytest.mark.parametrize("settings, key", [({"compare": "fuzzy"}, "compare"), ({"trusted_ips": "127.0.0.1"}, "trusted_ips")])
def test_bad_setting_is_refused(settings, key):
    with pytest.raises(ValueError, match=key):
        Mismatch(settings)
