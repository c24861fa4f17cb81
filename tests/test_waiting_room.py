"""The waiting room: a newcomer over a full server waits up to admit_wait for a connection to
turn sheddable or end, before the busy reply; the room is small and one address cannot fill it
to lock another out (SMTP on both drivers, POP3)."""
from __future__ import annotations

import time

import pytest

from test_fairness import FULL, SHED_IDLE, _readable, both_drivers, clients, policy  # noqa: F401 (a fixture)
from waiting import wait_for

from forgelab.app import Forgelab, Settings
from forgelab.core.policy import PolicyError
from forgelab.drivers.waiting_room import ROOM_SIZE, Waiter, WaitingRoom, choose_turn_away

pytestmark = pytest.mark.timeout(60)


# -- whom to turn away when the room is full (no sockets) ------------------------------------------------

def waiter(ip: str, arrived: float) -> Waiter:
    return Waiter(None, (ip, 1), arrived)


def test_choose_turn_away_takes_the_address_with_the_most_waiting_its_longest_waiting_first():
    lone = waiter("10.0.0.9", 1.0)  # waiting the longest, but alone from its address
    crowd = [waiter("127.0.0.1", 2.0 + i) for i in range(3)]
    pair = [waiter("127.0.0.2", 1.5), waiter("127.0.0.2", 9.0)]
    assert choose_turn_away([lone, pair[0], *crowd, pair[1]]) is crowd[0]
    assert choose_turn_away([lone, pair[0], crowd[2], pair[1]]) is pair[0]
    assert choose_turn_away([lone, crowd[1], pair[1]]) is lone  # one each: the longest waiting


def test_the_room_keeps_its_size_in_arrival_order_and_gives_out_those_that_waited_long_enough():
    room = WaitingRoom(size=3)
    first, flood = waiter("127.0.0.2", 1.0), [waiter("127.0.0.1", 2.0 + i) for i in range(4)]
    assert room.enter(first) == [] and room.enter(flood[0]) == [] and room.enter(flood[1]) == []
    assert room.enter(flood[2]) == [flood[0]]  # not the other address's, though it waits the longest
    assert room.enter(flood[3]) == [flood[1]]
    assert list(room) == [first, flood[2], flood[3]]
    assert room.due(now=5.5, wait=1.0) == [first, flood[2]] and list(room) == [flood[3]]
    assert room.empty_out() == [flood[3]] and len(room) == 0


# -- SMTP and POP3 over 127.0.0.1 ---------------------------------------------------------------------

def room_of(server):
    return server._room


@both_drivers
def test_a_newcomer_during_a_burst_waits_until_a_silent_connection_may_be_shed(forgelab_server, clients):
    # Silent connections may be shed after shed_idle_after / 4 = 1 s; the newcomer arrives before.
    lab = forgelab_server(policy=policy(max_connections=4, shed_idle_after=4, admit_wait=30))
    burst = [clients(lab.smtp.address) for _ in range(4)]
    newcomer = clients(lab.smtp.address)  # waits, then gets in
    assert newcomer.greeting[0] == 220
    said_goodbye = wait_for(lambda: [c for c in burst if _readable(c)], what="a goodbye")
    assert len(said_goodbye) == 1 and said_goodbye[0].reply() == SHED_IDLE
    assert newcomer.cmd("NOOP")[0] == 250


def test_a_pop3_newcomer_during_a_burst_waits_until_a_silent_connection_may_be_shed(forgelab_server, clients):
    lab = forgelab_server(policy=policy(max_connections=4, shed_idle_after=4, admit_wait=30))
    burst = [clients(lab.pop3.address, greet="pop3") for _ in range(4)]
    newcomer = clients(lab.pop3.address, greet="pop3")
    assert newcomer.greeting.startswith("+OK")
    assert newcomer.pop("USER alice").startswith("+OK")
    said_goodbye = wait_for(lambda: [c for c in burst if _readable(c)], what="a goodbye")
    assert said_goodbye[0].line() == "-ERR [SYS/TEMP] server full, closing idle connection to make room"


@both_drivers
def test_a_waiting_newcomer_takes_the_slot_of_a_connection_that_ends(forgelab_server, clients):
    lab = forgelab_server(policy=policy(max_connections=4, shed_idle_after=60, admit_wait=30))
    held = [clients(lab.smtp.address) for _ in range(4)]
    newcomer = clients(lab.smtp.address, greet=None)
    wait_for(lambda: len(room_of(lab.smtp._server)) == 1, what="the newcomer in the waiting room")
    assert not _readable(newcomer)  # no greeting while it waits
    assert held[0].cmd("QUIT")[0] == 221
    assert newcomer.reply()[0] == 220
    assert all(c.cmd("NOOP")[0] == 250 for c in held[1:])  # nobody was shed for it


@both_drivers
def test_with_nothing_to_shed_a_newcomer_is_refused_after_admit_wait(forgelab_server, clients):
    admit_wait = 1.0
    lab = forgelab_server(policy=policy(max_connections=4, shed_idle_after=60, admit_wait=admit_wait))
    held = [clients(lab.smtp.address) for _ in range(4)]  # none idle for 60 s: none may be shed
    started = time.monotonic()
    newcomer = clients(lab.smtp.address, greet=None)
    assert newcomer.reply() == FULL and newcomer.closed_by_server()
    assert time.monotonic() - started >= admit_wait  # the server accepted it after we began: a lower bound
    assert all(c.cmd("NOOP")[0] == 250 for c in held)
    assert len(room_of(lab.smtp._server)) == 0


@both_drivers
def test_a_flood_of_waiters_from_one_address_does_not_turn_another_address_away(forgelab_server, clients):
    lab = forgelab_server(policy=policy(max_connections=4, shed_idle_after=60, admit_wait=30))
    room = room_of(lab.smtp._server)
    held = [clients(lab.smtp.address) for _ in range(4)]
    flood = [clients(lab.smtp.address, greet=None) for _ in range(ROOM_SIZE)]
    wait_for(lambda: len(room) == ROOM_SIZE, what="a full waiting room")
    other = clients(lab.smtp.address, source="127.0.0.2", greet=None)
    wait_for(lambda: any(w.peer_ip == "127.0.0.2" for w in room), what="the other address waiting")
    flood += [clients(lab.smtp.address, greet=None) for _ in range(10)]
    # Each newcomer over the room's size turned the flood's longest waiting one away.
    wait_for(lambda: sum(_readable(c) for c in flood) == 11, what="11 of the flood refused")
    for c in flood[:11]:
        assert c.reply() == FULL and c.closed_by_server()
    assert not _readable(other) and len(room) == ROOM_SIZE
    for c in held + flood[11:]:  # they go: the waiting get in, in arrival order, the other address too
        c.close()
    assert other.reply()[0] == 220
    assert other.cmd("NOOP")[0] == 250


@both_drivers
def test_a_stopping_server_refuses_its_waiting_newcomers(forgelab_server, clients):
    lab = forgelab_server(policy=policy(max_connections=1, shed_idle_after=60, admit_wait=30))
    clients(lab.smtp.address)
    newcomer = clients(lab.smtp.address, greet=None)
    wait_for(lambda: len(room_of(lab.smtp._server)) == 1, what="the newcomer in the waiting room")
    lab.smtp.stop()
    assert newcomer.reply() == FULL and newcomer.closed_by_server()


def test_a_policy_file_sets_admit_wait_and_a_bad_one_is_refused(tmp_path):
    (tmp_path / "patient.toml").write_text('extends = "observe"\n[server]\nadmit_wait = 0.5\n')
    app = Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=tmp_path / "d",
                            policy=str(tmp_path / "patient.toml"), tls=False, event_log=False))
    assert app.smtp._server.limits.admit_wait == app.pop3._server.limits.admit_wait == 0.5
    (tmp_path / "bad.toml").write_text('extends = "observe"\n[server]\nadmit_wait = "soon"\n')
    with pytest.raises(PolicyError, match="server.admit_wait"):
        Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=tmp_path / "e",
                          policy=str(tmp_path / "bad.toml"), tls=False, event_log=False))
