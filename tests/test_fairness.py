"""Fairness, not lockout: when full, idle (then slow) connections are closed for a newcomer,
the heaviest holder's first, so a class sharing 127.0.0.1 keeps being served (SMTP, POP3)."""
from __future__ import annotations

import poplib
import smtplib
import socket
import threading
import time

import pytest

from line_client import LineClient
from waiting import wait_for

from forgelab.core.policy import load_policy
from forgelab.drivers.connection import Connection, Limits
from forgelab.drivers.shedding import choose_shed
from forgelab.drivers.smtp import DRIVERS

pytestmark = pytest.mark.timeout(60)

IDLE_AFTER = 0.3  # shed_idle_after in these tests: quiet this long, a connection may be shed
SHED_IDLE = (421, "4.7.0 Server full, closing idle connection to make room")
SHED_SLOW = (421, "4.7.0 Server full, closing slow connection to make room")
FULL = (421, "4.7.0 Too many connections, try again later")
both_drivers = pytest.mark.parametrize("smtp_driver", DRIVERS, indirect=True)


def policy(**server):
    p = load_policy("observe")
    p.server.update({"max_connections": 10, "max_connections_per_ip": 10, "shed_idle_after": IDLE_AFTER, **server})
    return p


@pytest.fixture
def clients():
    opened = []

    def open_(address, source=None, greet="smtp"):
        c = LineClient(address, source, greet=greet)
        opened.append(c)
        return c
    yield open_
    for c in opened:
        c.close()


def quiet_past_the_threshold(*servers):
    """Every connection made so far has sent nothing for longer than shed_idle_after, and the
    threads serving ``servers``' connections wait in recv for their clients."""
    time.sleep(IDLE_AFTER + 0.1)  # a lower bound on elapsed time, not a race: nothing else must happen
    for server in servers:
        threads = getattr(server, "_handed", None) or getattr(server, "_active", None)
        if isinstance(threads, dict):  # threaded: every connection; selector: its TLS threads
            wait_for(lambda: all(conn.waiting for conn in list(threads.values())), what="readers in recv")


def honest_delivery(lab, subject: str) -> None:
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as smtp:
        smtp.sendmail("carol@shop.example", ["alice@corp.example"], f"Subject: {subject}\r\n\r\nhi\r\n".encode())


def delivered(lab) -> list[bytes]:
    return [lab.store.read("alice", "inbox", key) for key, _ in lab.store.list("alice")]


# -- choosing whom to shed (no sockets) ---------------------------------------------------------------

def conn(ip: str, opened: float, **state) -> Connection:
    c = Connection(None, ip, 1, "127.0.0.1", 25, opened=opened, rate_window=1.0, **{"waiting": True, **state})
    c.turn_since = c._mass_at = opened
    return c


def test_choose_shed_takes_idle_before_slow_and_the_heaviest_holder_first():
    limits = Limits(shed_idle_after=1.0, min_data_rate=50)
    now = 100.0
    lone_idle = conn("10.0.0.9", opened=10)  # the longest quiet, but its address holds one
    crowd = [conn("127.0.0.1", opened=20 + i) for i in range(3)]
    busy = conn("127.0.0.1", opened=5, waiting=False)  # a hook runs for it: never shed
    mid_data = conn("127.0.0.1", opened=1, in_progress=True)  # quiet mid-message: slow, not idle
    assert choose_shed([lone_idle, busy, mid_data, *crowd], limits, now) is crowd[0]
    assert crowd[0].shed == "idle"
    assert choose_shed([lone_idle, busy, mid_data], limits, now) is lone_idle
    assert choose_shed([busy, mid_data], limits, now) is mid_data and mid_data.shed == "slow"


def test_choose_shed_spares_new_and_fast_connections():
    limits = Limits(shed_idle_after=1.0, min_data_rate=50)
    now = 100.0
    new = conn("127.0.0.1", opened=99.5)
    new.received(6, 99.6)  # it spoke (EHLO) and has had the turn for 0.4 s: not idle (1 s)
    fast = conn("127.0.0.1", opened=50, in_progress=True)
    for t in range(90, 100):
        fast.received(200, float(t) + 0.5)  # 200 octets a second lately
    trickler = conn("127.0.0.1", opened=50, in_progress=True)
    for t in range(90, 100):
        trickler.received(1, float(t) + 0.5)
    assert fast.rate(now) > 50 > trickler.rate(now)
    assert choose_shed([new, fast], limits, now) is None
    assert choose_shed([new, fast, trickler], limits, now) is trickler
    silent = conn("127.0.0.1", opened=99.7)  # greeted 0.3 s ago, not a word since: idle already
    assert choose_shed([new, fast, trickler, silent], limits, now) is silent and silent.shed == "idle"


# -- SMTP over 127.0.0.1 ------------------------------------------------------------------------------

def said_goodbye(connections: list, count: int, reply=SHED_IDLE) -> list:
    """The ``count`` connections the server closed to make room: each got ``reply``, then the end.
    (Which ones among equally idle connections is the model's choice: their idle times differ
    by the microseconds between our threads, so the tests do not name them.)"""
    closed = wait_for(lambda: [c for c in connections if _readable(c)] or None, what="a goodbye")
    assert len(closed) == count
    for c in closed:
        assert c.reply() == reply and c.closed_by_server()
    return closed


@both_drivers
def test_idle_connections_from_the_same_address_are_shed_for_an_honest_client(forgelab_server, clients):
    lab = forgelab_server(policy=policy())
    attacker = [clients(lab.smtp.address) for _ in range(10)]  # the whole server, from 127.0.0.1
    assert all(c.greeting[0] == 220 for c in attacker)
    quiet_past_the_threshold(lab.smtp._server)
    honest_delivery(lab, "first")  # its 220 and its 250: an idle connection made room
    shed = said_goodbye(attacker, 1)
    left = [c for c in attacker if c not in shed]
    wait_for(lambda: lab.smtp._server.active_connections == 9, what="the honest session to end")
    fresh = clients(lab.smtp.address)  # full again; this one is not idle yet, the old ones are
    honest_delivery(lab, "second")
    shed = said_goodbye(left, 1)
    left = [c for c in left if c not in shed]
    assert len(delivered(lab)) == 2
    assert all(c.cmd("NOOP")[0] == 250 for c in left + [fresh])  # the others are still served
    closes = lab.recorder.wait_for("session.close", 4)
    assert sum(e["reason"] == "shed (idle) to make room" for e in closes) == 2


@both_drivers
def test_the_address_holding_the_most_idle_connections_is_shed_first(forgelab_server, clients):
    lab = forgelab_server(policy=policy(max_connections_per_ip=7))
    others = [clients(lab.smtp.address, source="127.0.0.2") for _ in range(3)]  # older, but fewer
    time.sleep(IDLE_AFTER)  # and clearly older: quiet the longest
    attacker = [clients(lab.smtp.address) for _ in range(7)]
    quiet_past_the_threshold(lab.smtp._server)
    newcomer = clients(lab.smtp.address, source="127.0.0.3")  # over the total: 10
    assert newcomer.greeting[0] == 220
    shed = said_goodbye(attacker + others, 1)
    left = [c for c in attacker if c not in shed]
    own = clients(lab.smtp.address)  # over the total again; 127.0.0.1 still holds the most
    assert own.greeting[0] == 220
    said_goodbye(left + others, 1)
    for c in others:
        assert c.cmd("NOOP")[0] == 250


@both_drivers
def test_a_newcomer_is_refused_only_when_nothing_can_be_shed(forgelab_server, clients):
    lab = forgelab_server(policy=policy(max_connections=3, shed_idle_after=60))
    held = [clients(lab.smtp.address) for _ in range(3)]  # none idle for 60 s yet
    refused = clients(lab.smtp.address, greet=None)
    assert refused.reply() == FULL and refused.closed_by_server()
    assert all(c.cmd("NOOP")[0] == 250 for c in held)


@both_drivers
def test_a_trickling_attacker_mid_message_is_shed_as_slow(forgelab_server, clients):
    """Every attacker connection sends a byte every 50 ms inside DATA: never idle, but under
    min_data_rate, so each newcomer still gets in (the slowest holder's connection goes)."""
    lab = forgelab_server(policy=policy(min_data_rate=1000))
    attacker = []
    for _ in range(10):
        c = clients(lab.smtp.address)
        c.cmd("EHLO trickle.example")
        c.cmd("MAIL FROM:<t@trickle.example>")
        c.cmd("RCPT TO:<alice@corp.example>")
        assert c.cmd("DATA")[0] == 354
        attacker.append(c)
    stop = threading.Event()

    def trickle():
        while not stop.wait(0.05):
            for c in attacker:
                try:
                    c.send(b"x")
                except OSError:
                    pass
    t = threading.Thread(target=trickle)
    t.start()
    try:
        quiet_past_the_threshold(lab.smtp._server)  # older than shed_idle_after: their rate now counts
        honest_delivery(lab, "despite the trickle")
        shed = wait_for(lambda: [c for c in attacker if _readable(c)], what="a trickler's goodbye")
        assert shed[0].reply() == SHED_SLOW
    finally:
        stop.set()
        t.join()
    assert len(delivered(lab)) == 1
    assert not any(b"xxx" in m for m in delivered(lab))  # the shed half-message was not kept


def _readable(c: LineClient) -> bool:
    c.sock.setblocking(False)
    try:
        return bool(c.sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        c.sock.setblocking(True)
        c.sock.settimeout(10)


@pytest.mark.parametrize("smtp_driver", ["selector"], indirect=True)
def test_an_idle_tls_session_of_the_selector_driver_is_shed_too(forgelab_server, clients):
    from forgelab.lab.tls import client_context, lab_ca_paths

    lab = forgelab_server(policy=policy(max_connections=2))
    tls = clients(lab.smtp.address)  # handed to a thread of its own by the selector driver
    tls.cmd("EHLO me.example")
    assert tls.cmd("STARTTLS")[0] == 220
    tls.start_tls(client_context(lab_ca_paths(lab.data_dir)[0]))
    assert tls.cmd("EHLO me.example")[0] == 250
    plain = clients(lab.smtp.address)
    quiet_past_the_threshold(lab.smtp._server)
    plain.cmd("NOOP")  # the plain one is active now: the TLS one is the idle one
    honest_delivery(lab, "over a full server")
    assert tls.reply() == SHED_IDLE  # said inside TLS
    assert plain.cmd("NOOP")[0] == 250


# -- POP3 -----------------------------------------------------------------------------------------------

def test_pop3_idle_connections_are_shed_and_a_held_maildrop_is_released_undeleted(forgelab_server, clients):
    lab = forgelab_server(policy=policy())
    lab.store.deliver("alice", b"Subject: keep me\r\n\r\nbody\r\n")
    holder = clients(lab.pop3.address, greet="pop3")  # the oldest: holds alice's maildrop, marked a deletion
    assert holder.pop("USER alice").startswith("+OK")
    assert holder.pop("PASS rabbit-hole").startswith("+OK")
    assert holder.pop("DELE 1").startswith("+OK")
    time.sleep(IDLE_AFTER)  # the holder is the one quiet the longest
    attacker = [clients(lab.pop3.address, greet="pop3") for _ in range(9)]
    quiet_past_the_threshold(lab.pop3._server)
    honest = poplib.POP3(*lab.pop3.address, timeout=10)  # in: the holder was shed for it
    try:
        # Its thread lets the lock go as it wakes; a login just before could still find [IN-USE].
        wait_for(lambda: any(e["reason"].startswith("shed") for e in lab.recorded("session.close")),
                 what="the shed session's end")
        honest.user("alice")
        honest.pass_("rabbit-hole")  # the shed session let the lock go
        assert honest.stat()[0] == 1  # ...and deleted nothing
        assert b"keep me" in b"\r\n".join(honest.retr(1)[1])
        honest.quit()
    finally:
        honest.close()
    assert holder.line() == "-ERR [SYS/TEMP] server full, closing idle connection to make room"
    assert holder.closed_by_server()
    assert attacker[0].pop("USER bob").startswith("+OK")  # the others are still served
