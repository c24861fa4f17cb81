"""The SMTP core without sockets: bytes in, events and reply bytes out."""
import pytest

from forgelab.protocols.smtp import SmtpConnection, SmtpLimits, State, events as ev
from forgelab.protocols.smtp.state import TRANSITIONS

from smtp_helpers import answer, codes, run

WORKSHEET = (b"HELO some.where.com\r\nMAIL FROM:<>\r\nRCPT TO:<alice@corp.example>\r\nDATA\r\n"
             b"From: womble@wimbledon.com\r\nTo: fred@flintstone.org\r\nSubject: Greetings\r\n"
             b"Date: Mon, 17 Jun 96 11:24 PDT\r\n\r\nHello!!\r\n.. Count the dots\r\n.\r\nQUIT\r\n")


def messages(events):
    return [e for e in events if isinstance(e, ev.Message)]


def test_worksheet_session_events_and_dot_unstuffing():
    events, out = run([WORKSHEET])
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Helo", "MailFrom", "RcptTo", "Data", "Message", "Quit"]
    assert events[1].address == ""
    (msg,) = messages(events)
    assert msg.raw.endswith(b"Hello!!\r\n. Count the dots\r\n")
    assert codes(out) == [220, 250, 250, 250, 354, 250, 221]


def test_every_split_of_the_stream_gives_the_same_events():
    expected, _ = run([WORKSHEET])
    for cut in range(1, len(WORKSHEET)):
        got, _ = run([WORKSHEET[:cut], WORKSHEET[cut:]])
        assert got == expected, f"split at {cut}"


def test_byte_by_byte_feed():
    expected, _ = run([WORKSHEET])
    got, _ = run([bytes([b]) for b in WORKSHEET])
    assert got == expected


@pytest.mark.parametrize("line, enhanced", [
    (b"MAIL FROM <>", None), (b"mail from:<>", None), (b"MAIL FROM: <bob@x.example>", None),
    (b"mail FROM:bob@x.example", None), (b"MAIL FROM:<@a.example,@b.example:bob@x.example>", None),
])
def test_mail_from_spellings_accepted(line, enhanced):
    events, out = run([b"HELO h\r\n" + line + b"\r\n"])
    assert isinstance(events[1], ev.MailFrom)
    assert codes(out)[-1] == 250


def test_source_route_is_kept_apart():
    events, _ = run([b"HELO h\r\nMAIL FROM:<@a.example,@b.example:bob@x.example>\r\n"])
    assert events[1].address == "bob@x.example" and events[1].route == "@a.example,@b.example"


@pytest.mark.parametrize("data, code, enhanced", [
    (b"MAIL FROM:<a@b.example>\r\n", 503, b"5.5.1"),
    (b"HELO h\r\nRCPT TO:<a@b.example>\r\n", 503, b"5.5.1"),
    (b"HELO h\r\nMAIL FROM:<>\r\nDATA\r\n", 554, b"5.5.1"),
    (b"HELO h\r\nMAIL FROM:<>\r\nMAIL FROM:<>\r\n", 503, b"5.5.1 Bad sequence of commands: sender already given"),
    (b"HELO h\r\nMAIL FROM:<a(b@c.example>\r\n", 501, b"5.1.7"),
    (b"HELO h\r\nMAIL FROM:<a@b.example\r\n", 501, b"5.1.7"),
    (b"HELO h\r\nMAIL FROM:<a@b.example> FOO=\x01\r\n", 501, b"5.5.4"),
    (b"HELO\r\n", 501, b"5.5.4"),
    (b"FROB x\r\n", 500, b"5.5.2"),
    (b"HELO a\x00b\r\n", 501, b"5.5.4"),
    (b"HELO \xff\xfe\r\n", 501, b"5.5.4"),
    (b"\r\n", 500, b"5.5.2"),
])
def test_errors_have_codes_and_enhanced_codes(data, code, enhanced):
    _, out = run([data])
    last = out.strip().split(b"\r\n")[-1]
    assert last.startswith(str(code).encode() + b" " + enhanced)


def test_every_reply_has_an_enhanced_code_except_greetings():
    _, out = run([b"HELO h\r\nNOOP\r\nRSET\r\nVRFY x\r\nFROB\r\nQUIT\r\n"])
    for line in out.decode().split("\r\n")[2:-1]:
        assert line[4:5].isdigit() and line[5] == ".", line


def test_command_line_over_512_octets_is_refused_and_session_goes_on():
    events, out = run([b"HELO " + b"a" * 600 + b"\r\nNOOP\r\n"])
    assert codes(out)[1] == 500 and codes(out)[-1] == 250


def test_ten_megabyte_line_without_newline_keeps_memory_bounded():
    conn = SmtpConnection()
    conn.send(__import__("forgelab.protocols.smtp", fromlist=["Reply"]).Reply(220, None, "hi"))
    for _ in range(10):
        conn.receive_data(b"x" * (1024 * 1024))
        assert conn.next_event() is ev.NEED_DATA
        assert len(conn._buffer) <= 1024 * 1024 + 600
    conn.receive_data(b"\r\nNOOP\r\n")
    first = conn.next_event()
    assert isinstance(first, ev.CommandError) and first.reply.code == 500


def test_text_line_over_1000_octets_refuses_message_and_stores_nothing():
    body = b"Subject: x\r\n\r\n" + b"y" * 1200 + b"\r\n.\r\nNOOP\r\n"
    events, out = run([b"HELO h\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\n" + body])
    assert not messages(events)
    assert codes(out)[-2] == 500 and codes(out)[-1] == 250


def test_message_over_size_is_552_and_discarded():
    conn = SmtpConnection(SmtpLimits(max_message_size=1000))
    chunks = [b"HELO h\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\n"] + [b"z" * 500 + b"\r\n"] * 50 + [b".\r\nNOOP\r\n"]
    events, out = run(chunks, conn)
    assert not messages(events)
    assert b"552 5.3.4" in out and codes(out)[-1] == 250
    assert len(conn._data) < 2000


def test_only_crlf_dot_crlf_ends_data_in_strict_mode():
    smuggle = b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<x@y.example>\r\nend\r\n.\r\n"
    events, _ = run([b"HELO h\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\n" + smuggle])
    (msg,) = messages(events)
    assert b"\n.\nMAIL FROM" in msg.raw


@pytest.mark.parametrize("ending", [b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n",
                                    b"\r\n.\r", b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"])
def test_lenient_mode_takes_each_smuggling_ending_as_end_of_data(ending):
    conn = SmtpConnection(end_of_data="lenient")
    data = (b"HELO h\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\nSubject: one\r\n\r\nhi" + ending
            + b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<a@b.example>\r\nDATA\r\nSubject: two\r\n\r\nhidden\r\n.\r\n")
    events, _ = run([data], conn)
    found = messages(events)
    assert len(found) == 2 and found[0].ending == ending
    assert b"hidden" in found[1].raw


def test_pipelined_commands_answered_in_order_and_data_only_after_354():
    data = b"EHLO h\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e@d.example>\r\nDATA\r\nSubject: p\r\n\r\nx\r\n.\r\nQUIT\r\n"
    events, out = run([data])
    assert [type(e).__name__ for e in events] == ["Ehlo", "MailFrom", "RcptTo", "RcptTo", "Data", "Message", "Quit"]
    assert codes(out) == [220, 250, 250, 250, 250, 354, 250, 221]


def test_refused_rcpt_keeps_transaction_and_refused_data_returns_to_ready():
    def respond(event):
        if isinstance(event, ev.RcptTo) and event.address.startswith("bad"):
            from forgelab.protocols.smtp import Reply
            return Reply(550, "5.1.1", "no")
        from smtp_helpers import answer
        return answer(event)
    events, out = run([b"HELO h\r\nMAIL FROM:<>\r\nRCPT TO:<bad@x.example>\r\nDATA\r\nRCPT TO:<ok@x.example>\r\nDATA\r\nhi\r\n.\r\nMAIL FROM:<>\r\n"], respond=respond)
    assert codes(out) == [220, 250, 250, 550, 554, 250, 354, 250, 250]


def test_several_messages_per_session():
    one = b"MAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\nSubject: n\r\n\r\nbody\r\n.\r\n"
    events, _ = run([b"HELO h\r\n" + one * 3 + b"QUIT\r\n"])
    assert len(messages(events)) == 3


def test_too_many_errors_closes_with_421():
    conn = SmtpConnection(SmtpLimits(max_errors=3))
    _, out = run([b"FROB\r\n" * 10], conn)
    assert out.rstrip().endswith(b"421 4.7.0 Too many errors in this session, closing")
    assert conn.closed and codes(out).count(500) == 4


def test_rset_and_helo_reset_the_transaction():
    _, out = run([b"HELO h\r\nMAIL FROM:<>\r\nRSET\r\nRCPT TO:<a@b.example>\r\nMAIL FROM:<>\r\nHELO again\r\nRCPT TO:<a@b.example>\r\n"])
    assert codes(out) == [220, 250, 250, 250, 503, 250, 250, 503]


def test_verbs_are_case_insensitive():
    events, _ = run([b"helo h\r\nmAiL fRoM:<>\r\nrcpt to:<a@b.example>\r\nquit\r\n"])
    assert [type(e).__name__ for e in events] == ["Helo", "MailFrom", "RcptTo", "Quit"]


def test_state_table_is_the_only_place_for_sequencing():
    # Every event type that moves state has an entry; DATA is reachable only from RCPT.
    assert {s for (s, t) in TRANSITIONS if t is ev.Data} == {State.RCPT}
    assert {s for (s, t) in TRANSITIONS if t is ev.MailFrom} == {State.READY}


def test_eof_mid_message_yields_no_message():
    events, _ = run([b"HELO h\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\npartial"])
    assert not messages(events)


def test_message_keeps_the_text_as_sent_before_unstuffing():
    events, _ = run([b"HELO h\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\nx\r\n..y\r\n.\nz\r\n.\r\n"])
    (msg,) = messages(events)
    assert msg.raw == b"x\r\n.y\r\n\nz\r\n" and msg.wire == b"x\r\n..y\r\n.\nz\r\n"
    events, _ = run([b"HELO h\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\nplain\r\n.\r\n"])
    (msg,) = messages(events)
    assert msg.wire is msg.raw


def test_lf_only_client_gets_521_and_close_instead_of_waiting_forever():
    conn = SmtpConnection()
    events, out = run([b"HELO h\nMAIL FROM:<>\nRCPT TO:<a@b.example>\nDATA\n", b"Subject: x\n\n.. dots\n.\n", b"QUIT\n"], conn)
    assert not messages(events) and conn.closed
    assert out.split(b"\r\n")[-2].startswith(b"521 5.5.2 Bare <LF> line endings")
    assert b"221" not in out  # nothing after the bare <LF>.<LF> is read as a command


def test_lf_dot_lf_inside_a_crlf_message_is_text_not_an_end():
    events, _ = run([b"HELO h\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\nSubject: x\r\n\r\nhi\n.\nstill\r\n.\r\n"])
    (msg,) = messages(events)
    assert msg.raw.endswith(b"hi\n.\nstill\r\n")


def test_lenient_mode_unstuffs_lf_lines_and_keeps_their_endings():
    conn = SmtpConnection(end_of_data="lenient")
    events, _ = run([b"HELO h\nMAIL FROM:<>\nRCPT TO:<a@b.example>\nDATA\nSubject: x\n\n.. Count the dots\n.\n"], conn)
    (msg,) = messages(events)
    assert msg.raw == b"Subject: x\n\n. Count the dots\n"


@pytest.mark.parametrize("params, text", [(b"SIZE=big", b"501 5.5.4 SIZE needs a number"), (b"SIZE", b"501 5.5.4 SIZE"),
                                          (b"BODY=BINARYMIME", b"501 5.5.4 BODY must be")])
def test_mail_parameter_syntax_is_checked_by_the_core(params, text):
    _, out = run([b"HELO h\r\nMAIL FROM:<a@b.example> " + params + b"\r\n"])
    assert out.split(b"\r\n")[2].startswith(text)


def test_starttls_and_auth_succeed_once_per_session_by_the_table():
    from forgelab.protocols.smtp import Reply
    from forgelab.protocols.smtp.state import ONCE_PER_SESSION

    def respond(event):
        if isinstance(event, ev.StartTls):
            return Reply(220, "2.0.0", "go ahead")
        if isinstance(event, ev.Auth):
            return Reply(235, "2.7.0", "welcome")
        return answer(event)

    events, out = run([b"EHLO h\r\nAUTH PLAIN AGFsaWNlAHg=\r\nAUTH PLAIN AGFsaWNlAHg=\r\nSTARTTLS\r\n"
                       b"EHLO h\r\nSTARTTLS\r\nAUTH PLAIN AGFsaWNlAHg=\r\nAUTH PLAIN AGFsaWNlAHg=\r\nQUIT\r\n"],
                      respond=respond)
    assert codes(out) == [220, 250, 235, 503, 220, 250, 503, 235, 503, 221]
    refused = [e for e in events if isinstance(e, ev.CommandError)]
    assert [e.reply.lines[0] for e in refused] == [ONCE_PER_SESSION[ev.Auth], ONCE_PER_SESSION[ev.StartTls],
                                                   ONCE_PER_SESSION[ev.Auth]]
    # STARTTLS starts over (RFC 3207 4.2): the login before it is forgotten, so AUTH works once more.


def test_a_refused_starttls_or_login_may_be_tried_again():
    from forgelab.protocols.smtp import Reply

    events, out = run([b"EHLO h\r\nSTARTTLS\r\nSTARTTLS\r\nAUTH PLAIN AGFsaWNlAHg=\r\nAUTH PLAIN AGFsaWNlAHg=\r\n"],
                      respond=lambda e: Reply(454, "4.7.0", "not now") if isinstance(e, (ev.StartTls, ev.Auth))
                      else answer(e))
    assert codes(out) == [220, 250, 454, 454, 454, 454]


@pytest.mark.parametrize("split", [False, True])
def test_a_too_long_line_after_a_refused_auth_is_not_shown(split):
    data = b"AUTH PLAIN\r\n" + b"c2VjcmV0" * 80 + b"\r\nHELO h\r\n"
    events, out = run([bytes([b]) for b in data] if split else [data])
    assert [getattr(e, "line", None) for e in events[:2]] == ["AUTH PLAIN", "<AUTH response ****>"]
    assert isinstance(events[2], ev.Helo)


# -- big messages: text past the spool threshold is handed out in parts ---------------------------

START = b"HELO h\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\n"


def spooling_run(chunks, limits, end_of_data="strict", most_held=None):
    """Feed chunks as a driver that spools does: keep the MessageText parts, give them back at the
    MessageEnd. (events with each spooled message whole, reply bytes, the parts, most octets held)."""
    from forgelab.protocols.smtp import NEED_DATA, Reply

    conn = SmtpConnection(limits, end_of_data=end_of_data)
    events, parts, out, held = [], [], bytearray(conn.send(Reply(220, None, "lab ESMTP"))), 0
    for chunk in list(chunks) + [b""]:
        conn.receive_data(chunk)
        while not conn.closed:
            event = conn.next_event()
            held = max(held, len(conn._data) + len(conn._buffer))
            if event is NEED_DATA or isinstance(event, ev.ConnectionClosed):
                break
            if isinstance(event, ev.MessageText):
                parts.append(event.data)
                continue
            if isinstance(event, ev.MessageEnd):
                event = conn.spooled_message(b"".join(parts) + event.last)  # one message per run here
            events.append(event)
            out += conn.send(answer(event))
    return events, bytes(out), parts, held


def big_text(lines: int) -> bytes:
    # Dot-stuffed lines (the dot goes), bare LFs and CRs (kept), lines of every length up to 998.
    return b"".join(b"..dot %d\r\n" % i if i % 7 == 0 else b"bare %d\n" % i if i % 11 == 0 else
                    b"lone CR\r" if i % 13 == 0 else b"x" * (i % 990) + b"\r\n" for i in range(lines))


@pytest.mark.parametrize("end_of_data", ["strict", "lenient"])
@pytest.mark.parametrize("piece", [997, 4096, 20_000])
def test_text_past_the_threshold_is_handed_out_and_joins_into_the_same_message(end_of_data, piece):
    data = START + big_text(600) + b".\r\nNOOP\r\n"
    chunks = [data[i:i + piece] for i in range(0, len(data), piece)]
    whole, whole_out = run([data], SmtpConnection(end_of_data=end_of_data))
    events, out, parts, held = spooling_run(chunks, SmtpLimits(spool_threshold=8192), end_of_data)
    assert len(parts) >= 5 and events == whole and out == whole_out
    (message,) = messages(events)
    assert message.raw.startswith(b".dot 0\r\n") and message.wire.startswith(b"..dot 0\r\n")
    assert b"".join(parts) == message.wire[:len(b"".join(parts))]
    assert held <= 8192 + piece + 16  # the core never holds much more than the threshold


def test_a_big_message_over_the_size_limit_is_552_and_no_more_is_handed_out_past_it():
    limits = SmtpLimits(max_message_size=50_000, spool_threshold=8192)
    events, out, parts, held = spooling_run([START] + [b"z" * 500 + b"\r\n"] * 400 + [b".\r\nNOOP\r\n"], limits)
    assert not messages(events) and b"552 5.3.4" in out and codes(out)[-1] == 250
    assert 0 < sum(map(len, parts)) <= 50_000 and held <= 8192 + 600


def test_a_too_long_line_in_a_big_message_is_500_and_nothing_more_is_handed_out():
    limits = SmtpLimits(spool_threshold=8192)
    lines = [b"ok\r\n"] * 5000 + [b"y" * 100_000, b"\r\n"] + [b"more\r\n"] * 5000
    events, out, parts, held = spooling_run([START] + lines + [b".\r\nNOOP\r\n"], limits)
    assert not messages(events) and b"500 5.5.2 A text line is longer" in out and codes(out)[-1] == 250
    assert sum(map(len, parts)) < 5000 * 4 and held <= 8192 + 100_000
    # One line as long as the threshold, in one piece: dropped as it comes too.
    events, out, parts, held = spooling_run([START, b"y" * 10_000_000 + b"\r\n.\r\n"], limits)
    assert b"500 5.5.2" in out and not parts


def test_spooled_message_takes_only_the_whole_text_and_a_refused_end_returns_to_ready():
    from forgelab.protocols.smtp import NEED_DATA, Reply

    conn = SmtpConnection(SmtpLimits(spool_threshold=4096))
    conn.send(Reply(220, None, "hi"))
    conn.receive_data(START)
    for _ in range(4):
        conn.send(answer(conn.next_event()))
    sizes = []
    for piece in [b"line\r\n" * 500] * 4 + [b".\r\n"]:
        conn.receive_data(piece)
        while (event := conn.next_event()) is not NEED_DATA and not isinstance(event, ev.MessageEnd):
            assert isinstance(event, ev.MessageText)
            sizes.append(len(event.data))
    assert len(sizes) >= 2 and sum(sizes) + len(event.last) == event.size == 6 * 2000
    with pytest.raises(ValueError):
        conn.spooled_message(b"line\r\n")
    conn.send(Reply(452, "4.3.1", "no room"))  # a driver that could not keep the text
    assert conn.state is State.READY
