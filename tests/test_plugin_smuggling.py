"""smuggling: end-of-data look-alikes (CVE-2023-51764/51765/51766), NUL bytes, lone CRs."""
import email
import email.policy

import pytest
from hypothesis import given, settings, strategies as st

from forgelab.plugins.smuggling import _DOT_AFTER_BREAK, _EOD_RE, KNOWN, Smuggling
from forgelab.core.session import Envelope

HEAD = b"From: <a@shop.example>\r\nTo: <alice@corp.example>\r\nDate: Mon, 17 Jun 1996 11:24:00 -0700\r\n\r\n"
SECOND = (b"MAIL FROM:<admin@bank.example>\r\nRCPT TO:<alice@corp.example>\r\nDATA\r\n"
          b"From: <admin@bank.example>\r\n\r\nsmuggled\r\n")


def check(raw):
    email.message_from_bytes(raw, policy=email.policy.default)  # the parse the pipeline does: must not raise
    return Smuggling({}).forgelab_message(envelope=Envelope(data_as_sent=raw), raw=raw)


@pytest.mark.parametrize("sequence", [
    b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r",
    b"\r\n\x00.\r\n", b"\r\n.\x00\r\n",
], ids=lambda s: KNOWN[s])
def test_each_probe_is_named_with_its_hidden_message(sequence):
    raw = HEAD + b"first message" + sequence + SECOND
    verdict = check(raw)
    assert verdict.check == "smuggling"
    assert verdict.result == "fail"
    found = verdict.details["sequences"]
    assert len(found) == 1, found
    assert found[0]["sequence"] == repr(sequence)[2:-1]
    assert found[0]["name"] == KNOWN[sequence]
    assert found[0]["offset"] == raw.index(sequence)
    assert found[0]["hidden_message"].startswith("MAIL FROM:<admin@bank.example>")
    assert found[0]["smtp_commands"] is True
    assert KNOWN[sequence] in verdict.reason and "second message" in verdict.reason


def test_clean_message_passes_even_with_an_unstuffed_dot_line():
    # ".." typed by a client is unstuffed to "." on its own CRLF line: ordinary content.
    raw = HEAD + b"a line\r\n.\r\n. Count the dots\r\n"
    verdict = check(raw)
    assert verdict.result == "pass", verdict.reason
    assert verdict.details["sequences"] == []


def test_nul_byte():
    verdict = check(HEAD + b"be\x00fore\r\n")
    assert verdict.result == "fail"
    assert "NUL" in verdict.reason


def test_lone_cr():
    verdict = check(HEAD + b"over\rwritten\r\n")
    assert verdict.result == "fail"
    assert "lone CR" in verdict.reason


def test_look_alike_without_commands_still_fails():
    raw = HEAD + b"text\n.\nmore text\r\n"
    verdict = check(raw)
    assert verdict.result == "fail"
    assert verdict.details["sequences"][0]["smtp_commands"] is False
    assert verdict.details["sequences"][0]["hidden_message"].startswith("more text")


def test_hidden_message_is_escaped():
    raw = HEAD + b"x\n.\n\x1b[31mMAIL FROM:<a@b>\r\n"
    shown = check(raw).details["sequences"][0]["hidden_message"]
    assert "\x1b" not in shown and "\\x1b" in shown


def test_many_look_alikes_are_counted_not_all_listed():
    verdict = check(HEAD + b"x\n.\n" * 50)
    assert verdict.result == "fail"
    assert len(verdict.details["sequences"]) == 10
    assert "In all, 50" in verdict.reason


def test_dot_unstuffing_does_not_hide_crlf_dot_lf():
    # The client sends "\r\n.\n"; unstuffing leaves "\r\n\n" in raw, the text as sent keeps the dot.
    sent = HEAD + b"first\r\n.\n" + SECOND
    raw = sent.replace(b"\r\n.", b"\r\n")
    verdict = Smuggling({}).forgelab_message(envelope=Envelope(data_as_sent=sent), raw=raw)
    assert verdict.result == "fail" and "crlflf" in verdict.reason


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40).map(lambda b: bytes(b"\r\n.\x00x"[c % 5] for c in b)))
def test_the_shortcut_skips_only_messages_without_a_look_alike(raw):
    # _sequences skips the regex when no "<break>." or "<break>\0." is in the text: never a match then.
    if not any(dot in raw for dot in _DOT_AFTER_BREAK):
        assert _EOD_RE.search(raw) is None
    for match in _EOD_RE.finditer(raw):
        assert any(dot in match.group() for dot in _DOT_AFTER_BREAK)
