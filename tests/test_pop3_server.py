"""The POP3 server end to end over 127.0.0.1: poplib, raw sockets replaying the worksheet."""
from __future__ import annotations

import json
import poplib
import re
import socket
import time
from types import SimpleNamespace

import pytest

from forgelab.lab.directory import parse_directory
from forgelab.core.events import EventBus
from forgelab.protocols.pop3 import LoginThrottle
from forgelab.drivers.connection import Limits
from forgelab.drivers.pop3 import Pop3Server
from forgelab.store import MailStore

pytestmark = pytest.mark.timeout(30)

USERS = {"domains": ["corp.example"],
         "users": {"alice": {"name": "Alice Liddell", "password": "rabbit-hole"},
                   "bob": {"name": "Bob Builder", "password": "can-we-fix-it"}}}
MESSAGE = (b"From: womble@wimbledon.com\r\nTo: fred@flintstone.org\r\nSubject: Greetings\r\n"
           b"Date: Mon, 17 Jun 96 11:24 PDT\r\n\r\nHello!!\r\n.. Count the dots\r\n")
SIZE = len(MESSAGE)


def start(tmp_path, limits=None, throttle=None):
    store = MailStore(tmp_path / "mail")
    directory = parse_directory(USERS)
    bus, records = EventBus(), []
    bus.subscribe(records.append)
    throttle = throttle or LoginThrottle(free_failures=1000, user_free_failures=1000, delay=0)
    server = Pop3Server(store, directory, bus, port=0, limits=limits or Limits(idle_timeout=10),
                        throttle=throttle).start()
    return SimpleNamespace(store=store, server=server, records=records, address=server.address)


@pytest.fixture
def lab(tmp_path):
    lab = start(tmp_path)
    lab.store.deliver("alice", MESSAGE)
    yield lab
    lab.server.stop()


class Raw:
    """A telnet-like client: send lines, read exactly what comes back."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=5)
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(self.buf)
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    def multiline(self) -> bytes:
        out = self.line()
        while not out.endswith(b"\r\n.\r\n"):
            out += self.line()
        return out

    def ask(self, command: bytes, multi: bool = False) -> bytes:
        self.sock.sendall(command + b"\r\n")
        return self.multiline() if multi else self.line()

    def rest(self) -> bytes:
        """Everything until the server closes."""
        out, self.buf = self.buf, b""
        while data := self.sock.recv(65536):
            out += data
        return out

    def close(self):
        self.sock.close()


def wait_idle(server, deadline=5.0):
    end = time.monotonic() + deadline
    while server.active_connections and time.monotonic() < end:
        time.sleep(0.01)
    assert server.active_connections == 0


GREETING = re.compile(rb"^\+OK forgelab POP3 server ready <\d+\.\d+@mx\.corp\.example>\r\n$")
RETR_1 = (b"+OK %d octets\r\n" % SIZE + MESSAGE.replace(b"\r\n..", b"\r\n...") + b".\r\n")


def worksheet(case):
    """The worksheet's POP3 part: (what the student types, what the server answers), byte for byte."""
    return [
        (case(b"USER") + b" alice", b"+OK send PASS\r\n"),
        (case(b"PASS") + b" rabbit-hole", b"+OK alice's maildrop has 1 message (%d octets)\r\n" % SIZE),
        (case(b"STAT"), b"+OK 1 %d\r\n" % SIZE),
        (case(b"RETR") + b" 1000", b"-ERR no such message\r\n"),
        (case(b"RETR") + b" 1", RETR_1),
        (case(b"QUIT"), b"+OK forgelab POP3 server signing off (0 deleted, 1 left)\r\n"),
    ]


@pytest.mark.parametrize("case", [bytes.upper, bytes.lower, bytes.title], ids=["upper", "lower", "title"])
def test_the_worksheet_byte_for_byte(lab, case):
    client = Raw(lab.address)
    assert GREETING.match(client.line())
    for command, expected in worksheet(case):
        assert client.ask(command, multi=expected.endswith(b"\r\n.\r\n")) == expected
    assert client.rest() == b""  # the server closed after QUIT
    client.close()
    assert len(lab.store.list("alice")) == 1  # "unless you use DELE, the messages remain"


def test_the_worksheet_typed_in_one_burst_or_byte_by_byte(lab):
    script = b"".join(command + b"\r\n" for command, _ in worksheet(bytes.lower))
    expected = b"".join(reply for _, reply in worksheet(bytes.lower))
    client = Raw(lab.address)
    client.line()
    client.sock.sendall(script)  # PIPELINING
    assert client.rest() == expected
    client.close()

    client = Raw(lab.address)
    client.line()
    for byte in script:
        client.sock.sendall(bytes([byte]))
    assert client.rest() == expected
    client.close()


def test_no_help_command_and_dele_removes_the_message_at_quit(lab):
    client = Raw(lab.address)
    client.line()
    assert client.ask(b"HELP").startswith(b"-ERR POP3 has no HELP command (RFC 1939); commands here: USER name")
    client.ask(b"user alice")
    client.ask(b"pass rabbit-hole")
    assert client.ask(b"dele 1") == b"+OK message 1 deleted\r\n"
    assert client.ask(b"retr 1") == b"-ERR message 1 already deleted\r\n"
    assert client.ask(b"stat") == b"+OK 0 0\r\n"
    assert len(lab.store.list("alice")) == 1  # only marked so far
    assert client.ask(b"quit") == b"+OK forgelab POP3 server signing off (1 deleted, 0 left)\r\n"
    client.close()
    assert lab.store.list("alice") == []


def test_poplib_reads_and_deletes(lab):
    second = b"Subject: second\r\n\r\n.\r\n..\r\nend\r\n"
    lab.store.deliver("alice", second)
    pop = poplib.POP3(*lab.address, timeout=5)
    assert pop.getwelcome().startswith(b"+OK forgelab POP3 server ready <")
    assert "UIDL" in pop.capa()
    pop.user("alice")
    pop.pass_("rabbit-hole")
    assert pop.stat() == (2, SIZE + len(second))
    assert pop.list()[1] == [b"1 %d" % SIZE, b"2 %d" % len(second)]
    uids = pop.uidl()[1]
    _, lines, octets = pop.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == MESSAGE and octets == SIZE
    assert pop.retr(2)[1] == [b"Subject: second", b"", b".", b"..", b"end"]
    assert pop.top(1, 0)[1][-1] == b""
    pop.dele(2)
    pop.quit()
    assert [body for body in (lab.store.read("alice", "inbox", k) for k, _ in lab.store.list("alice"))] == [MESSAGE]

    pop = poplib.POP3(*lab.address, timeout=5)
    pop.apop("alice", "rabbit-hole")
    assert pop.uidl()[1] == uids[:1]  # the same unique-id in the next session
    pop.quit()


def test_a_dropped_connection_deletes_nothing_and_releases_the_lock(lab):
    client = Raw(lab.address)
    client.line()
    client.ask(b"USER alice")
    client.ask(b"PASS rabbit-hole")
    assert client.ask(b"DELE 1") == b"+OK message 1 deleted\r\n"
    client.close()  # no QUIT
    wait_idle(lab.server)
    assert len(lab.store.list("alice")) == 1
    pop = poplib.POP3(*lab.address, timeout=5)
    pop.user("alice")
    assert pop.pass_("rabbit-hole").startswith(b"+OK")
    pop.quit()


def test_a_second_concurrent_login_is_in_use(lab):
    first = poplib.POP3(*lab.address, timeout=5)
    first.user("alice")
    first.pass_("rabbit-hole")
    second = Raw(lab.address)
    second.line()
    second.ask(b"USER alice")
    assert second.ask(b"PASS rabbit-hole") == b"-ERR [IN-USE] maildrop locked\r\n"
    first.quit()
    second.ask(b"USER alice")
    assert second.ask(b"PASS rabbit-hole").startswith(b"+OK alice's maildrop")
    second.close()


def test_failed_logins_do_not_tell_which_users_exist(lab):
    answers = set()
    for user, password in [(b"alice", b"wrong"), (b"nobody", b"wrong"), (b"bob", b"rabbit-hole"),
                           (b"ALICE", b"x"), (b"../../etc/passwd", b"x")]:
        client = Raw(lab.address)
        client.line()
        answers.add(client.ask(b"USER " + user) + client.ask(b"PASS " + password))
        client.close()
    assert answers == {b"+OK send PASS\r\n-ERR [AUTH] invalid user name or password\r\n"}


def test_repeated_failures_on_one_user_are_refused_a_while_but_not_another_user(tmp_path):
    lab = start(tmp_path, throttle=LoginThrottle(free_failures=1, delay=0.05, max_delay=0.1,
                                                             clock=lambda: 0.0))
    try:
        client = Raw(lab.address)
        client.line()
        for _ in range(3):
            client.ask(b"USER alice")
            assert client.ask(b"PASS guess") == b"-ERR [AUTH] invalid user name or password\r\n"
        client.ask(b"USER alice")
        assert client.ask(b"PASS rabbit-hole") == b"-ERR [SYS/TEMP] too many failed logins, try later\r\n"
        client.ask(b"USER bob")
        assert client.ask(b"PASS can-we-fix-it").startswith(b"+OK bob's maildrop")
        client.close()
    finally:
        lab.server.stop()


def test_an_idle_session_is_closed_and_deletes_nothing(tmp_path):
    lab = start(tmp_path, limits=Limits(idle_timeout=0.3))
    try:
        lab.store.deliver("alice", MESSAGE)
        client = Raw(lab.address)
        client.line()
        client.ask(b"USER alice")
        client.ask(b"PASS rabbit-hole")
        client.ask(b"DELE 1")
        assert client.rest() == b"-ERR idle timeout, closing connection\r\n"
        client.close()
        wait_idle(lab.server)
        assert len(lab.store.list("alice")) == 1
        closes = [r for r in lab.records if r["kind"] == "session.close"]
        assert closes[-1]["reason"] == "idle timeout"
    finally:
        lab.server.stop()


def test_a_session_has_a_time_limit_even_when_busy(tmp_path):
    lab = start(tmp_path, limits=Limits(idle_timeout=5, session_timeout=0.5))
    try:
        client = Raw(lab.address)
        client.line()
        replies = []
        end = time.monotonic() + 5
        while time.monotonic() < end:  # never idle for long
            try:
                replies.append(client.ask(b"USER alice"))
            except (EOFError, OSError):
                break
            if replies[-1].startswith(b"-ERR"):
                break
            time.sleep(0.05)
        assert replies[0] == b"+OK send PASS\r\n"
        assert replies[-1] == b"-ERR session time limit reached, closing connection\r\n"
        client.close()
    finally:
        lab.server.stop()


def test_when_full_the_server_says_so(tmp_path):
    # None idle for long (shed_idle_after): the newcomer is refused, not served by shedding the first.
    lab = start(tmp_path, limits=Limits(max_connections=1, idle_timeout=10, shed_idle_after=60))
    try:
        first = Raw(lab.address)
        first.line()
        second = Raw(lab.address)
        assert second.rest() == b"-ERR [SYS/TEMP] too many connections\r\n"
        second.close()
        first.close()
    finally:
        lab.server.stop()


def test_stopping_the_server_deletes_nothing_and_releases_the_lock(lab):
    client = Raw(lab.address)
    client.line()
    client.ask(b"USER alice")
    client.ask(b"PASS rabbit-hole")
    client.ask(b"DELE 1")
    lab.server.stop()
    assert lab.server.active_connections == 0
    client.close()
    assert len(lab.store.list("alice")) == 1
    MailStore(lab.store.root).open_maildrop("alice").close()  # the lock is free
    closes = [r for r in lab.records if r["kind"] == "session.close"]
    assert closes[-1]["reason"] == "server stopped"


def test_a_ten_megabyte_line_is_refused_and_the_session_goes_on(lab):
    client = Raw(lab.address)
    client.line()
    client.sock.sendall(b"USER " + b"x" * (10 * 1024 * 1024) + b"\r\n")
    assert client.line() == b"-ERR line too long (at most 255 octets with CRLF)\r\n"
    assert client.ask(b"CAPA", multi=True).startswith(b"+OK capability list follows\r\n")
    client.close()


def test_the_transcript_on_the_bus_masks_the_password_and_the_message_text(lab):
    client = Raw(lab.address)
    client.line()
    for command, expected in worksheet(bytes.upper):
        client.ask(command, multi=expected.endswith(b"\r\n.\r\n"))
    client.close()
    wait_idle(lab.server)
    records = lab.records
    assert "rabbit-hole" not in json.dumps(records)
    assert "Count the dots" not in json.dumps(records)
    opened = records[0]
    assert opened["kind"] == "session.open" and opened["protocol"] == "pop3"
    assert set(opened["session"]) >= {"id", "peer_ip", "peer_port"} and opened["session"]["peer_ip"] == "127.0.0.1"
    lines = [(r["direction"], r["text"]) for r in records if r["kind"] == "session.line"]
    assert all(r["session_id"] == opened["session"]["id"] for r in records[1:])
    assert ("in", "PASS ****") in lines
    assert ("out", "-ERR no such message") in lines
    assert ("out", f"+OK {SIZE} octets [{SIZE} octets of message text not shown]") in lines
    assert lines[-1] == ("out", "+OK forgelab POP3 server signing off (0 deleted, 1 left)")
    assert records[-1]["kind"] == "session.close" and records[-1]["reason"] == "quit"
