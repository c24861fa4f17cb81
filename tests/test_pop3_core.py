"""The POP3 core without sockets: bytes in, events and reply bytes out; then the service."""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forgelab.lab.directory import parse_directory
from forgelab.protocols.pop3 import (NEED_DATA, TABLE, LocalProtocolError, LoginThrottle, Pop3Connection, Pop3Reply, Pop3Service, State, printable)
from forgelab.protocols.pop3 import events as ev
from forgelab.protocols.pop3.wire import dot_stuff, to_crlf, top
from forgelab.store import MailStore

OK = Pop3Reply.ok()
ERR = Pop3Reply.err("no")


def events_of(conn: Pop3Connection, reply: Pop3Reply = OK) -> list:
    """Drain every event, answering each with ``reply``."""
    out = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA or isinstance(event, ev.ConnectionClosed):
            out.append(event)
            return out
        out.append(event)
        conn.send(event.reply if isinstance(event, ev.Rejected) else reply)


def greeted() -> Pop3Connection:
    conn = Pop3Connection()
    assert conn.send(Pop3Reply.ok("ready <1.2@h>")) == b"+OK ready <1.2@h>\r\n"
    assert conn.state is State.AUTHORIZATION
    return conn


def in_state(state: State) -> Pop3Connection:
    conn = greeted()
    script = {State.AUTHORIZATION: b"", State.AUTHORIZATION_PASS: b"USER alice\r\n",
              State.TRANSACTION: b"USER alice\r\nPASS secret\r\n"}[state]
    if script:  # b"" would mean EOF
        conn.receive_data(script)
        events_of(conn)
    assert conn.state is state
    return conn


# A well-formed line for every command.
LINES = {"USER": b"USER alice", "PASS": b"PASS secret", "APOP": b"APOP alice " + b"a" * 32,
         "STAT": b"STAT", "LIST": b"LIST 1", "RETR": b"RETR 1", "DELE": b"DELE 1", "NOOP": b"NOOP",
         "RSET": b"RSET", "TOP": b"TOP 1 2", "UIDL": b"UIDL", "CAPA": b"CAPA", "QUIT": b"QUIT"}
EVENT_TYPES = {"USER": ev.User, "PASS": ev.Pass, "APOP": ev.Apop, "STAT": ev.Stat, "LIST": ev.List,
               "RETR": ev.Retr, "DELE": ev.Dele, "NOOP": ev.Noop, "RSET": ev.Rset, "TOP": ev.Top,
               "UIDL": ev.Uidl, "CAPA": ev.Capa, "QUIT": ev.Quit}
LIVE_STATES = [State.AUTHORIZATION, State.AUTHORIZATION_PASS, State.TRANSACTION]


@pytest.mark.parametrize("state", LIVE_STATES, ids=lambda s: s.value)
@pytest.mark.parametrize("verb", list(LINES))
@pytest.mark.parametrize("positive", [True, False], ids=["ok", "err"])
def test_every_state_and_command_follows_the_table(state, verb, positive):
    conn = in_state(state)
    conn.receive_data(LINES[verb] + b"\r\n")
    event = conn.next_event()
    step = TABLE[state].get(verb)
    if step is None:
        assert isinstance(event, ev.Rejected)
        assert conn.send(event.reply).startswith(b"-ERR ")
        assert conn.state is state
        return
    assert type(event) is EVENT_TYPES[verb]
    assert conn.state is (step.during or state)
    conn.send(Pop3Reply.ok() if positive else Pop3Reply.err("no"))
    assert conn.state is (step.ok if positive else step.err)


def test_after_quit_the_session_is_over():
    for state in LIVE_STATES:
        conn = in_state(state)
        conn.receive_data(b"QUIT\r\nSTAT\r\n")
        quit_ = conn.next_event()
        assert quit_ == ev.Quit(update=state is State.TRANSACTION)
        assert conn.state is (State.UPDATE if state is State.TRANSACTION else state)
        conn.send(OK)
        assert conn.state is State.CLOSED
        assert isinstance(conn.next_event(), ev.ConnectionClosed)


def test_verbs_are_case_insensitive_but_only_in_ascii():
    conn = in_state(State.TRANSACTION)
    conn.receive_data(b"stat\r\nStAt\r\nlist 2\r\nuidl\r\n\xc5\xbftat\r\n")
    got = events_of(conn)
    assert got[:4] == [ev.Stat(), ev.Stat(), ev.List(2), ev.Uidl()]
    assert isinstance(got[4], ev.Rejected)  # U+017F LATIN SMALL LETTER LONG S upper-cases to S


WORKSHEET = (b"USER alice\r\nPASS rabbit hole\r\nSTAT\r\nRETR 1000\r\nRETR 1\r\nhelp\r\n"
             b"DELE 1\r\nTOP 1 0\r\nquit\r\n")
WORKSHEET_EVENTS = [ev.User("alice"), ev.Pass("rabbit hole"), ev.Stat(), ev.Retr(1000), ev.Retr(1), "reject",
                    ev.Dele(1), ev.Top(1, 0), ev.Quit(update=True)]


def _run(chunks) -> list:
    conn = greeted()
    got = []
    for chunk in filter(None, chunks):  # b"" would mean EOF
        conn.receive_data(chunk)
        got += [e for e in events_of(conn) if isinstance(e, ev.Event) and not isinstance(e, ev.ConnectionClosed)]
    return ["reject" if isinstance(e, ev.Rejected) else e for e in got]


def test_every_two_way_split_of_the_input_gives_the_same_events():
    for cut in range(len(WORKSHEET) + 1):
        assert _run([WORKSHEET[:cut], WORKSHEET[cut:]]) == WORKSHEET_EVENTS, cut


def test_byte_by_byte_and_bare_lf_input_give_the_same_events():
    assert _run([bytes([b]) for b in WORKSHEET]) == WORKSHEET_EVENTS
    assert _run([WORKSHEET.replace(b"\r\n", b"\n")]) == WORKSHEET_EVENTS


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(WORKSHEET)), max_size=6))
def test_any_split_of_the_input_gives_the_same_events(cuts):
    cuts = sorted(cuts)
    chunks = [WORKSHEET[a:b] for a, b in zip([0] + cuts, cuts + [len(WORKSHEET)])]
    assert _run(chunks) == WORKSHEET_EVENTS


def test_pass_is_masked_in_the_transcript_line_and_keeps_its_spaces():
    conn = in_state(State.AUTHORIZATION_PASS)
    conn.receive_data(b"pass  two words \r\n")
    event = conn.next_event()
    assert event.password == " two words "
    assert event.line == "pass ****"
    assert "two" not in repr(event)


def test_transcript_lines_escape_control_characters_and_bad_bytes():
    conn = greeted()
    conn.receive_data(b"USER al\x1b[31mice\xff\r\n")
    event = conn.next_event()
    assert event.line == "USER al\\x1b[31mice\\xff"
    assert printable("a\x00b\u202e") == "a\\x00b\\u202e"


@pytest.mark.parametrize("line", [b"RETR", b"RETR x", b"RETR -1", b"RETR 1 2", b"LIST 1 2", b"TOP 1",
                                  b"TOP 1 x", b"STAT now", b"DELE", b"UIDL \xd9\xa3", b"NOOP 1", b"RSET x"])
def test_bad_arguments_are_refused_and_the_session_goes_on(line):
    conn = in_state(State.TRANSACTION)
    conn.receive_data(line + b"\r\nNOOP\r\n")
    event = conn.next_event()
    assert isinstance(event, ev.Rejected)
    assert conn.send(event.reply).startswith(b"-ERR ")
    assert conn.state is State.TRANSACTION
    assert conn.next_event() == ev.Noop()


@pytest.mark.parametrize("line", [b"USER", b"USER a b", b"APOP alice", b"APOP alice xyz", b"CAPA x"])
def test_bad_arguments_before_login_are_refused(line):
    conn = greeted()
    conn.receive_data(line + b"\r\n")
    event = conn.next_event()
    assert isinstance(event, ev.Rejected) and not event.reply.positive
    conn.send(event.reply)
    assert conn.state is State.AUTHORIZATION


def test_help_and_unknown_commands_answer_err_with_the_commands_of_the_state():
    conn = greeted()
    conn.receive_data(b"HELP\r\nXYZZY\r\n\r\nSTAT\r\nPASS x\r\n")
    replies = [e.reply.to_bytes() for e in events_of(conn)[:-1]]
    assert replies[0].startswith(b"-ERR POP3 has no HELP command (RFC 1939); commands here: "
                                 b"USER name, PASS password, APOP name digest, CAPA")
    assert replies[0].endswith(b", QUIT\r\n") and b"STAT" not in replies[0]
    assert replies[1].startswith(b"-ERR unknown command; commands here: USER name")
    assert replies[2].startswith(b"-ERR empty command")
    assert replies[3].startswith(b"-ERR STAT needs a login first")
    assert replies[4] == b"-ERR give USER first, then PASS\r\n"
    conn = in_state(State.TRANSACTION)
    conn.receive_data(b"help\r\nUSER bob\r\n")
    got = events_of(conn)
    assert b"RETR msg, DELE msg" in got[0].reply.to_bytes()
    assert got[1].reply.text.startswith("USER is not allowed after login")


def test_a_line_of_255_octets_is_a_command_and_256_is_too_long():
    conn = greeted()
    conn.receive_data(b"USER " + b"a" * 248 + b"\r\n")  # 255 with CRLF
    assert isinstance(conn.next_event(), ev.User)
    conn.send(OK)
    conn.receive_data(b"USER " + b"a" * 249 + b"\r\nCAPA\r\n")
    event = conn.next_event()
    assert isinstance(event, ev.Rejected) and "too long" in event.reply.text
    conn.send(event.reply)
    assert conn.next_event() == ev.Capa()


def test_a_ten_megabyte_line_is_discarded_as_it_arrives_then_refused():
    conn = greeted()
    chunk = b"A" * 65536
    for _ in range(160):  # 10 MiB, no newline
        conn.receive_data(chunk)
        assert conn.buffered_bytes <= conn.max_line
        assert conn.next_event() is NEED_DATA
    conn.receive_data(b"AAAA\r\nNOOP\r\nCAPA\r\n")
    event = conn.next_event()
    assert isinstance(event, ev.Rejected) and event.reply.text.startswith("line too long")
    conn.send(event.reply)
    assert isinstance(conn.next_event(), ev.Rejected)  # NOOP: not before login
    conn.send(ERR)
    assert conn.next_event() == ev.Capa()


def test_a_ten_megabyte_line_in_one_chunk_is_not_kept():
    conn = greeted()
    conn.receive_data(b"B" * (10 * 1024 * 1024))
    assert conn.buffered_bytes == 0
    conn.receive_data(b"\r\nCAPA\r\n")
    assert isinstance(conn.next_event(), ev.Rejected)


def test_eof_ends_the_session_without_update_and_drops_a_partial_line():
    conn = in_state(State.TRANSACTION)
    conn.receive_data(b"DELE 1\r\nQUI")
    assert conn.next_event() == ev.Dele(1)
    conn.send(OK)
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ev.ConnectionClosed)
    assert conn.state is State.CLOSED


def test_the_core_refuses_to_be_driven_out_of_order():
    conn = Pop3Connection()
    with pytest.raises(LocalProtocolError):
        conn.next_event()  # greeting not sent yet
    conn.send(OK)
    with pytest.raises(LocalProtocolError):
        conn.send(OK)  # nothing to answer
    conn.receive_data(b"CAPA\r\nCAPA\r\n")
    conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.next_event()  # the first CAPA is not answered


def test_a_negative_greeting_closes_and_abort_closes():
    conn = Pop3Connection()
    assert conn.send(Pop3Reply.err("[SYS/TEMP] busy")) == b"-ERR [SYS/TEMP] busy\r\n"
    assert conn.state is State.CLOSED
    conn = in_state(State.TRANSACTION)
    assert conn.abort(Pop3Reply.err("idle timeout")) == b"-ERR idle timeout\r\n"
    assert conn.state is State.CLOSED


# -- replies and the wire form ------------------------------------------------------------

def test_multi_line_replies_are_byte_stuffed_and_terminated():
    reply = Pop3Reply.ok("4 octets", body=b".a\r\n..b\nc\r\n.\r\nd")
    assert reply.to_bytes() == b"+OK 4 octets\r\n..a\r\n...b\r\nc\r\n..\r\nd\r\n.\r\n"
    assert Pop3Reply.ok("empty", body=b"").to_bytes() == b"+OK empty\r\n.\r\n"
    assert Pop3Reply.listing("list", ["1 10", "2 20"]).to_bytes() == b"+OK list\r\n1 10\r\n2 20\r\n.\r\n"
    # a negative reply never carries a body; reply text never breaks the framing
    assert Pop3Reply(False, "x", b"body").to_bytes() == b"-ERR x\r\n"
    assert Pop3Reply.err("a\r\n+OK b").to_bytes() == b"-ERR a\\r\\n+OK b\r\n"


def _client_reads(data: bytes) -> list[bytes]:
    """What poplib does with a multi-line response: lines up to ".", dots unstuffed."""
    lines = data.split(b"\n")
    out = []
    for line in lines:
        line = line.removesuffix(b"\r")
        if line == b".":
            return out
        out.append(line[1:] if line.startswith(b"..") else line)
    raise AssertionError("no terminator")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"x", b".."])).map(b"".join))
def test_stuffing_round_trips_and_the_body_never_ends_early(body):
    stuffed = dot_stuff(body)
    assert stuffed.endswith(b".\r\n")
    assert _client_reads(stuffed) == to_crlf(body).split(b"\r\n")[:-1]
    assert stuffed.count(b"\n.\r\n") + stuffed.startswith(b".\r\n") == 1  # the terminator only


def test_top_keeps_the_header_and_n_body_lines():
    msg = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n"
    assert top(msg, 0) == b"A: 1\r\nB: 2\r\n\r\n"
    assert top(msg, 2) == b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n"
    assert top(msg, 99) == msg
    assert top(b"A: 1\nB: 2\n", 3) == b"A: 1\r\nB: 2\r\n"
    assert top(b"\r\nbody\r\nmore\r\n", 1) == b"\r\nbody\r\n"


# -- the service: bytes in, bytes out, real store and directory ------------------------

DIRECTORY = {"domains": ["corp.example"],
             "users": {"alice": {"name": "Alice Liddell", "password": "rabbit-hole"},
                       "bob": {"name": "Bob", "password_hash": "scrypt$00$00"}}}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(tmp_path):
    store = MailStore(tmp_path / "mail")
    directory = parse_directory(DIRECTORY)
    store.deliver("alice", b"Subject: one\r\n\r\n.hidden dot\r\n")
    store.deliver("alice", b"Subject: two\r\n\r\nsecond\r\n")
    return store, directory


class Session:
    """A Pop3Connection and a Pop3Service joined by bytes, as the driver joins them."""

    def __init__(self, store, directory, **kw):
        self.conn = Pop3Connection()
        self.service = Pop3Service(store, directory, **kw)
        self.greeting = self.conn.send(self.service.greeting())

    def __call__(self, data: bytes) -> bytes:
        self.conn.receive_data(data)
        out = b""
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA or isinstance(event, ev.ConnectionClosed):
                return out
            out += self.conn.send(self.service.handle(event))


def test_service_answers_the_worksheet(world):
    store, directory = world
    s = Session(store, directory)
    assert s(b"USER alice\r\n") == b"+OK send PASS\r\n"
    assert s(b"PASS rabbit-hole\r\n") == b"+OK alice's maildrop has 2 messages (53 octets)\r\n"
    assert s(b"STAT\r\n") == b"+OK 2 53\r\n"
    assert s(b"RETR 1000\r\n") == b"-ERR no such message\r\n"
    assert s(b"RETR 1\r\n") == b"+OK 29 octets\r\nSubject: one\r\n\r\n..hidden dot\r\n.\r\n"
    assert s(b"LIST\r\n") == b"+OK 2 messages (53 octets)\r\n1 29\r\n2 24\r\n.\r\n"
    assert s(b"TOP 2 0\r\n") == b"+OK top of message follows\r\nSubject: two\r\n\r\n.\r\n"
    assert s(b"DELE 1\r\n") == b"+OK message 1 deleted\r\n"
    assert s(b"RETR 1\r\n") == b"-ERR message 1 already deleted\r\n"
    assert s(b"LIST 1\r\n") == b"-ERR message 1 already deleted\r\n"
    assert s(b"STAT\r\nLIST\r\n") == b"+OK 1 24\r\n+OK 1 message (24 octets)\r\n2 24\r\n.\r\n"
    assert s(b"NOOP\r\n") == b"+OK\r\n"
    uid2 = s(b"UIDL 2\r\n")
    assert uid2.startswith(b"+OK 2 ") and len(uid2) < 80
    assert s(b"QUIT\r\n") == b"+OK forgelab POP3 server signing off (1 deleted, 1 left)\r\n"
    assert [store.read("alice", "inbox", k) for k, _ in store.list("alice")] == [b"Subject: two\r\n\r\nsecond\r\n"]


def test_service_rset_and_a_session_without_quit_delete_nothing(world):
    store, directory = world
    s = Session(store, directory)
    s(b"USER alice\r\nPASS rabbit-hole\r\nDELE 1\r\nDELE 2\r\n")
    assert s(b"STAT\r\n") == b"+OK 0 0\r\n"
    assert s(b"RSET\r\n") == b"+OK maildrop has 2 messages (53 octets)\r\n"
    s(b"DELE 2\r\n")
    s.service.close()  # connection dropped
    assert len(store.list("alice")) == 2
    s = Session(store, directory)
    s(b"USER alice\r\nPASS rabbit-hole\r\n")
    assert s(b"QUIT\r\n") == b"+OK forgelab POP3 server signing off (0 deleted, 2 left)\r\n"


def test_wrong_user_and_wrong_password_look_the_same(world):
    store, directory = world
    answers = set()
    for user, password in [(b"alice", b"wrong"), (b"mallory", b"wrong"), (b"bob", b"x"), (b"../etc", b"x")]:
        s = Session(store, directory)
        answers.add(s(b"USER " + user + b"\r\nPASS " + password + b"\r\n"))
    assert answers == {b"+OK send PASS\r\n-ERR [AUTH] invalid user name or password\r\n"}


def test_a_locked_maildrop_answers_in_use(world):
    store, directory = world
    first = Session(store, directory)
    first(b"USER alice\r\nPASS rabbit-hole\r\n")
    second = Session(store, directory)
    assert second(b"USER alice\r\nPASS rabbit-hole\r\n").endswith(b"-ERR [IN-USE] maildrop locked\r\n")
    assert second.conn.state is State.AUTHORIZATION
    first(b"QUIT\r\n")
    assert b"maildrop has 2" in second(b"USER alice\r\nPASS rabbit-hole\r\n")


def test_apop_uses_the_greeting_timestamp(world):
    store, directory = world
    s = Session(store, directory, hostname="mx.corp.example")
    stamp = s.greeting.decode().split()[-1]
    assert stamp.startswith("<") and stamp.endswith("@mx.corp.example>")
    wrong = hashlib.md5("<1.1@x>rabbit-hole".encode()).hexdigest()
    assert s(f"APOP alice {wrong}\r\n".encode()) == b"-ERR [AUTH] invalid user name or password\r\n"
    right = hashlib.md5(f"{stamp}rabbit-hole".encode()).hexdigest()
    assert s(f"APOP alice {right}\r\n".encode()).startswith(b"+OK alice's maildrop has 2")
    assert Session(store, directory).greeting != s.greeting  # a fresh timestamp each session


def test_failed_logins_on_a_user_are_slowed_then_refused_for_a_while(world):
    store, directory = world
    clock, slept = Clock(), []
    throttle = LoginThrottle(free_failures=3, delay=1.5, max_delay=4, clock=clock)
    s = Session(store, directory, throttle=throttle, sleep=slept.append, peer_ip="127.0.0.9")
    for _ in range(5):
        assert s(b"USER alice\r\nPASS nope\r\n").endswith(b"[AUTH] invalid user name or password\r\n")
    assert slept == [1.5]  # the clock stood still: the 5th waited for the slot after the 4th failure
    locked = s(b"USER alice\r\nPASS rabbit-hole\r\n")  # its slot is 1.5 + 3 s away: over max_delay
    assert locked.endswith(b"-ERR [SYS/TEMP] too many failed logins, try later\r\n")
    other = Session(store, directory, throttle=throttle, sleep=slept.append, peer_ip="127.0.0.10")
    assert b"+OK alice's maildrop" in other(b"USER alice\r\nPASS rabbit-hole\r\n")  # per address + user
    other(b"QUIT\r\n")
    clock.now += 61
    assert b"+OK alice's maildrop" in s(b"USER alice\r\nPASS rabbit-hole\r\n")


def test_a_good_login_forgets_earlier_failures(world):
    store, directory = world
    slept = []
    throttle = LoginThrottle(free_failures=2, delay=1.0, clock=Clock())
    for _ in range(3):
        s = Session(store, directory, throttle=throttle, sleep=slept.append)
        s(b"USER alice\r\nPASS nope\r\n")
        s = Session(store, directory, throttle=throttle, sleep=slept.append)
        assert b"+OK alice" in s(b"USER alice\r\nPASS nope\r\nUSER alice\r\nPASS rabbit-hole\r\n")
        s(b"QUIT\r\n")
    assert slept == []


def test_capa_lists_the_capabilities(world):
    s = Session(*world)
    lines = s(b"CAPA\r\n").split(b"\r\n")
    assert lines[0] == b"+OK capability list follows"
    assert {b"TOP", b"UIDL", b"USER", b"PIPELINING", b"RESP-CODES", b"AUTH-RESP-CODE"} <= set(lines)
    assert lines[-2:] == [b".", b""]


@pytest.mark.parametrize("typed", [b" PASS secret\r\n", b"pass\tsecret\r\n", b"PASS  secret\r\n"])
def test_password_lines_are_masked_however_mistyped(typed):
    from forgelab.protocols.pop3 import Pop3Connection
    from forgelab.protocols.pop3.replies import Pop3Reply

    conn = Pop3Connection()
    conn.send(Pop3Reply.ok("hi"))
    conn.receive_data(typed)
    event = conn.next_event()
    assert "secret" not in event.line and "****" in event.line


def test_a_negative_message_number_gets_a_hint_not_a_riddle():
    from forgelab.protocols.pop3.commands import CommandError, parse

    with pytest.raises(CommandError) as bad:
        parse("RETR", "-1")
    assert bad.value.reply.text == "RETR: message number must be a number written in digits, such as RETR 1"


def test_stls_succeeds_once_per_session_by_the_table():
    conn = greeted()
    conn.receive_data(b"STLS\r\nSTLS\r\n")
    first = conn.next_event()
    assert isinstance(first, ev.Stls) and conn.send(ERR) == b"-ERR no\r\n"  # refused: may be tried again
    second = conn.next_event()
    assert isinstance(second, ev.Stls) and conn.send(OK) == b"+OK\r\n"
    conn.receive_data(b"STLS\r\nUSER alice\r\n")
    again, user = events_of(conn)[:2]
    assert isinstance(again, ev.Rejected) and again.reply.to_bytes() == b"-ERR TLS is already active\r\n"
    assert isinstance(user, ev.User) and conn.state is State.AUTHORIZATION_PASS


@pytest.mark.parametrize("limits, said", [({"max_errors": 2}, "too many errors"),
                                          ({"max_commands": 3}, "too many commands")])
def test_the_core_closes_a_session_over_its_error_or_command_limit(limits, said):
    conn = Pop3Connection(**limits)
    conn.send(Pop3Reply.ok("ready"))  # the banner answers no command and counts for nothing
    conn.receive_data(b"FROB\r\nCAPA\r\nFROB\r\nFROB\r\nCAPA\r\n")
    out = b""
    while conn.state is not State.CLOSED:
        event = conn.next_event()
        out += conn.send(event.reply if isinstance(event, ev.Rejected) else OK)
    assert conn.closed_for == said and isinstance(conn.next_event(), ev.ConnectionClosed)
    assert out.endswith(b"-ERR [SYS/PERM] " + said.encode() + b" in this session, closing\r\n")
    assert out.count(b"\r\n") == 5  # four replies (the third error is the fourth command), then the closing line
