"""The web view under a hostile class (issue 15, items 5 and 6): held connections, slowloris,
event-stream clients that never read. Real servers on loopback; the attackers are raw sockets."""
from __future__ import annotations

import http.client
import os
import poplib
import resource
import smtplib
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from forgelab.web import WebServer
from forgelab.web.streams import BEHIND, PENDING

pytestmark = pytest.mark.timeout(120)

MESSAGE = (b"From: News <a@news.example>\r\nTo: alice@corp.example\r\nSubject: hi\r\n"
           b"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <x@news.example>\r\n\r\n" + b"hello\r\n" * 20)

# A separate process holds the idle connections: only the server's descriptors count against this one's limit.
HOLDER = textwrap.dedent("""
    import resource, socket, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    held = []
    for _ in range(count):
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect((host, port))
        except OSError:
            s.close()
            continue
        held.append(s)
    print(len(held), flush=True)
    sys.stdin.read()  # hold them until the test says
""")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def get(web, path="/", timeout=10):
    conn = http.client.HTTPConnection(*web.address, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def send_mail(lab, timeout=10):
    with smtplib.SMTP(*lab.smtp.address, timeout=timeout) as client:
        client.sendmail("a@news.example", ["alice@corp.example"], MESSAGE)


def pop3_login(lab, timeout=10):
    client = poplib.POP3(*lab.pop3.address, timeout=timeout)
    try:
        client.user("alice")
        client.pass_("rabbit-hole")
        return client.stat()
    finally:
        client.quit()


@pytest.fixture
def few_descriptors():
    """This process may open only 512 more files than it has now: what a thousand held
    connections would exhaust, as they did with the usual soft limit of 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 512, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_thousand_held_web_connections_leave_the_web_view_smtp_and_pop3_working(forgelab_server, few_descriptors):
    lab = forgelab_server()
    web = WebServer(lab, port=0, request_timeout=60).start()  # the cap, not the timeout, is what holds here
    try:
        few_descriptors()
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, *map(str, web.address), "1000"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            held = int(holder.stdout.readline())
            assert held > 900  # the attacker holds its connections open
            started = time.monotonic()
            assert get(web)[0] == 200
            send_mail(lab)
            pop3_login(lab)
            assert time.monotonic() - started < 10
            assert len(web.guard.open) <= web.guard.max_connections
            assert web.guard.shed >= held - web.guard.max_connections  # GET / came after every one of them
        finally:
            holder.kill()
            holder.wait()
    finally:
        web.stop()


def test_a_full_web_view_sheds_the_oldest_idle_connection_for_a_new_one(forgelab_server):
    lab = forgelab_server()
    web = WebServer(lab, port=0, max_connections=20, request_timeout=60).start()
    idle = [socket.create_connection(web.address, timeout=5) for _ in range(40)]
    try:
        assert get(web, "/api/sessions")[0] == 200
        assert len(web.guard.open) <= 20
        closed = 0
        for sock in idle[:20]:  # the oldest were shed: the server closed them
            sock.settimeout(5)
            try:
                closed += sock.recv(1) == b""
            except ConnectionResetError:
                closed += 1
        assert closed == 20
    finally:
        for sock in idle:
            sock.close()
        web.stop()


@pytest.mark.parametrize("kept_alive", [False, True], ids=["first request", "next request"])
def test_a_slowloris_request_is_cut_at_the_request_timeout(forgelab_server, kept_alive):
    lab = forgelab_server()
    web = WebServer(lab, port=0, request_timeout=1.0).start()
    sock = socket.create_connection(web.address, timeout=10)
    try:
        if kept_alive:  # one honest request first: the next one gets the same deadline
            sock.sendall(b"GET /api/policy HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        header = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
        cut = False
        for byte in header:  # a byte every 0.1 s: the request would take 13 s
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            time.sleep(0.1)
        if not cut:
            sock.settimeout(5)
            try:
                cut = sock.recv(1) == b""
            except ConnectionResetError:
                cut = True
        assert cut and time.monotonic() - started < 5
        assert web.guard.timed_out >= 1
        assert get(web)[0] == 200
    finally:
        sock.close()
        web.stop()


def stuck_reader(web):
    """An event-stream client that never reads a byte (a small receive buffer fills at once)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(web.address)
    sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return sock


def wait_until(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def cpu_ticks(thread_id: int | None = None) -> int:
    """CPU time (user + system, in clock ticks) of this process or of one of its threads: work
    done, whatever else the machine runs meanwhile."""
    path = f"/proc/self/task/{thread_id}/stat" if thread_id else "/proc/self/stat"
    fields = open(path).read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_event_stream_clients_that_never_read_are_dropped_and_cost_the_mail_server_little(forgelab_server):
    lab = forgelab_server(policy="strict")
    web = WebServer(lab, port=0, write_timeout=2.0, stream_buffer=256 * 1024).start()
    try:
        stuck = [stuck_reader(web) for _ in range(5)]
        assert wait_until(lambda: len(web.streams) == 5)
        web_before, all_before = cpu_ticks(web._thread.native_id), cpu_ticks()
        with smtplib.SMTP(*lab.smtp.address, timeout=30) as client:
            for _ in range(300):
                client.sendmail("a@news.example", ["alice@corp.example"], MESSAGE)
        web_cpu, all_cpu = cpu_ticks(web._thread.native_id) - web_before, cpu_ticks() - all_before
        # Before: the web loop woke for every event and every client, 36% of the process's CPU
        # (SMTP fell to under half its pace); now about 7%.
        assert web_cpu < 0.15 * all_cpu, (web_cpu, all_cpu)
        big = "x" * 4000
        for n in range(2000):  # 8 MB of events: no receive buffer holds that
            lab.bus.publish("session.line", session_id="flood", protocol="smtp", direction="out", text=big)
        assert wait_until(lambda: len(web.streams) == 0)  # each fell behind and was dropped ...
        assert web.streams.dropped == 5
        assert wait_until(lambda: len(web.guard.open) == 0)  # ... and its connection cut at the write timeout
        for sock in stuck:
            sock.close()
        assert get(web)[0] == 200
    finally:
        web.stop()


def test_the_bus_never_waits_for_the_web_loop(forgelab_server):
    lab = forgelab_server()
    web = WebServer(lab, port=0).start()
    readers = [http.client.HTTPConnection(*web.address, timeout=10) for _ in range(5)]
    responses = []
    for reader in readers:
        reader.request("GET", "/api/events")
        responses.append(reader.getresponse())
        assert responses[-1].status == 200
    assert wait_until(lambda: len(web.streams) == 5)
    loop = web._server.servers[0].get_loop()
    blocked, release = threading.Event(), threading.Event()
    loop.call_soon_threadsafe(lambda: (blocked.set(), release.wait(30)))  # the web loop is stuck
    try:
        assert blocked.wait(5)
        started = time.monotonic()
        for n in range(3 * PENDING):
            lab.bus.publish("session.line", session_id="s", protocol="smtp", direction="in", text=f"NOOP {n}")
        send_mail(lab)  # the mail server does not notice
        assert time.monotonic() - started < 30
        assert len(loop._ready) <= 10  # one hand-out asked for: not one per record and client (150,000 before)
        assert len(web.streams._pending) <= PENDING
    finally:
        release.set()
    # The records that did not fit are lost for every client: each gets the last event and reconnects.
    for reader, response in zip(readers, responses):
        assert response.read().endswith(BEHIND)
        reader.close()
    web.stop()


def test_serve_raises_its_open_files_limit_to_the_hard_limit():
    from forgelab.app import raise_open_files_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        assert raise_open_files_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_event_streams_past_the_cap_get_503(forgelab_server):
    lab = forgelab_server()
    web = WebServer(lab, port=0, max_streams=2).start()
    streams = [http.client.HTTPConnection(*web.address, timeout=10) for _ in range(2)]
    try:
        for conn in streams:
            conn.request("GET", "/api/events")
            assert conn.getresponse().status == 200
        status, body = get(web, "/api/events")
        assert status == 503 and b"too many event streams" in body
        streams.pop().close()  # one leaves: a new one gets in
        assert wait_until(lambda: len(web.streams) == 1)
        conn = http.client.HTTPConnection(*web.address, timeout=10)
        streams.append(conn)
        conn.request("GET", "/api/events")
        assert conn.getresponse().status == 200
    finally:
        for conn in streams:
            conn.close()
        web.stop()
