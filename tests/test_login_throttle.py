"""The login throttle: a brute force on one user slows that user only, across reconnects, and
never tells who exists (issue 15, item 4). The throttle's clock is frozen and moved by hand,
so every delay is computed, not measured; real waits stay a few tens of milliseconds."""
from __future__ import annotations

import base64
import select

import pytest

from forgelab.core.login_throttle import LoginThrottle
from forgelab.drivers.smtp import DRIVERS

from line_client import LineClient

pytestmark = pytest.mark.timeout(60)

BOB_WRONG = base64.b64encode(b"\0bob\0guess").decode()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recording(LoginThrottle):
    """The real throttle, noting what each attempt was told to wait (None: refused)."""

    def attempt(self, ip, name):
        wait = super().attempt(ip, name)
        self.waits.append((name, None if wait is None else round(wait, 6)))
        return wait


def throttle(**settings) -> Recording:
    settings = {"free_failures": 2, "delay": 0.02, "max_delay": 0.1, "clock": Clock(), **settings}
    t = Recording(**settings)
    t.waits = []
    return t


# -- the throttle alone -----------------------------------------------------------------------

def test_backoff_is_free_then_doubles_up_to_the_cap():
    clock = Clock()
    t = LoginThrottle(free_failures=3, delay=1, max_delay=30, clock=clock)
    waits = []
    for _ in range(12):
        waits.append(t.attempt("127.0.0.1", "bob"))
        clock.now += waits[-1]  # the guesser waits its turn, then fails
        t.failure("127.0.0.1", "bob")
    assert waits == [0, 0, 0, 0, 1, 2, 4, 8, 16, 30, 30, 30]


def test_hammering_bob_leaves_alice_alone_and_bob_gets_in_after_the_backoff():
    clock = Clock()
    t = LoginThrottle(free_failures=3, delay=1, max_delay=30, clock=clock)
    for _ in range(50):  # fifty parallel guesses: most are refused unchecked
        if t.attempt("127.0.0.1", "bob") is not None:
            t.failure("127.0.0.1", "bob")
    assert t.attempt("127.0.0.1", "alice") == 0  # same address, other user: at once
    assert t.attempt("127.0.0.1", "bob") is None  # bob, for now: refused
    clock.now += 61
    wait = t.attempt("127.0.0.1", "bob")
    assert wait is not None and wait <= 30  # slowed, not refused forever
    t.success("127.0.0.1", "bob")
    assert t.attempt("127.0.0.1", "bob") == 0


def test_the_user_key_slows_a_guesser_spread_over_many_addresses():
    clock = Clock()
    t = LoginThrottle(free_failures=3, user_free_failures=10, delay=1, max_delay=30, clock=clock)
    for i in range(11):  # one guess from each of 11 addresses
        assert t.attempt(f"10.0.0.{i}", "bob") == 0
        t.failure(f"10.0.0.{i}", "bob")
    assert t.attempt("10.0.0.99", "bob") == 1  # a new address still waits for bob
    assert t.attempt("10.0.0.99", "alice") == 0


def test_the_per_address_ceiling_only_holds_failures_back():
    clock = Clock()
    t = LoginThrottle(ip_free_failures=100, ip_max_delay=5, delay=1, clock=clock)
    holds = [t.failure("127.0.0.1", f"user{i}") for i in range(110)]  # a spray, one guess per name
    assert holds[:100] == [0] * 100 and holds[100:104] == [1, 2, 4, 5] and max(holds) == 5
    assert t.attempt("127.0.0.1", "alice") == 0  # a login is never made to wait by it


def test_memory_stays_bounded_under_a_spray_of_names_and_addresses():
    t = LoginThrottle(max_entries=1000, clock=Clock())
    for i in range(5000):
        t.failure(f"10.{i // 250}.{i % 250}.1", f"name-{i}-" + "x" * 300)
    assert len(t._entries) <= 1000
    assert all(len(key[-1]) <= 64 for key in t._entries if key[0] != "ip")


def test_unknown_and_known_names_are_throttled_alike():
    def run(name):
        clock = Clock()
        t = LoginThrottle(clock=clock)
        out = []
        for _ in range(15):
            wait = t.attempt("127.0.0.1", name)
            out.append((wait, t.failure("127.0.0.1", name) if wait is not None else None))
            clock.now += 3
        return out

    assert run("bob") == run("nobody-here")


# -- through the real servers ----------------------------------------------------------------

@pytest.fixture(params=DRIVERS)
def lab(request, forgelab_server):
    app = forgelab_server(driver=request.param)
    app.context.login_throttle = app.pop3.throttle = throttle()
    return app


def pop3_login(lab, name, password) -> str:
    c = LineClient(lab.pop3.address, greet="pop3")
    try:
        c.pop(f"USER {name}")
        return c.pop(f"PASS {password}")
    finally:
        c.close()


def smtp_login(lab, name, password) -> tuple[int, str]:
    c = LineClient(lab.smtp.address, greet="smtp")
    try:
        c.cmd("EHLO me.example")
        return c.cmd("AUTH PLAIN " + base64.b64encode(f"\0{name}\0{password}".encode()).decode())
    finally:
        c.close()


def test_pop3_brute_force_on_bob_leaves_alice_working_and_bob_gets_in_later(lab):
    t = lab.pop3.throttle
    answers = [pop3_login(lab, "bob", f"guess{i}") for i in range(6)]  # a new connection each time
    assert answers[:5] == ["-ERR [AUTH] invalid user name or password"] * 5
    assert answers[5] == "-ERR [SYS/TEMP] too many failed logins, try later"
    # Reconnecting did not reset anything: each attempt waited longer than the one before.
    assert [w for _, w in t.waits] == [0, 0, 0, 0.02, 0.06, None]
    assert pop3_login(lab, "alice", "rabbit-hole").startswith("+OK alice's maildrop")
    assert t.waits[-1] == ("alice", 0)  # at once, from the same 127.0.0.1
    t.clock.now += 1  # the backoff is over
    assert pop3_login(lab, "bob", "tiny-tim").startswith("+OK bob's maildrop")


def test_smtp_auth_brute_force_on_bob_leaves_alice_working_and_bob_gets_in_later(lab):
    t = lab.context.login_throttle
    codes = [smtp_login(lab, "bob", f"guess{i}")[0] for i in range(6)]
    assert codes == [535] * 5 + [454]
    assert [w for _, w in t.waits] == [0, 0, 0, 0.02, 0.06, None]
    assert smtp_login(lab, "alice", "rabbit-hole")[0] == 235
    assert t.waits[-1] == ("alice", 0)
    t.clock.now += 1
    assert smtp_login(lab, "bob", "tiny-tim")[0] == 235


def test_pop3_and_smtp_share_the_backoff(lab):
    t = lab.pop3.throttle
    for i in range(3):
        pop3_login(lab, "bob", f"guess{i}")
    assert smtp_login(lab, "bob", "guess")[0] == 535
    assert t.waits[-1] == ("bob", 0.02)


def test_unknown_and_known_users_get_the_same_replies_and_delays(forgelab_server):
    seen = []
    for name in ("bob", "nobody-here"):
        app = forgelab_server()
        app.context.login_throttle = app.pop3.throttle = t = throttle()
        replies = [pop3_login(app, name, "guess") for _ in range(3)]
        replies += [smtp_login(app, name, "guess") for _ in range(3)]
        seen.append((replies, [w for _, w in t.waits]))
    assert seen[0] == seen[1]
    assert seen[0][1] == [0, 0, 0, 0.02, 0.06, None]


@pytest.mark.parametrize("smtp_driver", DRIVERS)
def test_a_waiting_login_holds_up_no_other_session(forgelab_server, smtp_driver):
    app = forgelab_server(driver=smtp_driver)
    app.context.login_throttle = app.pop3.throttle = throttle(free_failures=0, delay=30, max_delay=30)
    smtp_login(app, "bob", "guess")  # bob's next attempt waits 30 s
    slow = LineClient(app.smtp.address, greet="smtp")
    try:
        slow.cmd("EHLO me.example")
        slow.send(f"AUTH PLAIN {BOB_WRONG}\r\n".encode())
        assert smtp_login(app, "alice", "rabbit-hole")[0] == 235  # meanwhile, at once
        assert pop3_login(app, "alice", "rabbit-hole").startswith("+OK")
        assert select.select([slow.sock], [], [], 0)[0] == []  # bob's answer is still held back
    finally:
        slow.close()


def test_two_throttles_wired_together_count_each_others_failures_and_successes():
    # As two processes of serve --workers 2 are wired (forgelab/drivers/workers.py), without the processes.
    clock = Clock()
    settings = dict(free_failures=3, user_free_failures=3, delay=1, max_delay=30, clock=clock)
    a, b = LoginThrottle(**settings), LoginThrottle(**settings)
    wire: list = []

    def carry(to):
        return lambda *change: (wire.append(change), to.seen_elsewhere(*change))

    a.on_change, b.on_change = carry(b), carry(a)
    for throttle in (a, b, a, b):  # a guesser whose connections land on both: 4 failures, 2 on each
        assert throttle.attempt("127.0.0.1", "bob") == 0
        throttle.failure("127.0.0.1", "bob")
    # Applied changes are not sent back; a first attempt on a name without counts is not sent.
    assert wire == [("failure", "127.0.0.1", "bob", 0)] + [("attempt", "127.0.0.1", "bob", 0),
                                                          ("failure", "127.0.0.1", "bob", 0)] * 3
    del wire[:]
    # As one throttle would: the slot 1 s ahead, then parallel attempts queue a gap apart on both.
    assert a.attempt("127.0.0.1", "bob") == 1 and b.attempt("127.0.0.1", "bob") == 2
    assert b.attempt("127.0.0.1", "alice") == 0
    # b's attempt, answered in its slot 2 s ahead, fails: a's next slot is a gap after that one, not after now.
    b.failure("127.0.0.1", "bob")
    assert wire == [("attempt", "127.0.0.1", "bob", 1), ("attempt", "127.0.0.1", "bob", 2),
                    ("failure", "127.0.0.1", "bob", 2)]
    clock.now += 2.5  # b's answer has gone out; a's next attempt comes
    assert a.attempt("127.0.0.1", "bob") == 1.5  # b's slot (2) + the doubled gap (2) - 2.5
    b.success("127.0.0.1", "bob")  # the right password on one: the other's counts start over too
    assert a.attempt("127.0.0.1", "bob") == 0
    a.failure("127.0.0.1", "b" * 500)
    assert wire[-2:] == [("success", "127.0.0.1", "bob", 0), ("failure", "127.0.0.1", "b" * 64, 0)]  # names stay bounded


def test_a_change_seen_elsewhere_is_applied_in_its_slot_and_not_passed_on():
    clock = Clock()
    t = LoginThrottle(free_failures=0, user_free_failures=0, delay=1, max_delay=30, clock=clock)
    sent: list = []
    t.on_change = lambda *change: sent.append(change)
    t.seen_elsewhere("failure", "127.0.0.1", "carol", after=1000)  # never past max_delay
    t.seen_elsewhere("failure", "127.0.0.1", "bob")
    t.seen_elsewhere("nonsense", "127.0.0.1", "bob")  # ignored
    t.seen_elsewhere("failure", "127.0.0.1", "dave")
    t.seen_elsewhere("attempt", "127.0.0.1", "dave", after=5)  # another process gave dave's slot 5 s ahead
    assert sent == []
    assert t.attempt("127.0.0.1", "carol") is None  # its slot 30 s ahead + the gap: refused unchecked
    clock.now += 1
    assert t.attempt("127.0.0.1", "carol") == 30
    assert t.attempt("127.0.0.1", "dave") == 6 - 1  # the gap after that slot
    assert t.attempt("127.0.0.1", "bob") == 0  # the gap after the failure has passed; no slot was taken
    t.seen_elsewhere("success", "127.0.0.1", "bob")
    assert t.attempt("127.0.0.1", "erin") == 0
    assert [change[0] for change in sent] == ["attempt"] * 3  # erin has no counts: nothing to tell
