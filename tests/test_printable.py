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
    assert Reply(550, "5.1.1", "no \r\nsuch\x00 user").to_bytes() == b"550 5.1.1 no \\r\\nsuch\\x00 user\r\n"
    assert Pop3Reply.err("bad \r\nuser").to_bytes() == b"-ERR bad \\r\\nuser\r\n"


# -- replies are 7-bit and at most 512 octets a line (issue 17) -------------------------
from forgelab.core.printable import fit_7bit, seven_bit  # noqa: E402


def test_seven_bit_writes_every_other_character_as_one_escape():
    assert seven_bit("caf\u00e9 \u202eevil\u200b \x00\x7f\t\\n \U0001f600") == (
        "caf\\u00e9 \\u202eevil\\u200b \\x00\\x7f\\t\\n \\U0001f600")  # a backslash stays
    assert seven_bit(b"bad \xff".decode("utf-8", "surrogateescape")) == "bad \\xff"
    assert seven_bit("\ufffd") == "\\ufffd"
    text = "MAIL FROM:<ceo@corp.example> SIZE=100"
    assert seven_bit(text) is text


@given(st.text())
def test_seven_bit_is_printable_ascii_and_reads_back(text):
    shown = seven_bit(text)
    assert shown.isascii() and shown.isprintable()
    if "\\" not in text:  # each escape is the character it stands for, as Python writes it
        assert shown.encode("ascii").decode("unicode_escape") == text


def test_a_long_line_is_cut_after_a_word_with_a_marker():
    cut = fit_7bit("word " * 200, 100)
    assert len(cut) <= 100 and cut.endswith("word [...]")
    # no space to cut at: between two escapes, never inside one
    cut = fit_7bit("\u202e" * 100, 50)
    assert cut == "\\u202e" * 7 + " [...]"


@given(st.text(), st.one_of(st.none(), st.sampled_from(["5.7.1", "2.0.0"])))
def test_every_reply_line_is_7bit_and_at_most_512_octets(text, enhanced):
    wire = Reply(550, enhanced, [text, text * 50]).to_bytes()
    lines = wire.split(b"\r\n")[:-1]
    assert wire.endswith(b"\r\n") and len(lines) == 2
    assert all(len(line) + 2 <= 512 and line.isascii() and line.decode().isprintable() for line in lines)
    status = Pop3Reply.err(text * 50).to_bytes()
    assert len(status) <= 512 and status.count(b"\r\n") == 1 and status.isascii()
