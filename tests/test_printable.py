"""The one rule for showing attacker text: forgelab/core/printable.py."""
from hypothesis import given, strategies as st

from forgelab.core.printable import printable
from forgelab.protocols.smtp.replies import Reply
from forgelab.protocols.pop3.replies import Pop3Reply


def test_controls_bidi_and_escaped_bytes_are_shown_as_escapes():
    assert printable("a\x00b\u202e\x1b[2J") == "a\\x00b\\u202e\\x1b[2J"
    assert printable("line\r\nnext\t") == "line\\r\\nnext\\t"
    assert printable(b"\xff".decode("utf-8", "surrogateescape")) == "\\xff"
    assert printable("\U000e0041") == "\\U000e0041"  # a tag character: invisible, escaped in full


def test_a_replacement_instead_of_escapes():
    assert printable("al\x1bice\n", "?") == "al?ice?"


def test_printable_text_comes_back_unchanged():
    text = "MAIL FROM:<ceo@corp.example> SIZE=100 é ü"
    assert printable(text) is text


@given(st.text())
def test_output_is_always_one_printable_line(text):
    for shown in (printable(text), printable(text, "?")):
        assert shown.isprintable()
    assert printable(text, "?") == "".join(c if c.isprintable() else "?" for c in text)


def test_replies_of_both_protocols_never_break_their_framing():
    assert Reply(550, "5.1.1", "no \r\nsuch\x00 user").to_bytes() == b"550 5.1.1 no ??such? user\r\n"
    assert Pop3Reply.err("bad \r\nuser").to_bytes() == b"-ERR bad ??user\r\n"
