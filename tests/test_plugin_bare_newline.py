"""bare-newline: every line of DATA must end in CRLF (RFC 5321 2.3.8)."""
import email
import email.policy

import pytest
from hypothesis import given, settings, strategies as st

from forgelab.plugins.bare_newline import BareNewline

HEAD = b"From: <a@shop.example>\r\nDate: Mon, 17 Jun 1996 11:24:00 -0700\r\n\r\n"


def check(raw):
    email.message_from_bytes(raw, policy=email.policy.default)  # the parse the pipeline does: must not raise
    return BareNewline({}).forgelab_message(raw=raw)


@pytest.mark.parametrize("body, expected, lf, cr", [
    (b"line one\r\nline two\r\n", "pass", 0, 0),
    (b"", "pass", 0, 0),
    (b"line one\nline two\r\n", "fail", 1, 0),
    (b"line one\rline two\r\n", "fail", 0, 1),
    (b"a\nb\rc\n.\n", "fail", 3, 1),
    (b"ends without newline", "pass", 0, 0),
])
def test_results(body, expected, lf, cr):
    verdict = check(HEAD + body)
    assert verdict.check == "bare-newline"
    assert verdict.result == expected, verdict.reason
    assert (verdict.details["bare_lf"], verdict.details["bare_cr"]) == (lf, cr)


def test_fail_names_offset_and_line():
    raw = HEAD + b"first\r\nsecond\nthird\r\n"
    verdict = check(raw)
    offset = raw.index(b"second\n") + len(b"second")
    lf = next(f for f in verdict.details["findings"] if f["kind"] == "LF")
    assert lf["positions"][0]["offset"] == offset
    assert lf["positions"][0]["line"] == 5
    assert f"byte {offset}" in verdict.reason and "line 5" in verdict.reason


def test_whole_message_with_lf_only():
    # What `nc` sends: every line a bare LF.
    raw = b"From: <a@shop.example>\nSubject: hi\n\nhello\n"
    verdict = check(raw)
    assert verdict.result == "fail"
    assert verdict.details["bare_lf"] == 4


def reference_shown(raw):
    """The offsets as the regex walk found them before _first_bare (the first five of each kind)."""
    import re

    shown = {"LF": [], "CR": []}
    for match in re.finditer(rb"\r(?!\n)|(?<!\r)\n", raw):
        offsets = shown["LF" if match.group() == b"\n" else "CR"]
        if len(offsets) < 5:
            offsets.append(match.start())
    return shown


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=60).map(lambda b: bytes(b"\r\nx."[c % 4] for c in b)))
def test_bare_positions_are_the_regex_ones(raw):
    verdict = BareNewline({}).forgelab_message(raw=raw)
    shown = {f["kind"]: [p["offset"] for p in f["positions"]] for f in verdict.details["findings"]}
    expected = {k: v for k, v in reference_shown(raw).items() if v}
    assert shown == expected
