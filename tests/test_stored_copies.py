"""Stored copies parse as received (issue 17): the headers forgelab adds never change which From
a parser reads. A header that starts with a folded line (Composition Kills, Fig. 6(f)) keeps
those lines first under open and observe; strict refuses it, 554 5.6.0."""
import email.parser
import email.policy
import poplib
import smtplib

import pytest

from forgelab.core.delivery import folded_start, prepare_for_delivery
from forgelab.core.session import Envelope, Session
from forgelab.lab import load_lab
from forgelab.verdicts import Verdict
from plugins._facts import Facts

TAIL = b"To: alice@corp.example\r\nSubject: hi\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n"
SHAPES = [
    b" From: <first@phish.example>\r\nFrom: <admin@bank.example>\r\n" + TAIL,  # espoofer A9
    b"\tFrom: <first@phish.example>\r\n  <second@phish.example>\r\nFrom: <admin@bank.example>\r\n" + TAIL,
    b" \r\nFrom: <admin@bank.example>\r\n" + TAIL,
    b" Authentication-Results: mx.corp.example; dmarc=pass\r\nFrom: <admin@bank.example>\r\n" + TAIL,
    b" From: <only@phish.example>",  # no end of line at all
    b"From: <admin@bank.example>\r\n" + TAIL,  # the everyday case
]


def froms(raw: bytes) -> dict:
    """The From each parser reads: Python's two email parsers and the defences' four."""
    default = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    compat = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    seen = {"email default": [str(v) for v in default.get_all("From", [])],
            "email compat32": [str(v) for v in compat.get_all("From", [])]}
    for parser, result in Facts(default, raw).parsers("from").items():
        seen[parser] = [(m.display, m.local, m.domain) for m in result.mailboxes]
    return seen


@pytest.mark.parametrize("raw", SHAPES)
def test_every_parser_reads_the_stored_copy_s_from_as_the_received_one(raw):
    lab = load_lab()
    stored = prepare_for_delivery(raw, Session("127.0.66.1", helo="mail.phish.example"), Envelope("x@phish.example"),
                                  lab, [Verdict("spf", "fail", "no")], [("X-Plugin", "added")], for_rcpt="alice")
    assert froms(stored) == froms(raw)
    assert stored.count(b"\nReturn-Path: ") + stored.startswith(b"Return-Path: ") == 1
    if b"Authentication-Results" in raw:  # one claiming to be ours is removed, folded or not
        assert b"dmarc=pass" not in stored and stored.startswith(b"Return-Path: ")
    elif folded_start(raw):  # the folded lines stay first; forgelab's own headers follow them
        assert stored.startswith(raw[:folded_start(raw)].rstrip(b"\r\n"))
    else:
        assert stored.startswith(b"Return-Path: ") and stored.endswith(raw)


def send(lab, data: bytes):
    with smtplib.SMTP(*lab.smtp.address, timeout=10, source_address=("127.0.66.1", 0)) as client:
        client.ehlo("mail.phish.example")
        client.sendmail("boss@phish.example", ["alice@corp.example"], data)


def retrieved(lab) -> list[bytes]:
    client = poplib.POP3(*lab.pop3.address, timeout=10)
    try:
        client.user("alice")
        client.pass_("rabbit-hole")
        return [b"\r\n".join(client.retr(i + 1)[1]) + b"\r\n" for i in range(client.stat()[0])]
    finally:
        client.quit()


@pytest.mark.parametrize("policy", ["open", "observe"])
def test_over_pop3_the_folded_first_line_reads_as_received(forgelab_server, policy):
    lab = forgelab_server(policy=policy)
    send(lab, SHAPES[0])
    (copy,) = retrieved(lab)
    assert froms(copy) == froms(SHAPES[0])
    assert froms(copy)["lenient"][0][1:] == ("first", "phish.example")  # not swallowed by a header of ours


def test_strict_refuses_a_header_starting_with_a_folded_line(forgelab_server):
    lab = forgelab_server(policy="strict")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(lab, SHAPES[0])
    assert refused.value.smtp_code == 554 and refused.value.smtp_error.startswith(
        b"5.6.0 Malformed header: its first line starts with whitespace")
    (event,) = lab.recorder.wait_for("message.rejected")
    assert event["limit"] == "header_start" and event["deciding"] is None
    assert retrieved(lab) == []
