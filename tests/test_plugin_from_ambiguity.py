"""from-ambiguity: the From as several parsers read it; the espoofer cases (Chen et al., USENIX Security 2020)."""
import base64
import email
import email.policy

import pytest

from forgelab.plugins.from_ambiguity import FromAmbiguity
from forgelab.core.session import Envelope

TAIL = (b"To: <alice@corp.example>\r\nSubject: test\r\nDate: Mon, 17 Jun 1996 11:24:00 -0700\r\n"
        b"Sender: <s@sender.bank.example>\r\n\r\nHi, this is a test message!\r\n")


def check(from_lines: bytes):
    raw = from_lines + TAIL
    try:
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception:  # the plugin must cope with raw bytes alone
        parsed = None
    return FromAmbiguity({}).forgelab_message(envelope=Envelope(mail_from="any@evil.example"), message=parsed, raw=raw)


ENCODED = base64.b64encode(b"<admin@bank.example>")
ESPOOFER = [
    ("multiple-from-a8", b"From: <first@evil.example>\r\nFrom: <admin@bank.example>\r\n", "2 From headers"),
    ("space-before-from-a9", b" From: <first@evil.example>\r\nFrom: <admin@bank.example>\r\n", "2 From headers"),
    ("space-before-colon-a10", b"From: <first@evil.example>\r\nFrom : <admin@bank.example>\r\n", "2 From headers"),
    ("folded-from-a11", b"From\r\n : <first@evil.example>\r\nFrom: <admin@bank.example>\r\n", "disagree"),
    ("two-addresses-a14", b"From: <first@evil.example>, <admin@bank.example>\r\n", "2 mailboxes"),
    ("encoded-word-address-a15", b"From:=?utf-8?b?" + ENCODED + b"?=,<second@evil.example>\r\n", "disagree"),
    ("route-portion-a16", b"From: <@evil.example,@any.example:admin@bank.example>\r\n", "disagree"),
    ("quoted-pair-a17", b"From: <admin@bank.example>\\,<second@evil.example>\r\n", "disagree"),
    ("delimiter-precedence-a18", b"From: admin@bank.example,<second@evil.example>\r\n", "2 mailboxes"),
    ("display-name-vs-address-a19", b"From: <any@evil.example>admin@bank.example\r\n", "disagree"),
    ("unclosed-comment", b"From: (admin@bank.example <x@evil.example>\r\n", "No parser"),
    ("comment-injection", b"From: x@evil.example(<admin@bank.example>)\r\n", "comment or quote"),
    ("quoted-local-part", b'From: "admin\\@bank.example"@evil.example\r\n', "holds an @"),
    ("nul", b"From: admin@bank.example\x00<x@evil.example>\r\n", "control character"),
]


@pytest.mark.parametrize("from_lines, phrase", [c[1:] for c in ESPOOFER], ids=[c[0] for c in ESPOOFER])
def test_espoofer_cases_fail(from_lines, phrase):
    verdict = check(from_lines)
    assert verdict.check == "from-ambiguity"
    assert verdict.result == "fail", verdict.reason
    assert phrase in verdict.reason
    assert {"policy.default", "compat32", "rfc5322"} <= set(verdict.details["parsers"])


LEGITIMATE = [
    ("plain", b"From: alice@shop.example\r\n", ["alice@shop.example"]),
    ("name-addr", b"From: Alice Liddell <alice@shop.example>\r\n", ["Alice Liddell <alice@shop.example>"]),
    ("quoted-name", b'From: "Liddell, Alice" <alice@shop.example>\r\n', ["Liddell, Alice <alice@shop.example>"]),
    ("initial", b"From: John Q. Public <john@shop.example>\r\n", ["John Q. Public <john@shop.example>"]),
    ("comment", b"From: john@shop.example (John Public)\r\n", None),
    ("encoded-name", b"From: =?utf-8?q?J=C3=B6rg?= <joerg@shop.example>\r\n", ["J\u00f6rg <joerg@shop.example>"]),
    ("folded", b"From: Alice Liddell\r\n <alice@shop.example>\r\n", ["Alice Liddell <alice@shop.example>"]),
    ("utf8-name", "From: J\u00f6rg <joerg@shop.example>\r\n".encode(), ["J\u00f6rg <joerg@shop.example>"]),
]


@pytest.mark.parametrize("from_lines, shown", [c[1:] for c in LEGITIMATE], ids=[c[0] for c in LEGITIMATE])
def test_legitimate_from_passes(from_lines, shown):
    verdict = check(from_lines)
    assert verdict.result == "pass", verdict.reason
    if shown:
        assert verdict.details["parsers"]["policy.default"] == shown
        assert verdict.details["parsers"]["rfc5322"] == shown


def test_details_show_what_each_parser_reads():
    verdict = check(b"From: <any@evil.example>admin@bank.example\r\n")
    parsers = verdict.details["parsers"]
    assert parsers["policy.default"] == ["any@evil.example"]
    assert parsers["compat32"] == ["any@evil.example", "admin@bank.example"]
    assert parsers["rfc5322"] == []
    assert "rfc5322" in verdict.details["errors"]


def test_encoded_word_never_becomes_an_address_for_the_strict_parser():
    verdict = check(b"From:=?utf-8?b?" + ENCODED + b"?=,<second@evil.example>\r\n")
    assert not any("admin@bank.example" in a for a in verdict.details["addresses"]["rfc5322"])
    assert verdict.details["parsers"]["policy.default"][0] == '"<admin@bank.example>"'


def test_no_from_is_none():
    verdict = check(b"")
    assert verdict.result == "none"
