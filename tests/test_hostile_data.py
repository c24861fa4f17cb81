"""Big and unfinished DATA: the text past the spool threshold goes to DATA/spool/, never stays
there, and a classroom of clients holding DATA open cannot fill the server's memory."""
from __future__ import annotations

import poplib
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from forgelab.app import Forgelab, Settings
from forgelab.core.policy import load_policy
from forgelab.drivers.smtp import DRIVERS
from forgelab.drivers.smtp_session import ROOM_RETRY, SmtpSession
from forgelab.store.nofollow import SymlinkRefused
from forgelab.store.spool import MemoryBudget, Spool

from line_client import LineClient as Client
from waiting import wait_for

pytestmark = pytest.mark.timeout(120)

THRESHOLD = 64 * 1024
both_drivers = pytest.mark.parametrize("smtp_driver", DRIVERS, indirect=True)


def policy(**server):
    p = load_policy("observe")
    p.server.update({"spool_threshold": THRESHOLD, **server})
    return p


def in_data(app) -> Client:
    c = Client(app.smtp.address, greet="smtp")
    for line in ("EHLO me.example", "MAIL FROM:<a@shop.example>", "RCPT TO:<alice@corp.example>"):
        assert c.cmd(line)[0] == 250
    assert c.cmd("DATA")[0] == 354
    return c


def lines(octets: int, tag: bytes = b"") -> bytes:
    """Message text of about ``octets``: lines of every length, some starting with a dot."""
    out, i = bytearray(), 0
    while len(out) < octets:
        out += b"..dot %d%s\r\n" % (i, tag) if i % 9 == 0 else b"%d " % i + b"y" * (i * 37 % 900) + b"\r\n"
        i += 1
    return bytes(out)


def spool_dir(app) -> Path:
    """The spool directory of a Forgelab, or of a ServerContext."""
    return app.spool.directory if hasattr(app, "spool") else app.data_dir / "spool"


def spool_files(app) -> list[Path]:
    return sorted(spool_dir(app).glob("*.spool"))


def spool_bytes(directory: Path) -> int:
    """Octets in spool files now (a file may go between listing it and reading its size)."""
    total = 0
    for path in directory.glob("*.spool"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass
    return total


def spooled(app) -> int:
    return spool_bytes(spool_dir(app))


def retr_last(app) -> bytes:
    pop = poplib.POP3(*app.pop3.address, timeout=10)
    try:
        pop.user("alice")
        pop.pass_("rabbit-hole")  # the lab's alice (lab/users.toml)
        count, _ = pop.stat()
        return b"\r\n".join(pop.retr(count)[1]) + b"\r\n"
    finally:
        pop.quit()


@both_drivers
def test_a_message_just_over_the_threshold_is_spooled_and_delivered_byte_exact(forgelab_server):
    app = forgelab_server(policy=policy())
    text = b"Subject: just over\r\n\r\n" + lines(THRESHOLD + 4000)
    c = in_data(app)
    c.send(text[:THRESHOLD + 1000])
    (spool,) = wait_for(lambda: spool_files(app), what="the spool file")
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
    assert stat.S_IMODE((app.data_dir / "spool").stat().st_mode) == 0o700
    code, said = c.cmd(text[THRESHOLD + 1000:] + b".")
    assert code == 250, said
    assert spool_files(app) == []  # gone with the end of the message
    unstuffed = text.replace(b"\r\n..", b"\r\n.")
    ((key, _),) = app.store.list("alice")
    assert app.store.read("alice", "inbox", key).endswith(b"\r\n\r\n" + unstuffed[len(b"Subject: just over\r\n\r\n"):])
    assert retr_last(app).endswith(unstuffed)
    c.close()


@both_drivers
@pytest.mark.parametrize("how", ["disconnect", "idle timeout"])
def test_unfinished_data_is_dropped_with_its_spool_when_the_client_leaves_or_idles_out(forgelab_server, how):
    app = forgelab_server(policy=policy(idle_timeout=1))
    c = in_data(app)
    c.send(lines(4 * THRESHOLD))
    wait_for(lambda: spooled(app) > 2 * THRESHOLD, what="the text in the spool")
    if how == "disconnect":
        c.close()
    else:
        assert c.reply()[0] == 421  # the idle timeout, a second after the last byte
        c.close()
    wait_for(lambda: spool_files(app) == [], what="the spool file to go")
    closes = app.recorder.wait_for("session.close", timeout=5)
    assert closes[-1]["reason"] == ("client closed the connection" if how == "disconnect" else "idle timeout")
    assert app.store.list("alice") == []


@both_drivers
def test_a_message_over_the_size_limit_gets_552_and_leaves_no_spool_and_nothing_stored(forgelab_server):
    limit = 5 * THRESHOLD
    app = forgelab_server(policy=policy(max_message_size=limit))
    c = in_data(app)
    most = 0
    for _ in range(40):  # 40 * 64 KB: eight times the limit, watching the spool as it comes
        c.send(lines(THRESHOLD))
        most = max(most, spooled(app))
    # The server may still be reading what the socket holds: wait until it has spooled some.
    most = max(most, wait_for(lambda: spooled(app) or None, what="the text in the spool"))
    code, text = c.cmd(b".")
    assert (code, text[:5]) == (552, "5.3.4")
    assert 0 < most <= limit  # the spool stops growing at the limit
    assert spool_files(app) == [] and app.store.list("alice") == []
    assert c.cmd("NOOP")[0] == 250  # the session goes on
    c.close()


def test_spool_leftovers_are_removed_when_the_server_starts(forgelab_server, tmp_path):
    data = tmp_path / "data"
    (data / "spool").mkdir(parents=True)
    leftover = data / "spool" / "4242.1.deadbeef.spool"
    leftover.write_bytes(b"half a message from a server that was killed")
    other = data / "spool" / "notes.txt"
    other.write_text("not ours")
    forgelab_server(policy=policy(), data_dir=data)
    assert not leftover.exists() and other.exists()


def test_a_symlinked_spool_directory_is_refused_at_start(tmp_path):
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    data.mkdir()
    elsewhere.mkdir()
    (elsewhere / "1.1.00.spool").write_text("not to be removed")
    (data / "spool").symlink_to(elsewhere)
    with pytest.raises(SymlinkRefused, match="refusing to follow a symlink at .*spool"):
        Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=data, event_log=False, tls=False))
    # The spool itself refuses too (a link made while the server runs): no file is made there.
    for call in (Spool(data / "spool").clear, Spool(data / "spool").create):
        with pytest.raises(SymlinkRefused):
            call()
    assert [p.name for p in elsewhere.iterdir()] == ["1.1.00.spool"]


# -- many big messages ending at once: one memory budget per process (sessions without sockets) ----

@pytest.fixture
def context(tmp_path):
    app = Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=tmp_path, policy=policy(),
                            event_log=False, tls=False))
    app.context.spool.budget = MemoryBudget(octets=300_000, floor=100_000)
    return app.context


def session_in_data(context, port: int, text: bytes) -> SmtpSession:
    s = SmtpSession(context, "127.0.0.1", port, session_timeout=60, defer_deliveries=True)
    s.greet()
    assert s.feed(b"EHLO me.example\r\nMAIL FROM:<a@shop.example>\r\nRCPT TO:<alice@corp.example>\r\nDATA\r\n")
    for i in range(0, len(text), 65536):  # as a driver reads it
        assert s.feed(text[i:i + 65536]) == b""
    return s


def test_big_messages_ending_together_wait_for_room_in_memory_and_go_one_after_another(context):
    text = b"Subject: big\r\n\r\n" + lines(250_000)
    first, second, third = (session_in_data(context, 40000 + i, text) for i in range(3))
    assert len(spool_files(context)) == 3
    assert first.feed(b".\r\n") == b"" and first.pending is not None  # it has the room: its hooks ran
    assert second.feed(b".\r\n") == b"" and second.pending is None and second.delay == ROOM_RETRY
    assert second.run() == b"" and second.delay == ROOM_RETRY  # still no room: nothing read, nothing said
    assert len(spool_files(context)) == 2  # the first one's text is in memory now, the others' on disk
    third.feed(b".\r\n")
    third.close("client went away")  # gives up waiting: its spool and its place go
    first.answer_pending()
    assert first.run().startswith(b"250 2.0.0 OK")  # answered: the room is given back
    assert second.run() == b"" and second.pending is not None
    second.answer_pending()
    assert second.run().startswith(b"250 2.0.0 OK")
    assert context.spool.budget.free == 300_000 and spool_files(context) == []
    stored = [context.store.read("alice", "inbox", key) for key, _ in context.store.list("alice")]
    assert len(stored) == 2 and all(m.endswith(text.replace(b"\r\n..", b"\r\n.")[len(b"Subject: big\r\n"):])
                                    for m in stored)


def test_a_spool_that_cannot_be_written_gets_452_and_the_session_goes_on(context, tmp_path):
    (tmp_path / "not-a-directory").write_text("")
    context.spool.directory = tmp_path / "not-a-directory"
    s = session_in_data(context, 40000, b"Subject: big\r\n\r\n" + lines(250_000))
    out = s.feed(b".\r\nNOOP\r\n")
    assert out.startswith(b"452 4.3.1 Insufficient system storage") and out.endswith(b"250 2.0.0 OK\r\n")
    assert context.store.list("alice") == [] and context.spool.budget.free == 300_000


def test_a_message_under_the_floor_never_waits(context):
    context.spool.budget.take(300_000)  # no room at all
    s = session_in_data(context, 40000, b"Subject: small\r\n\r\n" + lines(50_000))
    assert s.feed(b".\r\n") == b"" and s.pending is not None and s.delay == 0


# -- a classroom holding DATA open, against `forgelab serve` in its own process ------------------

CLIENTS = 10
HELD = 8 * 1024 * 1024  # octets of DATA each client sends and never ends


class ServerProcess:
    """``forgelab serve --policy strict`` on free loopback ports; ``rss()`` of it and its workers."""

    def __init__(self, data_dir: Path, *args: str):
        self.stderr = open(data_dir.parent / f"stderr-{time.monotonic_ns()}.txt", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "forgelab", "serve", "--smtps", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--policy", "strict", "--smtp", "127.0.0.1:0",
             "--pop3", "127.0.0.1:0", "--data", str(data_dir), "--quiet", "--web", "off", *args],
            stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL)
        self.smtp = None
        while self.smtp is None:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"forgelab serve exited: {Path(self.stderr.name).read_text()}")
            m = re.match(r"\s+SMTP\s+([\d.]+):(\d+)", line)
            if m:
                self.smtp = (m[1], int(m[2]))
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # the banner's rest: never blocks it

    def rss(self) -> int:
        me = psutil.Process(self.proc.pid)
        return sum(p.memory_info().rss for p in [me, *me.children(recursive=True)])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.stderr.close()


@pytest.mark.parametrize("args", [(), ("--driver", "selector"), ("--workers", "2")],
                         ids=["threads", "selector", "workers-2"])
def test_a_class_holding_unfinished_data_keeps_the_servers_memory_bounded(tmp_path, args):
    data = tmp_path / "data"
    server = ServerProcess(data, *args)
    clients = []
    try:
        time.sleep(0.5)
        before = server.rss()
        for _ in range(CLIENTS):
            c = Client(server.smtp, greet="smtp")
            for line in ("EHLO me.example", "MAIL FROM:<a@shop.example>", "RCPT TO:<alice@corp.example>"):
                assert c.cmd(line)[0] == 250
            assert c.cmd("DATA")[0] == 354
            clients.append(c)
        text = lines(1024 * 1024)
        for _ in range(HELD // len(text)):
            for c in clients:
                c.send(text)
        # The server has read it all once (nearly) all of it is in the spool, or in its memory.
        on_disk = lambda: spool_bytes(data / "spool")
        wait_for(lambda: on_disk() > CLIENTS * (HELD - 2 * 1024 * 1024) or server.rss() - before > CLIENTS * HELD * 3 // 4,
                 timeout=30, what="the server to read every client's text")
        grown = server.rss() - before
        # Before the spool, the server held it all in memory: CLIENTS * HELD = 80 MB, and more.
        assert grown < 40 * 1024 * 1024, f"the server grew by {grown / 2**20:.0f} MB"
        for c in clients:
            c.close()
        wait_for(lambda: on_disk() == 0 and not list((data / "spool").glob("*.spool")), timeout=15,
                 what="the spool to empty")
    finally:
        for c in clients:
            c.close()
        server.stop()
