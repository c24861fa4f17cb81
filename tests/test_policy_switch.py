"""A policy switch at runtime applies the new policy's [server] limits to new connections.

The web view (POST /api/policy) and the API switch through ``lab.context.set_policy``; a
worker process of ``serve --workers`` gets the switch over its wire and makes the same call.
Connections open at the switch keep the limits they came with.
"""
from __future__ import annotations

import socket

import pytest

from forgelab.core.policy import load_policy
from forgelab.drivers.smtp import DRIVERS

from waiting import wait_for


def policy_file(tmp_path, name: str, server: str):
    path = tmp_path / f"{name}.toml"
    path.write_text(f'extends = "observe"\n[server]\n{server}\n')
    return load_policy(path)


def connect(address, timeout: float = 10.0) -> tuple[socket.socket, bytes]:
    """A connection and the first line the server sent on it."""
    sock = socket.create_connection(address, timeout=timeout)
    return sock, sock.makefile("rb").readline()


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (socket.timeout if it does not within the timeout)."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_switch_to_a_lower_connection_cap_refuses_the_connection_over_it(forgelab_server, tmp_path, driver):
    lab = forgelab_server(policy="observe", driver=driver)
    # Nothing may be shed for the newcomer: each connection counts as busy for an hour.
    lab.context.set_policy(policy_file(tmp_path, "two", "max_connections = 2\nshed_idle_after = 3600"))
    socks = []
    try:
        for _ in range(2):
            sock, greeting = connect(lab.smtp.address)
            socks.append(sock)
            assert greeting.startswith(b"220 ")
        sock, greeting = connect(lab.smtp.address)
        socks.append(sock)
        assert greeting.startswith(b"421 "), greeting
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_switch_to_a_short_idle_timeout_closes_new_idle_connections_and_keeps_the_open_ones(
        forgelab_server, tmp_path, driver):
    lab = forgelab_server(policy="observe", driver=driver)
    before, greeting = connect(lab.smtp.address)
    assert greeting.startswith(b"220 ")
    lab.context.set_policy(policy_file(tmp_path, "quick", "idle_timeout = 1"))
    after, greeting = connect(lab.smtp.address)
    try:
        assert greeting.startswith(b"220 ")
        assert b"421 " in read_to_end(after)  # within the 10 s timeout: the old limit was 300 s
        before.sendall(b"NOOP\r\n")  # open at the switch, idle longer than 1 s: still served
        assert before.recv(4096).startswith(b"250 ")
    finally:
        before.close()
        after.close()


def test_a_switch_applies_the_new_limits_to_pop3_too(forgelab_server, tmp_path):
    lab = forgelab_server(policy="observe")
    lab.context.set_policy(policy_file(tmp_path, "quick", "idle_timeout = 1"))
    sock, greeting = connect(lab.pop3.address)
    with sock:
        assert greeting.startswith(b"+OK")
        assert b"-ERR" in read_to_end(sock)


def test_a_switch_gives_the_login_throttle_the_new_settings_and_keeps_its_counts(forgelab_server, tmp_path):
    lab = forgelab_server(policy="observe")
    throttle = lab.context.login_throttle
    throttle.failure("127.0.0.9", "alice")
    lab.context.set_policy(policy_file(tmp_path, "tight", "login_free_failures = 1\nlogin_delay = 30"))
    assert lab.context.login_throttle is throttle and (throttle.free_failures, throttle.delay) == (1, 30)
    throttle.failure("127.0.0.9", "alice")  # the second: over the new free one, with the one before the switch
    assert 0 < throttle.attempt("127.0.0.9", "alice") <= 30  # under observe's 3 free failures: 0


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_switch_reaches_the_limits_of_a_worker_process(forgelab_server, tmp_path, driver):
    lab = forgelab_server(policy="observe", workers=2, driver=driver)
    worker = lab.workers.pids[0]
    lab.context.set_policy(policy_file(tmp_path, "quick", "idle_timeout = 1"))
    # The kernel spreads connections between the two processes: connect until one lands on the worker.
    socks = []
    try:
        on_worker = None
        for _ in range(64):
            sock, greeting = connect(lab.smtp.address)
            socks.append(sock)
            assert greeting.startswith(b"220 ")
            port = sock.getsockname()[1]
            opened = wait_for(lambda: [e for e in lab.recorded("session.open")
                                       if e["session"]["peer_port"] == port], what="the session.open")
            if opened[0].get("worker") == worker:
                on_worker = sock
                break
        assert on_worker is not None, "no connection reached the worker process"
        assert b"421 " in read_to_end(on_worker)  # the worker's old limit was 300 s
    finally:
        for sock in socks:
            sock.close()
