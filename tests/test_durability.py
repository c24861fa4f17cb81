"""A 250 means the message is on disk: kill -9 the server under load, restart it, count.

The server runs as a real subprocess (``python -m forgelab serve``); several client
threads send mail until it is killed with SIGKILL. After a restart on the same data
directory every message that got a 250 must be there and whole, and nothing partial
may be visible in ``new/`` or ``cur/``. POP3 deletions are only made by QUIT: a
kill in the middle of a session deletes nothing, and UIDLs survive restarts.
"""
from __future__ import annotations

import hashlib
import os
import poplib
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(90)

CLIENTS = 4
ID = re.compile(rb"^X-Test-Id: (\S+)\r?$", re.MULTILINE)
DIGEST = re.compile(rb"^X-Test-Digest: ([0-9a-f]{64})\r?$", re.MULTILINE)


class ServerProcess:
    """``forgelab serve`` on free loopback ports, in its own process."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.stderr = open(data_dir.parent / f"stderr-{time.monotonic_ns()}.txt", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "forgelab", "serve", "--smtps", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--smtp", "127.0.0.1:0", "--pop3", "127.0.0.1:0",
             "--data", str(data_dir), "--quiet", "--web", "off"],
            stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL)
        self.smtp = self.pop3 = None
        while self.smtp is None or self.pop3 is None:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"forgelab serve exited: {Path(self.stderr.name).read_text()}")
            m = re.match(r"\s+(SMTP|POP3)\s+([\d.]+):(\d+)", line)
            if m:
                setattr(self, m[1].lower(), (m[2], int(m[3])))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc.stdout.close()
        self.stderr.close()


@pytest.fixture
def servers(tmp_path):
    started: list[ServerProcess] = []

    def start() -> ServerProcess:
        server = ServerProcess(tmp_path / "data")
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.kill()


def message(test_id: str, size: int) -> bytes:
    body = b"".join(hashlib.sha256(f"{test_id}-{i}".encode()).hexdigest().encode() + b"\r\n"
                    for i in range(size // 66 + 1))
    digest = hashlib.sha256(body).hexdigest()
    return (f"From: load@shop.example\r\nTo: alice@corp.example\r\nSubject: load {test_id}\r\n"
            f"X-Test-Id: {test_id}\r\nX-Test-Digest: {digest}\r\n\r\n").encode() + body


def whole(data: bytes) -> str | None:
    """The test id of a stored message if it is complete (body matches its digest), else None."""
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    head, sep, body = data.partition(b"\r\n\r\n")
    m_id, m_digest = ID.search(head), DIGEST.search(head)
    if not (sep and m_id and m_digest):
        return None
    return m_id[1].decode() if hashlib.sha256(body).hexdigest().encode() == m_digest[1] else None


def load(address, worker: int, acknowledged: list[str], stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        try:
            with smtplib.SMTP(*address, timeout=10) as smtp:
                while not stop.is_set():
                    n += 1
                    test_id = f"w{worker}-{n}"
                    smtp.sendmail("load@shop.example", ["alice@corp.example"],
                                  message(test_id, 2_000 + (n * 7919 + worker * 104729) % 120_000))
                    acknowledged.append(test_id)  # only after the 250 arrived
        except (OSError, smtplib.SMTPException):
            return  # the server was killed under us


def visible_files(data_dir: Path):
    for part in ("new", "cur"):
        yield from (data_dir / "mail" / "alice" / part).iterdir()


def test_every_acknowledged_message_survives_sigkill_under_load(servers):
    server = servers()
    acknowledged: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(server.smtp, w, acknowledged, stop)) for w in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()  # mid-load: clients are in the middle of DATA
    stop.set()
    for t in threads:
        t.join(15)
    assert len(acknowledged) >= 40

    restarted = servers()
    data_dir = restarted.data_dir
    stored = {}
    for path in visible_files(data_dir):
        test_id = whole(path.read_bytes())
        assert test_id is not None, f"partial or damaged message visible: {path.name}"
        stored[test_id] = path
    missing = set(acknowledged) - set(stored)
    assert not missing, f"acknowledged with 250 but lost: {sorted(missing)[:5]}"

    # And the restarted server serves them all over POP3, whole.
    pop = poplib.POP3(*restarted.pop3, timeout=10)
    try:
        pop.user("alice")
        pop.pass_("rabbit-hole")
        count, _ = pop.stat()
        assert count == len(stored)
        seen = {whole(b"\r\n".join(pop.retr(n)[1]) + b"\r\n") for n in range(1, count + 1)}
        assert set(acknowledged) <= seen
    finally:
        pop.quit()


def _pop3(address) -> poplib.POP3:
    pop = poplib.POP3(*address, timeout=10)
    pop.user("alice")
    pop.pass_("rabbit-hole")
    return pop


def test_pop3_kill_mid_session_deletes_nothing_and_uidls_survive_restarts(servers):
    server = servers()
    with smtplib.SMTP(*server.smtp, timeout=10) as smtp:
        for i in range(3):
            smtp.sendmail("a@shop.example", ["alice@corp.example"], message(f"m{i}", 500))
    pop = _pop3(server.pop3)
    uidls = pop.uidl()[1]
    assert len(uidls) == 3
    pop.dele(1)
    pop.dele(2)
    server.kill()  # the session never reached QUIT: UPDATE never happened
    pop.sock.close()

    server = servers()
    pop = _pop3(server.pop3)  # the maildrop lock died with the process
    try:
        assert pop.uidl()[1] == uidls  # same messages, same unique ids
        pop.dele(3)
    finally:
        pop.quit()  # now the deletion counts
    server.kill()

    server = servers()
    pop = _pop3(server.pop3)
    try:
        assert pop.uidl()[1] == uidls[:2]
    finally:
        pop.quit()


def test_leftovers_in_tmp_are_never_shown(servers, tmp_path):
    """What a kill leaves in tmp/ (a half-written file) is invisible to POP3."""
    server = servers()
    with smtplib.SMTP(*server.smtp, timeout=10) as smtp:
        smtp.sendmail("a@shop.example", ["alice@corp.example"], message("complete", 500))
    server.kill()
    tmp = server.data_dir / "mail" / "alice" / "tmp"
    (tmp / f"{int(time.time())}.M1P{os.getpid()}Q1.half,S=99999").write_bytes(b"Subject: half\r\n\r\nonly a pa")
    server = servers()
    pop = _pop3(server.pop3)
    try:
        assert pop.stat()[0] == 1
        assert whole(b"\r\n".join(pop.retr(1)[1]) + b"\r\n") == "complete"
    finally:
        pop.quit()


def test_delivery_fsyncs_the_file_and_the_new_directory_before_returning(tmp_path, monkeypatch):
    """SIGKILL cannot show a missing fsync (the page cache survives the process); this can."""
    from forgelab.store import MailStore

    store = MailStore(tmp_path / "mail")
    store.deliver("alice", b"Subject: warm-up\r\n\r\nx\r\n")  # folders exist now
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    key = store.deliver("alice", b"Subject: durable\r\n\r\nx\r\n")
    new_dir = str((tmp_path / "mail" / "alice" / "new").resolve())
    assert any(p.endswith(f"/tmp/{key}") for p in synced)  # the data, before the rename
    assert synced[-1] == new_dir  # the rename itself, last
