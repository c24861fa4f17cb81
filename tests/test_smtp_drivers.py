"""What both SMTP drivers (serve --driver threads|selector) must do alike under load and abuse,
and the session object they share, without sockets."""
import base64
import os
import re
import smtplib
import socket
import threading
import time

import pytest
from line_client import LineClient

from forgelab.app import Forgelab, Settings
from forgelab.core.login_throttle import LoginThrottle
from forgelab.drivers import smtp_session
from forgelab.drivers.smtp_session import SmtpSession

BAD_LOGIN = base64.b64encode(b"\0alice\0wrong").decode()


def read_until(sock: socket.socket, code: bytes, timeout: float = 20.0) -> bytes:
    """Everything up to and with the first final reply line of ``code`` (b"221")."""
    final = re.compile(rb"(?:^|\r\n)" + code + rb" [^\r\n]*\r\n")
    data, seen = bytearray(), 0
    deadline = time.monotonic() + timeout
    while not final.search(data, max(seen - 600, 0)) and time.monotonic() < deadline:
        seen = len(data)
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def test_a_long_pipelined_batch_from_a_slow_reader_gets_every_reply_in_order(forgelab_server):
    lab = forgelab_server()
    count = 600  # about 280 KB of HELP replies: more than the socket buffers take at once
    with socket.create_connection(lab.smtp.address, timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        read_until(sock, b"220")
        sock.sendall(b"EHLO me.example\r\n" + b"HELP\r\n" * count + b"NOOP\r\nQUIT\r\n")
        time.sleep(0.3)  # the server meets a full socket before we read anything
        out = read_until(sock, b"221")
    finals = [line[:3] for line in out.split(b"\r\n") if line[3:4] == b" "]
    assert finals == [b"250"] + [b"214"] * count + [b"250", b"221"]


def test_a_message_and_quit_sent_together_are_answered_in_order(forgelab_server):
    lab = forgelab_server()
    with socket.create_connection(lab.smtp.address, timeout=10) as sock:
        read_until(sock, b"220")
        sock.sendall(b"EHLO me.example\r\nMAIL FROM:<a@shop.example>\r\nRCPT TO:<alice@corp.example>\r\nDATA\r\n")
        assert b"\r\n354 " in read_until(sock, b"354")
        sock.sendall(b"Subject: together\r\n\r\nhi\r\n.\r\nRSET\r\nQUIT\r\n")
        out = read_until(sock, b"221")
    finals = [line[:3] for line in out.split(b"\r\n") if line[3:4] == b" "]
    assert finals == [b"250", b"250", b"221"]
    (key, _), = lab.store.list("alice")
    assert b"Subject: together" in lab.store.read("alice", "inbox", key)


def test_many_clients_at_once_all_delivered_and_every_session_closed_once(forgelab_server):
    lab = forgelab_server(policy="open")
    errors = []

    def client(n):
        try:
            with smtplib.SMTP(*lab.smtp.address, timeout=20) as c:
                for m in range(3):
                    c.sendmail("a@shop.example", ["alice@corp.example", "bob@corp.example"],
                               f"Subject: {n}-{m}\r\n\r\nbody\r\n".encode())
        except Exception as exc:  # collected: an assertion in a thread would be lost
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(lab.store.list("alice")) == len(lab.store.list("bob")) == 60
    closes = lab.recorder.wait_for("session.close", 20)
    assert len(closes) == 20 and {e["reason"] for e in closes} == {"client quit"}
    assert sorted(e["session_id"] for e in closes) == sorted(e["session"]["id"] for e in lab.recorded("session.open"))


def test_a_slowed_failed_login_holds_up_no_other_client(forgelab_server):
    lab = forgelab_server()
    lab.context.login_throttle = LoginThrottle(delay=1.5, ip_free_failures=0, ip_max_delay=1.5)
    guesser = LineClient(lab.smtp.address, greet="smtp")
    try:
        guesser.cmd("EHLO guess.example")
        started = time.monotonic()
        guesser.send(f"AUTH PLAIN {BAD_LOGIN}\r\n".encode())
        time.sleep(0.1)  # the failure is being slowed down now
        with smtplib.SMTP(*lab.smtp.address, timeout=10) as other:
            other.sendmail("a@shop.example", ["bob@corp.example"], b"Subject: meanwhile\r\n\r\nhi\r\n")
        other_done = time.monotonic() - started
        assert guesser.reply()[0] == 535
        guesser_done = time.monotonic() - started
    finally:
        guesser.close()
    assert other_done < 1.2 <= guesser_done, (other_done, guesser_done)
    assert len(lab.store.list("bob")) == 1


def test_stop_closes_every_connected_client_promptly(forgelab_server):
    lab = forgelab_server()
    idle = [LineClient(lab.smtp.address, greet="smtp") for _ in range(5)]
    for c in idle[:2]:
        c.cmd("EHLO me.example")
    started = time.monotonic()
    lab.stop()
    assert time.monotonic() - started < 5
    for c in idle:
        c.sock.settimeout(5)
        try:
            rest = c.file.read()
        except ConnectionResetError:
            rest = b""
        assert rest == b""  # the server closed its side; nothing hangs
        c.close()
    closes = lab.recorder.wait_for("session.close", 5)
    assert len(closes) == 5


# -- the session both drivers run, without a socket ----------------------------------------

@pytest.fixture
def context(tmp_path):
    app = Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=tmp_path, policy="observe",
                            event_log=False, tls=False))
    return app.context


def lines_of(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\r\n") if line]


def test_session_answers_a_pipelined_transaction_and_closes_on_quit(context):
    s = SmtpSession(context, "127.0.0.1", 40000, session_timeout=60)
    assert s.greet().startswith(b"220 ")
    out = s.feed(b"EHLO me.example\r\nMAIL FROM:<a@shop.example>\r\nRCPT TO:<alice@corp.example>\r\nDATA\r\n")
    assert [line[:4] for line in lines_of(out) if line[3:4] == b" "] == [b"250 ", b"250 ", b"250 ", b"354 "]
    out = s.feed(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    assert [line[:3] for line in lines_of(out)] == [b"250", b"221"] and s.done
    assert len(context.store.list("alice")) == 1


def test_session_leaves_the_delivery_pending_when_asked_and_stores_nothing_before(context):
    s = SmtpSession(context, "127.0.0.1", 40000, session_timeout=60, defer_deliveries=True)
    s.greet()
    s.feed(b"EHLO me.example\r\nMAIL FROM:<a@shop.example>\r\nRCPT TO:<alice@corp.example>\r\nDATA\r\n")
    assert s.feed(b"Subject: x\r\n\r\nhi\r\n.\r\nNOOP\r\n") == b"" and s.pending is not None
    assert context.store.list("alice") == []  # the hooks ran; the disk write has not
    s.answer_pending()
    assert len(context.store.list("alice")) == 1
    replies = lines_of(s.run())  # the message's reply, then the NOOP sent behind it
    assert replies[0].startswith(b"250 2.0.0 OK: queued as ") and replies[1].startswith(b"250 ") and len(replies) == 2


def test_session_gives_replies_to_a_long_batch_in_parts(context):
    s = SmtpSession(context, "127.0.0.1", 40000, session_timeout=60)
    s.greet()
    parts = [s.feed(b"HELP\r\n" * 1000)]
    while s.more:
        parts.append(s.run())
    assert len(parts) > 2 and all(len(p) < smtp_session.MAX_OUTPUT + 4096 for p in parts)
    assert sum(p.count(b"\r\n214 ") + p.startswith(b"214 ") for p in parts) == 1000


def test_session_holds_back_a_slowed_reply_and_what_follows_it(context):
    context.login_throttle = LoginThrottle(delay=2.0, ip_free_failures=0, ip_max_delay=2.0)
    s = SmtpSession(context, "127.0.0.1", 40000, session_timeout=60)
    s.greet()
    s.feed(b"EHLO me.example\r\n")
    assert s.feed(f"AUTH PLAIN {BAD_LOGIN}\r\nNOOP\r\n".encode()) == b""
    assert s.delay == 2.0  # the driver waits, not the session
    out = s.run()
    assert [line[:3] for line in lines_of(out)] == [b"535", b"250"] and s.delay == 0


def test_session_timed_out_says_which_limit(context):
    s = SmtpSession(context, "127.0.0.1", 40000, session_timeout=60)
    s.greet()
    assert s.timed_out().startswith(b"421 4.4.2 Idle too long") and s.done
    s = SmtpSession(context, "127.0.0.1", 40000, session_timeout=0)
    s.greet()
    assert s.timed_out().startswith(b"421 4.4.2 Session time limit") and s.reason == "session time limit"


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling classes")
def test_only_the_selectors_delivery_threads_give_way_to_the_threads_serving_clients(forgelab_server, smtp_driver):
    lab = forgelab_server(policy="open")
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        client.sendmail("a@shop.example", ["alice@corp.example"], b"Subject: x\r\n\r\nhi\r\n")
        serving = [t for t in threading.enumerate() if t.name in ("smtp-selector", "smtp-worker")]
        assert serving and {os.sched_getscheduler(t.native_id) for t in serving} == {os.SCHED_OTHER}
    delivery = [t for t in threading.enumerate() if t.name.startswith("smtp-delivery")]
    if smtp_driver == "selector":
        assert delivery and {os.sched_getscheduler(t.native_id) for t in delivery} == {os.SCHED_BATCH}
    else:  # the threaded driver writes on the connection's own thread
        assert delivery == []
