"""Garbage at the real servers over 127.0.0.1, then a normal client: it must be served as usual."""
from __future__ import annotations

import poplib
import random
import smtplib
import socket
import threading
import time

import pytest

pytestmark = pytest.mark.timeout(60)

JUNK = [
    bytes(range(256)) * 40,                                   # every byte value
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 500,  # a TLS ClientHello where text belongs
    b"\xff\xfb\x01\xff\xfd\x03\xff\xf4\xff\xfd\x06",          # telnet IAC negotiation and interrupt
    b"A" * 1_000_000,                                         # a huge line, no newline at all
    (b"B" * 5000 + b"\r\n") * 200,                            # a thousand kilobytes of long lines
    b"\r\n" * 50_000,                                         # empty lines
    b"\x00" * 100_000 + b"\n",                                # NULs
    "ÿé€\ud800".encode("utf-8", "surrogatepass") * 1000 + b"\r\n",  # invalid UTF-8
    b"\r\r\r\n\n\n.\r\n.\n\r.\r",                             # endings in every form
]


def random_junk(seed: int) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200_000)))


def blast(address, data: bytes) -> None:
    """Send ``data`` as fast as the server takes it while draining its replies; ignore hang-ups."""
    with socket.create_connection(address, timeout=10) as sock:
        def drain():
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass
        reader = threading.Thread(target=drain)
        reader.start()
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # reset, broken pipe, not connected: the server hung up first
            pass
        reader.join(15)
        assert not reader.is_alive(), "the server kept the connection open after the client's EOF"


def smtp_works(app) -> None:
    before = len(app.store.list("alice"))
    with smtplib.SMTP(*app.smtp.address, timeout=10) as smtp:
        smtp.ehlo("normal.example")
        smtp.sendmail("someone@shop.example", ["alice@corp.example"], b"Subject: normal\r\n\r\nstill here\r\n")
    assert len(app.store.list("alice")) == before + 1


def pop3_works(app) -> None:
    pop = poplib.POP3(*app.pop3.address, timeout=10)
    try:
        pop.user("alice")
        pop.pass_("rabbit-hole")
        count, _ = pop.stat()
        assert count >= 1
        assert b"still here" in b"\r\n".join(pop.retr(count)[1])
    finally:
        pop.quit()


def wait_idle(app, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (app.smtp._server.active_connections or app.pop3._server.active_connections) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.smtp._server.active_connections == 0 and app.pop3._server.active_connections == 0


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from forgelab.app import Forgelab, Settings

    lab = Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=tmp_path_factory.mktemp("fuzz"))).start()
    yield lab
    lab.stop()


@pytest.mark.parametrize("junk", JUNK + [random_junk(seed) for seed in range(4)],
                         ids=[f"fixed{i}" for i in range(len(JUNK))] + [f"random{s}" for s in range(4)])
def test_junk_at_both_servers_then_the_next_client_is_served_normally(app, junk):
    blast(app.smtp.address, junk)
    blast(app.pop3.address, junk)
    smtp_works(app)
    pop3_works(app)


def test_junk_inside_data_and_inside_a_pop3_login(app):
    blast(app.smtp.address, b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@corp.example>\r\nDATA\r\n"
          + random_junk(99) + b"A" * 12_000_000)  # bigger than the 10 MB limit, never ended
    blast(app.pop3.address, b"USER alice\r\nPASS " + b"p" * 100_000 + b"\r\nPASS \x00\xff\r\n")
    smtp_works(app)
    pop3_works(app)


def test_many_junk_clients_at_once_leave_no_session_behind(app):
    socks = []
    for i in range(20):
        address = app.smtp.address if i % 2 else app.pop3.address
        s = socket.create_connection(address, timeout=10)
        s.sendall(random_junk(1000 + i)[:20_000])
        socks.append(s)
    for s in socks:
        s.close()  # hang up without QUIT, mid-garbage
    wait_idle(app)
    smtp_works(app)
    pop3_works(app)
