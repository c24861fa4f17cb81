"""The threaded server: pool threads reused, one per connection at a time, timeouts, clean stop."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from forgelab.drivers import threaded
from forgelab.drivers.connection import Connection, Limits
from forgelab.drivers.threaded import ThreadedServer

pytestmark = pytest.mark.timeout(30)


def echo_server(handle=None, **kwargs) -> ThreadedServer:
    seen = []

    def echo(conn: Connection) -> None:
        seen.append(threading.current_thread().ident)
        conn.sendall(b"hello\n")
        while data := conn.recv(1024):
            conn.sendall(data)

    server = ThreadedServer("test", "127.0.0.1", 0, handle or echo, b"busy\n", **kwargs).start()
    server.seen = seen
    return server


def talk(address, text: bytes = b"ping\n") -> bytes:
    with socket.create_connection(address, timeout=5) as s:
        assert s.recv(64) == b"hello\n"
        s.sendall(text)
        return s.recv(64)


@pytest.mark.parametrize("kernel", [False, True])
def test_clients_one_after_another_reuse_one_pool_thread(kernel):
    server = echo_server(kernel_timeouts=kernel)
    try:
        for _ in range(20):
            assert talk(server.address) == b"ping\n"
        deadline = time.monotonic() + 5
        while server.active_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        # Reused, not one per client; a client may still arrive before the last thread is back in the pool.
        assert len(set(server.seen)) <= 5
        assert server.threads == len(set(server.seen))
    finally:
        server.stop()


def test_each_connection_has_its_own_thread_while_it_lasts():
    arrived = threading.Barrier(25, timeout=10)

    def wait_for_all(conn):
        arrived.wait()  # only returns when 25 handlers run at the same time
        conn.sendall(b"all here\n")

    server = echo_server(wait_for_all)
    try:
        clients = [socket.create_connection(server.address, timeout=10) for _ in range(25)]
        assert all(c.recv(64) == b"all here\n" for c in clients)
        for c in clients:
            c.close()
        assert server.threads >= 25
    finally:
        server.stop()
    assert server.threads == 0


def test_idle_pool_threads_end_after_a_quiet_spell(monkeypatch):
    monkeypatch.setattr(threaded, "IDLE_WORKER_SECONDS", 0.2)
    server = echo_server()
    try:
        clients = [socket.create_connection(server.address, timeout=5) for _ in range(5)]
        assert all(c.recv(64) == b"hello\n" for c in clients)
        for c in clients:
            c.close()
        deadline = time.monotonic() + 5
        while server.threads and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.threads == 0
        assert talk(server.address) == b"ping\n"  # and a new client still gets a thread
    finally:
        server.stop()


def test_kernel_timeouts_end_an_idle_read_as_socket_timeout():
    outcome = []

    def idle(conn):
        conn.set_timeout(0.3, kernel=True)
        start = time.monotonic()
        try:
            conn.recv(10)
        except socket.timeout:
            outcome.append(time.monotonic() - start)

    server = echo_server(idle, kernel_timeouts=True)
    try:
        with socket.create_connection(server.address, timeout=5) as s:
            assert s.recv(10) == b""  # the server gave up and closed
        assert len(outcome) == 1 and 0.2 < outcome[0] < 3
    finally:
        server.stop()


def test_stop_ends_accept_open_connections_and_idle_threads_quickly():
    server = echo_server(limits=Limits(idle_timeout=60))
    address = server.address
    talk(address)
    held = socket.create_connection(server.address, timeout=5)
    assert held.recv(64) == b"hello\n"
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    assert server.threads == 0 and server.active_connections == 0
    assert held.recv(64) == b""
    held.close()
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=1)


def test_a_full_server_answers_busy_and_keeps_serving_the_rest():
    server = echo_server(limits=Limits(max_connections=2, shed_idle_after=60))  # none turns idle meanwhile
    try:
        first = [socket.create_connection(server.address, timeout=5) for _ in range(2)]
        assert all(c.recv(64) == b"hello\n" for c in first)
        with socket.create_connection(server.address, timeout=5) as third:
            assert third.recv(64) == b"busy\n"
        first[0].close()
        deadline = time.monotonic() + 5
        while server.active_connections > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert talk(server.address) == b"ping\n"
        first[1].close()
    finally:
        server.stop()
