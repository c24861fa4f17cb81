"""Property tests of the sans-IO SMTP core: random commands, random splits of the byte stream.

Whatever the client sends and however TCP cuts it up, the core yields the same events
and the same reply bytes, and bad input is only ever a protocol error (a CommandError
event answered with a reply), never an exception.
"""
from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from forgelab.protocols.smtp import NEED_DATA, Reply, SmtpConnection, SmtpLimits, events as ev

from chunks import split
from smtp_helpers import OK

pytestmark = pytest.mark.timeout(120)
FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", 200)), deadline=None, suppress_health_check=[HealthCheck.too_slow])

RESPONSES = {
    **OK,
    ev.XClient: Reply(220, None, "you are someone else now"),
    ev.StartTls: Reply(454, "4.7.0", "TLS not available"),  # no handshake without a socket
    ev.Auth: Reply(334, None, ""),
    ev.AuthResponse: Reply(535, "5.7.8", "Authentication credentials invalid"),
}
EVENT_TYPES = tuple(RESPONSES) + (ev.CommandError,)

COMMANDS = [
    "HELO a.example", "EHLO b.example", "helo", "EHLO", "MAIL FROM:<a@shop.example>", "MAIL FROM:<>",
    "mail from <x@y.example> SIZE=100", "MAIL FROM:<a@b.example> SIZE=999999999", "MAIL FROM:<bad",
    "RCPT TO:<alice@corp.example>", "RCPT TO:<>", "rcpt to:bob@corp.example", "RCPT TO:<@a,@b:c@d.example>",
    "DATA", "DATA x", "RSET", "NOOP", "NOOP hi", "QUIT", "HELP", "HELP MAIL", "VRFY alice", "EXPN staff",
    "XCLIENT ADDR=192.0.2.1", "XCLIENT BOGUS=1", "STARTTLS", "AUTH PLAIN", "AUTH LOGIN",
    "AUTH PLAIN " + base64.b64encode(b"\0alice\0pw").decode(), "*", "=",
    "Subject: hi", "", ".", "..", ".hidden line", "\x00.\x00", "From: x@y", "BDAT 10 LAST",
]
ENDINGS = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""]

line_text = st.one_of(
    st.sampled_from(COMMANDS),
    st.text(max_size=40),
    st.builds(lambda c, n: c * n, st.sampled_from("xA.\x00é"), st.integers(400, 1500)),
)
line_bytes = st.one_of(
    st.builds(lambda t, e: t.encode("utf-8", "surrogatepass") + e, line_text, st.sampled_from(ENDINGS)),
    st.binary(max_size=60),
)
# Half the streams open a transaction first, so message text and its endings get fuzzed too.
TRANSACTION = b"EHLO x.example\r\nMAIL FROM:<a@shop.example>\r\nRCPT TO:<alice@corp.example>\r\nDATA\r\n"
streams = st.builds(lambda prefix, lines: prefix + b"".join(lines),
                    st.sampled_from([b"", TRANSACTION]), st.lists(line_bytes, max_size=40))


def drive(chunks: list[bytes], spool_threshold: int = 1 << 20, max_message_size: int = 300,
          **options) -> tuple[list, bytes]:
    """Feed chunks, answer every event; (events, every byte the server sent). Parts of a big
    message are kept and joined at its end, as a driver's spool does."""
    conn = SmtpConnection(SmtpLimits(max_message_size=max_message_size, max_errors=25, max_commands=60,
                                     spool_threshold=spool_threshold), **options)
    events, out, parts = [], bytearray(conn.send(Reply(220, None, "lab ESMTP"))), []
    for chunk in chunks + [b""]:
        conn.receive_data(chunk)
        while not conn.closed:
            event = conn.next_event()
            if event is NEED_DATA or isinstance(event, ev.ConnectionClosed):
                break
            if isinstance(event, ev.MessageText):
                assert event.data
                parts.append(event.data)
                continue
            if isinstance(event, ev.MessageEnd):
                event = conn.spooled_message(b"".join(parts) + event.last)
            if isinstance(event, (ev.Message, ev.CommandError)):
                parts.clear()
            assert isinstance(event, EVENT_TYPES), event
            events.append(event)
            reply = event.reply if isinstance(event, ev.CommandError) else RESPONSES[type(event)]
            out += conn.send(reply)
        if conn.closed:
            break
    return events, bytes(out)


OPTIONS = st.sampled_from([{}, {"end_of_data": "lenient"}, {"strict_addresses": False},
                           {"end_of_data": "lenient", "strict_addresses": False}])


@FUZZ
@given(data=streams, cuts=st.lists(st.integers(0, 10_000), max_size=12), options=OPTIONS)
def test_same_events_and_replies_whatever_the_split(data, cuts, options):
    whole = drive([data], **options)
    assert drive(split(data, cuts), **options) == whole


@FUZZ
@given(data=streams, cuts=st.lists(st.integers(0, 10_000), max_size=12), threshold=st.integers(1, 1200),
       options=OPTIONS)
def test_spooling_past_any_threshold_gives_the_same_events_and_replies(data, cuts, threshold, options):
    # A big message's text handed out in parts and joined at its end is the message whole.
    assert (drive(split(data, cuts), spool_threshold=threshold, max_message_size=3000, **options)
            == drive([data], max_message_size=3000, **options))


@FUZZ
@given(data=streams, options=OPTIONS)
def test_one_byte_at_a_time_is_the_same_as_all_at_once(data, options):
    assert drive([data[i:i + 1] for i in range(len(data))], **options) == drive([data], **options)


@FUZZ
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_random_bytes_are_only_ever_protocol_errors(data, cuts):
    events, out = drive(split(b"EHLO x\r\n" + data, cuts))
    for line in out.split(b"\r\n")[:-1]:  # every reply line is well formed
        assert line[:3].isdigit() and line[3:4] in (b" ", b"-"), line


@FUZZ
@given(data=streams)
def test_memory_stays_bounded(data):
    conn = SmtpConnection(SmtpLimits(max_message_size=300))
    conn.send(Reply(220, None, "hi"))
    conn.receive_data(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
    for _ in range(4):
        conn.send(RESPONSES[type(conn.next_event())])
    for _ in range(20):  # a client that never ends its message
        conn.receive_data(data + b"x" * 1000)
        event = conn.next_event()
        if event is not NEED_DATA:
            conn.send(event.reply if isinstance(event, ev.CommandError) else RESPONSES[type(event)])
            break
        assert len(conn._data) <= 300 + 2 + 8 + len(data) + 1000
