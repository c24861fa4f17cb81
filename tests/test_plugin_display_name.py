"""display-name: names that show another address, another domain, or a local user's name."""
import email
import email.policy

import pytest

from forgelab.lab import load_lab
from forgelab.plugins.display_name import DisplayName
from forgelab.core.session import Envelope

LAB = load_lab()
TAIL = b"To: <alice@corp.example>\r\nSubject: invoice\r\nDate: Mon, 17 Jun 1996 11:24:00 -0700\r\n\r\nPay now.\r\n"


def check(from_line: bytes):
    raw = from_line + b"\r\n" + TAIL
    try:
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception:  # the plugin must cope with raw bytes alone
        parsed = None
    return DisplayName({}).forgelab_message(envelope=Envelope(mail_from="x@evil.example"), message=parsed,
                                            raw=raw, lab=LAB)


CASES = [
    ("brand-name", b"From: PayPal <x@evil.example>", "pass", None),
    ("no-display-name", b"From: x@evil.example", "pass", None),
    ("same-address", b'From: "alice@shop.example" <alice@shop.example>', "pass", None),
    ("same-organisation-domain", b"From: Amazon.com <auto-confirm@mail.amazon.com>", "pass", None),
    ("initials", b"From: John Q. Public <john@shop.example>", "pass", None),
    ("local-user-local-address", b"From: Alice Liddell <alice@corp.example>", "pass", None),
    ("address-in-name", b'From: "ceo@corp.example" <x@evil.example>', "fail", "ceo@corp.example"),
    ("address-in-longer-name", b'From: "Boss (ceo@corp.example)" <x@evil.example>', "fail", "ceo@corp.example"),
    ("encoded-address-in-name", b"From: =?utf-8?q?ceo=40corp=2Eexample?= <x@evil.example>", "fail", "ceo@corp.example"),
    ("domain-in-name", b"From: paypal.com Support <x@evil.example>", "fail", "paypal.com"),
    ("lab-domain-in-name", b"From: bank.example <x@evil.example>", "fail", "bank.example"),
    ("ceo-fraud", b"From: Alice Liddell <x@evil.example>", "fail", "alice"),
    ("ceo-fraud-case-and-spaces", b'From: "alice   LIDDELL" <x@evil.example>', "fail", "alice"),
    ("ceo-fraud-last-first", b'From: "Liddell, Alice" <x@evil.example>', "fail", "alice"),
]


@pytest.mark.parametrize("from_line, expected, phrase", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_results(from_line, expected, phrase):
    verdict = check(from_line)
    assert verdict.check == "display-name"
    assert verdict.result == expected, verdict.reason
    if phrase:
        assert phrase in verdict.reason


def test_ceo_fraud_names_the_user():
    verdict = check(b"From: Bob Cratchit <bob.cratchit@evil.example>")
    assert verdict.result == "fail"
    assert verdict.details["findings"][0]["impersonates"] == "bob"
    assert "CEO fraud" in verdict.reason


def test_comment_read_as_a_name_by_one_parser():
    # compat32 shows the comment as the display name: a client using it shows the bank's address.
    verdict = check(b"From: x@evil.example(<admin@bank.example>)")
    assert verdict.result == "fail"
    assert "admin@bank.example" in verdict.reason
