"""Every limit, set small in a policy, hit for real over 127.0.0.1 (SMTP and POP3)."""
from __future__ import annotations

import threading
import time

import pytest

from forgelab.app import Forgelab, Settings
from forgelab.core.policy import load_policy
from forgelab.protocols.pop3 import LoginThrottle

pytestmark = pytest.mark.timeout(30)


from line_client import LineClient as Client


def policy(**server):
    p = load_policy("observe")
    p.server.update(server)
    return p


@pytest.fixture
def smtp(forgelab_server):
    """``smtp(**server_settings) -> (app, connect)``; connect() returns a greeted Client."""
    opened = []

    def start(**server):
        app = forgelab_server(policy=policy(**server))

        def connect(source=None):
            c = Client(app.smtp.address, source)
            opened.append(c)
            assert c.reply()[0] == 220
            return c
        return app, connect
    yield start
    for c in opened:
        c.close()


# -- SMTP message limits ------------------------------------------------------------------------

def test_size_is_advertised_and_enforced_with_552(smtp):
    app, connect = smtp(max_message_size=2000)
    c = connect()
    assert "SIZE 2000" in c.cmd("EHLO me.example")[1].splitlines()
    code, text = c.cmd("MAIL FROM:<a@shop.example> SIZE=2001")
    assert (code, text[:5]) == (552, "5.3.4")
    assert c.cmd("MAIL FROM:<a@shop.example> SIZE=100")[0] == 250  # the declared size is a promise...
    c.cmd("RCPT TO:<alice@corp.example>")
    c.cmd("DATA")
    code, text = c.cmd(b"Subject: big\r\n\r\n" + b"x" * 70 + (b"\r\n" + b"y" * 70) * 40 + b"\r\n.")
    assert (code, text[:5]) == (552, "5.3.4")  # ...the real size is what counts
    assert app.store.list("alice") == []
    assert c.cmd("NOOP")[0] == 250


def test_recipients_per_message_452(smtp):
    app, connect = smtp(max_recipients=3)
    c = connect()
    c.cmd("EHLO me.example")
    c.cmd("MAIL FROM:<a@shop.example>")
    for _ in range(3):
        assert c.cmd("RCPT TO:<alice@corp.example>")[0] == 250
    code, text = c.cmd("RCPT TO:<bob@corp.example>")
    assert (code, text[:5]) == (452, "4.5.3")
    c.cmd("DATA")
    assert c.cmd("Subject: three\r\n\r\nhi\r\n.")[0] == 250  # the message goes to the first three


def test_command_and_text_line_lengths(smtp):
    app, connect = smtp()
    c = connect()
    assert c.cmd("NOOP " + "x" * 600) == (500, "5.5.2 Line too long (the limit is 512 octets)")
    c.send(b"HELO " + b"y" * 100_000 + b"\r\n")  # huge, in many segments: dropped as it comes
    assert c.reply()[0] == 500
    c.cmd("EHLO me.example")
    c.cmd("MAIL FROM:<a@shop.example>")
    c.cmd("RCPT TO:<alice@corp.example>")
    c.cmd("DATA")
    code, text = c.cmd(b"Subject: long\r\n\r\n" + b"z" * 1200 + b"\r\n.")
    assert (code, text[:5]) == (500, "5.5.2")
    assert app.store.list("alice") == []


def test_errors_per_session_end_it_with_421(smtp):
    app, connect = smtp(max_errors=3)
    c = connect()
    for _ in range(3):
        assert c.cmd("BOGUS")[0] == 500
    c.send(b"BOGUS\r\n")
    assert c.reply()[0] == 500
    assert c.reply() == (421, "4.7.0 Too many errors in this session, closing")
    assert c.closed_by_server()


def test_commands_per_session_end_it_with_421(smtp):
    app, connect = smtp(max_commands=10)
    c = connect()
    for _ in range(10):
        assert c.cmd("NOOP")[0] == 250
    c.send(b"NOOP\r\n")
    assert c.reply()[0] == 250
    assert c.reply() == (421, "4.7.0 Too many commands in this session, closing")
    assert c.closed_by_server()


def test_idle_timeout_421(smtp):
    app, connect = smtp(idle_timeout=0.5)
    c = connect()
    started = time.monotonic()
    assert c.reply() == (421, "4.4.2 Idle too long, closing")
    assert 0.4 < time.monotonic() - started < 3


def test_a_one_byte_a_second_client_is_cut_at_the_session_limit_and_holds_no_one(smtp):
    app, connect = smtp(session_timeout=1.5, idle_timeout=10)
    slow = connect()
    started = time.monotonic()
    stop = threading.Event()

    def dribble():
        for byte in b"NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP":
            if stop.wait(0.25):
                return
            try:
                slow.send(bytes([byte]))
            except OSError:
                return
    t = threading.Thread(target=dribble)
    t.start()
    try:
        fast = connect()  # served at once while the slow one dribbles
        assert fast.cmd("EHLO me.example")[0] == 250
        assert fast.cmd("QUIT")[0] == 221
        assert slow.reply() == (421, "4.4.2 Session time limit reached, closing")
        assert time.monotonic() - started < 4
    finally:
        stop.set()
        t.join()


# -- connection caps: SMTP and POP3 ------------------------------------------------------------------

def test_connection_caps_per_address_and_in_total_refuse_when_nothing_can_be_shed(smtp):
    # None of these is idle for 60 s, none sends slowly for as long: nothing may be shed for a
    # newcomer, so the caps refuse him (tests/test_fairness.py: when something can be shed).
    app, connect = smtp(max_connections=3, max_connections_per_ip=2, shed_idle_after=60)
    assert app.smtp._server.limits.max_connections == 3
    first, second = connect(), connect()
    third = Client(app.smtp.address)
    assert third.reply() == (421, "4.7.0 Too many connections, try again later")
    third.close()
    other = connect(source="127.0.0.2")  # another client address still gets in
    assert other.cmd("NOOP")[0] == 250
    fourth = Client(app.smtp.address, source="127.0.0.3")  # but the total is full
    assert fourth.reply()[0] == 421
    fourth.close()
    pop_first = Client(app.pop3.address)
    pop_second = Client(app.pop3.address)
    assert pop_first.line().startswith("+OK") and pop_second.line().startswith("+OK")
    pop_third = Client(app.pop3.address)
    assert pop_third.line() == "-ERR [SYS/TEMP] too many connections"
    for c in (pop_first, pop_second, pop_third):
        c.close()
    first.cmd("QUIT")
    deadline = time.monotonic() + 5
    while app.smtp._server.active_connections > 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    again = connect()  # a slot freed is a slot usable
    assert again.cmd("NOOP")[0] == 250


def test_policy_file_sets_the_caps(tmp_path):
    (tmp_path / "tight.toml").write_text('extends = "observe"\n[server]\nmax_connections = 7\n'
                                         'max_connections_per_ip = 3\nidle_timeout = 12\n'
                                         'shed_idle_after = 2.5\nmin_data_rate = 10\n')
    app = Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=tmp_path / "d",
                            policy=str(tmp_path / "tight.toml"), tls=False, event_log=False))
    for server in (app.smtp._server, app.pop3._server):
        assert (server.limits.max_connections, server.limits.max_per_ip, server.limits.idle_timeout) == (7, 3, 12)
        assert (server.limits.shed_idle_after, server.limits.min_data_rate) == (2.5, 10)


# -- POP3 limits ----------------------------------------------------------------------------------------

@pytest.fixture
def pop3(forgelab_server):
    app = forgelab_server(policy=policy(idle_timeout=1, session_timeout=2))
    app.pop3.throttle = LoginThrottle(free_failures=2, delay=0.3, max_delay=0.5)
    return app


def test_pop3_line_length_and_idle_timeout(pop3):
    c = Client(pop3.pop3.address)
    try:
        assert c.line().startswith("+OK")
        assert c.pop("USER " + "a" * 300).startswith("-ERR line too long")
        assert c.pop("CAPA").startswith("+OK")
        while c.line() != ".":
            pass
        started = time.monotonic()
        assert c.line().startswith("-ERR")  # idle
        assert 0.8 < time.monotonic() - started < 3
        assert c.closed_by_server()
    finally:
        c.close()


def test_pop3_failed_logins_are_slowed_and_never_tell_who_exists(pop3):
    c = Client(pop3.pop3.address)
    try:
        c.line()
        for name in ("alice", "nobody-here"):
            answers, took = [], []
            for _ in range(4):
                assert c.pop(f"USER {name}") == "+OK send PASS"  # USER never tells
                started = time.monotonic()
                answers.append(c.pop("PASS wrong"))
                took.append(time.monotonic() - started)
            assert set(answers) == {"-ERR [AUTH] invalid user name or password"}
            assert took[3] >= 0.3  # past the free failures the next attempt waits (delay=0.3)
            # (that the free ones do not wait is computed, not timed, in test_login_throttle.py)
        c.pop("USER alice")
        assert c.pop("PASS rabbit-hole").startswith("+OK alice's maildrop")  # slowed, not refused
    finally:
        c.close()


def test_pop3_closes_after_too_many_errors(forgelab_server, tmp_path):
    import socket as _socket

    policy = tmp_path / "errs.toml"
    policy.write_text('extends = "observe"\n[server]\nmax_errors = 3\n')
    lab = forgelab_server(policy=str(policy))
    with _socket.create_connection(lab.pop3.address, timeout=10) as sock:
        sock.sendall(b"FROB\r\n" * 10)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    lines = data.split(b"\r\n")
    assert lines[0].startswith(b"+OK") and [l[:4] for l in lines[1:5]] == [b"-ERR"] * 4
    assert lines[5] == b"-ERR [SYS/PERM] too many errors in this session, closing" and lines[6:] == [b""]


def test_login_throttle_settings_come_from_the_policy(forgelab_server, tmp_path):
    import poplib

    policy = tmp_path / "throttle.toml"
    policy.write_text('extends = "observe"\n[server]\nlogin_free_failures = 1\nlogin_delay = 0.3\n'
                      'login_max_delay = 0.3\nlogin_user_free_failures = 7\nlogin_ip_free_failures = 9\n'
                      'login_ip_max_delay = 2\n')
    lab = forgelab_server(policy=str(policy))
    t = lab.pop3.throttle
    assert t is lab.context.login_throttle
    assert (t.free_failures, t.delay, t.max_delay, t.user_free_failures, t.ip_free_failures, t.ip_max_delay) == \
        (1, 0.3, 0.3, 7, 9, 2)
    for _ in range(2):
        client = poplib.POP3(*lab.pop3.address, timeout=10)
        client.user("alice")
        with pytest.raises(poplib.error_proto):
            client.pass_("wrong")
        client.close()
    client = poplib.POP3(*lab.pop3.address, timeout=10)
    client.user("alice")
    started = time.monotonic()
    client.pass_("rabbit-hole")  # a new connection still waits alice's next slot
    assert time.monotonic() - started >= 0.3
    client.quit()
