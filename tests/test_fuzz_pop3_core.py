"""Property tests of the sans-IO POP3 core and its service: random commands, random splits.

The same bytes cut anywhere give the same events and replies; bad input is only ever a
-ERR; with the real service and a real Maildir, nothing is deleted unless a QUIT in
TRANSACTION state said so, and the maildrop lock is always released.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from forgelab.lab.directory import parse_directory
from forgelab.protocols.pop3 import NEED_DATA, Pop3Connection, Pop3Reply, Pop3Service, State
from forgelab.protocols.pop3 import events as ev
from forgelab.store import MailStore

from chunks import split

pytestmark = pytest.mark.timeout(120)
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 200))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

COMMANDS = [
    "USER alice", "USER nobody", "USER ../../etc", "user alice", "USER", "USER a b", "PASS wrong", "PASS",
    "APOP alice 0123456789abcdef0123456789abcdef", "APOP alice", "APOP-GOOD", "CAPA", "STLS", "QUIT",
    "STAT", "LIST", "LIST 1", "LIST 99", "LIST x", "RETR 1", "RETR 2", "RETR 0", "RETR 99999999999999999999",
    "DELE 1", "DELE 2", "DELE 3", "DELE 1", "NOOP", "RSET", "TOP 1 0", "TOP 2 5", "TOP 1", "UIDL", "UIDL 3",
    "HELP", "XYZZY", "", "ſtat", "PASS rabbit-hole",
]
ENDINGS = [b"\r\n", b"\r\n", b"\n", b"\r", b""]
line_text = st.one_of(st.sampled_from(COMMANDS), st.text(max_size=30),
                      st.builds(lambda c, n: c * n, st.sampled_from("xU\x00é"), st.integers(200, 700)))
line_bytes = st.one_of(st.builds(lambda t, e: t.encode("utf-8", "surrogatepass") + e, line_text,
                                 st.sampled_from(ENDINGS)),
                       st.binary(max_size=40))
streams = st.lists(line_bytes, max_size=40).map(b"".join)


def simple_answer(event) -> Pop3Reply:
    if isinstance(event, ev.Rejected):
        return event.reply
    if isinstance(event, (ev.Retr, ev.Top)):
        return Pop3Reply.ok("follows", body=b"Subject: x\r\n\r\n.dot\r\n")
    if isinstance(event, ev.Stls):
        return Pop3Reply.err("no TLS here")
    return Pop3Reply.ok("fine")


def drive(chunks: list[bytes], answer=simple_answer, greeting=Pop3Reply.ok("hello")) -> tuple[list, bytes]:
    conn = Pop3Connection()
    events, out = [], bytearray(conn.send(greeting))
    for chunk in chunks + [b""]:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            if event is NEED_DATA or isinstance(event, ev.ConnectionClosed):
                break
            events.append((event, event.line))
            out += conn.send(answer(event))
        if conn.state is State.CLOSED:
            break
    return events, bytes(out)


@FUZZ
@given(data=streams, cuts=st.lists(st.integers(0, 5000), max_size=12))
def test_same_events_and_replies_whatever_the_split(data, cuts):
    assert drive(split(data, cuts)) == drive([data])


@FUZZ
@given(data=streams)
def test_one_byte_at_a_time_is_the_same_as_all_at_once(data):
    assert drive([data[i:i + 1] for i in range(len(data))]) == drive([data])


@FUZZ
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 5000), max_size=8))
def test_random_bytes_are_only_ever_err_replies(data, cuts):
    events, out = drive(split(b"CAPA\r\n" + data, cuts))
    for event, line in events:
        assert isinstance(event, ev.Event)
        assert line.isprintable()  # what a transcript shows is one printable line
        if isinstance(event, ev.Rejected):
            assert not event.reply.positive


USERS = {"domains": ["corp.example"], "users": {"alice": {"name": "Alice", "password": "rabbit-hole"}}}
DIRECTORY = parse_directory(USERS)
MESSAGES = [b"Subject: one\r\n\r\nfirst\r\n", b"Subject: two\r\n\r\n.second\r\n", b"Subject: three\r\n\r\nthird\r\n"]


@settings(max_examples=max(EXAMPLES // 2, 20), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.builds(lambda head, body, tail: head + body + tail, st.sampled_from([[], ["APOP-GOOD"]]),
                       st.lists(st.sampled_from(COMMANDS), max_size=25), st.sampled_from([[], ["QUIT"]])),
       cuts=st.lists(st.integers(0, 3000), max_size=6))
def test_the_real_service_only_deletes_at_quit_and_always_unlocks(lines, cuts):
    root = tempfile.mkdtemp(prefix="forgelab-fuzz-")
    try:
        store = MailStore(root, fsync=False)
        for data in MESSAGES:
            store.deliver("alice", data)
        service = Pop3Service(store, DIRECTORY)
        stamp = service.timestamp
        good = hashlib.md5((stamp + "rabbit-hole").encode()).hexdigest()
        # scrypt is slow by design: log in with APOP (cheap) most of the time.
        text = "".join((f"APOP alice {good}" if line == "APOP-GOOD" else line) + "\r\n" for line in lines)
        committed = []

        def answer(event):
            reply = service.handle(event)
            assert isinstance(reply, Pop3Reply)
            if isinstance(event, ev.Quit) and event.update and reply.positive:
                committed.append(event)
            return reply

        try:
            drive(split(text.encode("utf-8", "surrogatepass"), cuts), answer, service.greeting())
        finally:
            service.close()  # what the driver does however the session ended
        left = len(store.list("alice"))
        event(f"QUIT committed: {bool(committed)}, messages deleted: {len(MESSAGES) - left}")
        if not committed:
            assert left == len(MESSAGES)  # no QUIT in TRANSACTION: nothing deleted
        assert left <= len(MESSAGES)
        store.open_maildrop("alice").close()  # the lock was released
    finally:
        shutil.rmtree(root, ignore_errors=True)
