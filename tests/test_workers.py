"""serve --workers: more SMTP processes on one port, one store, one event log, one policy, one login throttle."""
import base64
import http.client
import io
import json
import os
import poplib
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner
from waiting import wait_for

from forgelab.cli.main import main
from forgelab.core.events import EventBus, JsonlLog
from forgelab.drivers.workers import EventForwarder

pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")

MESSAGES = 40
FORGED = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


# -- the forwarding, without processes ------------------------------------------------------


def test_worker_lines_are_republished_on_the_main_bus_with_the_worker_pid():
    worker_bus, out = EventBus(), io.BytesIO()
    writer = JsonlLog(stream=out)
    worker_bus.subscribe(writer)
    worker_bus.publish("worker.ready", pid=4321, address=["127.0.0.1", 2525])
    opened = worker_bus.publish("session.open", protocol="smtp", session={"id": "s1-4321-1", "peer_ip": "127.0.0.1"})
    worker_bus.publish("policy.changed", name="strict")  # the main process announced it already
    worker_bus.publish("worker.policy", name="strict")
    worker_bus.publish("session.close", protocol="smtp", session_id="s1-4321-1", reason="client quit")
    writer.flush()
    lines = out.getvalue().splitlines(keepends=True)
    assert len(lines) == 5

    main_bus, seen = EventBus(), []
    main_bus.publish("policy.changed", name="strict")
    main_bus.subscribe(seen.append)
    forwarder = EventForwarder(main_bus, 4321)
    forwarder.run(io.BytesIO(b"".join(lines[:2]) + b"not json\n" + b"".join(lines[2:])))

    assert forwarder.ready.is_set() and forwarder.address == ["127.0.0.1", 2525] and forwarder.error is None
    assert forwarder.switches == 1 and forwarder.ended
    assert [r["kind"] for r in seen] == ["session.open", "session.close"]
    first = seen[0]
    assert first["worker"] == 4321 and first["worker_seq"] == opened["seq"] and first["ts"] == opened["ts"]
    assert first["session"] == {"id": "s1-4321-1", "peer_ip": "127.0.0.1"}
    assert [r["seq"] for r in seen] == [2, 3]  # numbered by the main bus, after its own record
    assert seen[1]["reason"] == "client quit"


def test_the_main_log_gets_a_worker_line_as_it_was_decoded_and_encoded_without_decoding_it(tmp_path):
    worker_bus, out = EventBus(), io.BytesIO()
    writer = JsonlLog(stream=out)
    worker_bus.subscribe(writer)
    worker_bus.publish("session.line", session_id="s1-4321-1", protocol="smtp", direction="in",
                       text='MAIL FROM:<"\\x" \u00e9@example.net>\x07')
    worker_bus.publish("verdict", session_id="s1-4321-1", message_id=None, stage="helo",
                       verdict={"check": "spf-helo", "details": {"n": [1, 2.5, None, True]}}, action="accept")
    worker_bus.publish("worker.policy", name="strict")
    writer.flush()
    lines = out.getvalue().splitlines(keepends=True)

    def forward(log_only: bool) -> tuple[list[dict], list[str]]:
        bus = EventBus()
        bus.publish("policy.changed", name="strict")
        log = JsonlLog(tmp_path / f"events-{log_only}.jsonl")
        bus.subscribe(log)
        seen = []
        if not log_only:
            bus.subscribe(seen.append)
        forwarder = EventForwarder(bus, 4321)
        forwarder.run(io.BytesIO(b"".join(lines)))
        log.close()
        return seen, (tmp_path / f"events-{log_only}.jsonl").read_bytes().splitlines()

    seen, with_viewer = forward(log_only=False)
    _, log_only = forward(log_only=True)
    assert with_viewer == log_only and len(log_only) == 2 and forwarder_switched(lines)
    # What the log holds is what publishing the decoded record would have written.
    decoded = [json.loads(line) for line in lines[:2]]
    expected_bus, expected = EventBus(), io.BytesIO()
    expected_bus.publish("policy.changed", name="strict")
    expected_log = JsonlLog(stream=expected)
    expected_bus.subscribe(expected_log)
    for record in decoded:
        kind = record.pop("kind")
        record["worker_seq"] = record.pop("seq")
        record["worker"] = 4321
        expected_bus.publish(kind, **record)
    expected_log.flush()
    assert log_only == expected.getvalue().splitlines()
    assert [json.loads(line) for line in log_only] == seen
    assert seen[0]["text"].endswith("\x07") and seen[1]["verdict"]["details"]["n"] == [1, 2.5, None, True]


def forwarder_switched(lines: list[bytes]) -> bool:
    """The wire record among them is still taken as one (never passed on)."""
    forwarder = EventForwarder(EventBus(), 4321)
    forwarder.run(io.BytesIO(b"".join(lines)))
    return forwarder.switches == 1


def test_a_worker_throttle_line_goes_to_the_throttle_never_on_the_bus():
    bus = EventBus()
    seen: list = []
    bus.subscribe(seen.append)
    changes: list = []
    forwarder = EventForwarder(bus, 4321, lambda pid, change: changes.append((pid, change)))
    forwarder.run(io.BytesIO(b'{"throttle": ["failure", "127.0.0.1", "bob", 1.5]}\n'
                             b'{"throttle": ["failure", "127.0.0.1", "%b", 0]}\n'  # too long: not one
                             b'{"throttle": ["password", "127.0.0.1", "bob", 0]}\n'
                             b'{"throttle": ["success", "127.0.0.1", 0]}\n'
                             b'{"throttle": ["failure", "127.0.0.1", "bob", NaN]}\n'
                             b'{"throttle": ["success", "::1", "bob", 0]}\n' % (b"b" * 300)))
    assert changes == [(4321, ("failure", "127.0.0.1", "bob", 1.5)), (4321, ("success", "::1", "bob", 0.0))]
    assert seen == []


def test_each_smtp_process_gets_the_next_cpu_we_may_use_in_turn():
    from forgelab.drivers.workers import process_cpus

    mine = sorted(os.sched_getaffinity(0))
    cpus = process_cpus(5)
    if len(mine) < 2:
        assert cpus == [None] * 5
    else:
        assert cpus == [mine[i % len(mine)] for i in range(5)] and len(set(cpus[:2])) == 2


def test_a_failed_worker_line_is_its_error():
    forwarder = EventForwarder(EventBus(), 7)
    forwarder.run(io.BytesIO(b'{"seq": 1, "ts": 0, "kind": "worker.failed", "error": "port gone"}\n'))
    assert forwarder.ready.is_set() and forwarder.error == "port gone"


def test_workers_out_of_range_is_a_click_error():
    result = CliRunner().invoke(main, ["serve", "--workers", "0"])
    assert result.exit_code == 2 and "--workers" in result.output
    result = CliRunner().invoke(main, ["serve", "--workers", str((os.cpu_count() or 1) * 4 + 1)])
    assert result.exit_code == 2 and "--workers" in result.output


# -- the real thing ------------------------------------------------------------------------


def events(data_dir) -> list[dict]:
    path = data_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def thread_affinities(pid: int) -> list[set[int]]:
    """The CPUs each thread of ``pid`` may run on (a thread that ends meanwhile is left out)."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out.append(os.sched_getaffinity(int(tid)))
        except OSError:
            pass
    return out


def send(port: int, numbers: list[int], errors: list) -> None:
    for n in numbers:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.sendmail("news@news.example", ["alice@corp.example"],
                                f"From: news@news.example\r\nSubject: worker test {n}\r\n\r\nmessage {n}\r\n".encode())
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append((n, repr(exc)))


def forged(port: int) -> int:
    """A bank forgery from the attacker's address; the SMTP code that refused it (0: accepted)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=("127.0.66.1", 0)) as client:
        try:
            client.sendmail("alerts@bank.example", ["alice@corp.example"],
                            b"From: alerts@bank.example\r\nSubject: your account\r\n\r\nlog in now\r\n")
        except smtplib.SMTPSenderRefused as exc:
            return exc.smtp_code
        except smtplib.SMTPRecipientsRefused as exc:
            return next(iter(exc.recipients.values()))[0]
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code
    return 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize("driver", ["threads", "selector"])
def test_two_processes_share_the_port_the_store_the_log_and_the_policy(tmp_path, driver):
    smtp, pop3, web = free_port(), free_port(), free_port()
    data = tmp_path / "data"
    out_path = tmp_path / "out.txt"
    with open(out_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "forgelab", "serve", "--smtps", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--workers", "2", "--data", str(data),
                                 "--smtp", f"127.0.0.1:{smtp}", "--pop3", f"127.0.0.1:{pop3}",
                                 "--web", f"127.0.0.1:{web}", "--policy", "observe", "--driver", driver],
                                stdout=out, stderr=subprocess.STDOUT)
    worker_pids: list[int] = []
    try:
        banner = wait_for(lambda: re.search(r"SMTP processes: 2 \(this one and workers (\d+)\)", out_path.read_text())
                          or proc.poll() is not None, 30, "the banner")
        assert proc.poll() is None, out_path.read_text()
        worker_pids = [int(banner.group(1))]
        pids = {proc.pid, *worker_pids}
        if len(os.sched_getaffinity(0)) > 1:  # each SMTP process on a CPU of its own, every thread of it
            for pid in pids:
                assert {len(cpus) for cpus in thread_affinities(pid)} == {1}, pid
            assert os.sched_getaffinity(proc.pid) != os.sched_getaffinity(worker_pids[0])

        errors: list = []
        threads = [threading.Thread(target=send, args=(smtp, list(range(i, MESSAGES, 4)), errors)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors

        box = poplib.POP3("127.0.0.1", pop3, timeout=10)
        try:
            box.user("alice")
            box.pass_("rabbit-hole")
            assert box.stat()[0] == MESSAGES
            subjects = []
            for i in range(1, MESSAGES + 1):
                lines = box.retr(i)[1]
                subjects += [line.decode() for line in lines if line.startswith(b"Subject: worker test ")]
        finally:
            box.quit()
        assert sorted(subjects) == sorted(f"Subject: worker test {n}" for n in range(MESSAGES))

        delivered = wait_for(lambda: [r for r in events(data) if r["kind"] == "message.delivered"] if len(
            [r for r in events(data) if r["kind"] == "message.delivered"]) >= MESSAGES else None, 10, "the event log")
        assert len(delivered) == MESSAGES and len({r["message_id"] for r in delivered}) == MESSAGES
        opened = [r for r in events(data) if r["kind"] == "session.open" and r.get("protocol") == "smtp"]
        assert len({r["session"]["id"] for r in opened}) == len(opened)
        served_by = {r.get("worker", proc.pid) for r in delivered}
        assert served_by == pids  # 40 connections: the kernel gave both processes some
        assert {r.get("worker", proc.pid) for r in opened} <= pids

        conn = http.client.HTTPConnection("127.0.0.1", web, timeout=15)
        conn.request("POST", "/api/policy", json.dumps({"policy": "strict"}), {"Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["policy"] == "strict"
        conn.close()

        codes = [forged(smtp) for _ in range(FORGED)]
        assert codes == [550] * FORGED
        rejected = wait_for(lambda: [r for r in events(data) if r["kind"] == "message.rejected"]
                            if len([r for r in events(data) if r["kind"] == "message.rejected"]) >= FORGED else None,
                            10, "the refusals in the event log")
        assert {r.get("worker", proc.pid) for r in rejected} == pids  # every process refused some
        assert sum(r["kind"] == "policy.changed" for r in events(data)) == 1  # no echo from the worker

        stop_cleanly(proc, worker_pids, out_path)
    finally:
        kill_all(proc, worker_pids)


@pytest.mark.timeout(60)
def test_a_worker_that_cannot_start_fails_serve_with_one_line_and_leaves_no_process(tmp_path):
    # Loads in the main process, refuses in a worker: the worker fails, serve must too.
    plugin = tmp_path / "mainonly.py"
    plugin.write_text("import sys\nfrom forgelab import hookimpl\n\nif '_smtp-worker' in sys.argv:\n"
                      "    raise RuntimeError('not in a worker')\n\n\n@hookimpl\ndef forgelab_message(message):\n"
                      "    return None\n")
    proc = subprocess.Popen([sys.executable, "-m", "forgelab", "serve", "--smtps", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--workers", "3", "--data", str(tmp_path / "d"),
                             "--smtp", f"127.0.0.1:{free_port()}", "--pop3", f"127.0.0.1:{free_port()}",
                             "--web", "off", "--quiet", "--plugin", str(plugin)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=45)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2  # a WorkerError: a ForgelabError
    assert "worker" in err and "failed to start" in err and "not in a worker" in err
    assert "Traceback" not in err + out and len(err.strip().splitlines()) == 1
    pids = [int(p) for p in re.findall(r"process (\d+)", err)]
    assert pids and all(gone(pid) for pid in pids)
    assert not workers_of(tmp_path / "d")  # nor the two others


def workers_of(data_dir) -> list[int]:
    """Live worker processes whose settings name ``data_dir``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if b"_smtp-worker" in cmdline and str(data_dir).encode() in cmdline:
                found.append(int(entry))
    return found


BOB_WRONG = base64.b64encode(b"\0bob\0guess").decode()



def stop_cleanly(proc: subprocess.Popen, worker_pids: list[int], out_path) -> None:
    """SIGTERM to serve: it exits 0, its workers are gone, and it printed no traceback."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert proc.returncode == 0, out_path.read_text()
    assert all(gone(pid) for pid in worker_pids)
    assert "Traceback" not in out_path.read_text()


def kill_all(proc: subprocess.Popen, worker_pids: list[int]) -> None:
    """Whatever a failed test left running: serve and its workers."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    for pid in worker_pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

def wrong_login(port: int) -> tuple[int, float]:
    """One wrong AUTH PLAIN for bob on a fresh connection: its reply code and how long it took."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("guesser.example")
        started = time.monotonic()
        code, _ = client.docmd("AUTH", f"PLAIN {BOB_WRONG}")
        return code, time.monotonic() - started


@pytest.mark.timeout(120)
def test_an_auth_guesser_spread_over_two_processes_is_slowed_as_by_one(tmp_path):
    # 4 failures free per user (and per address + user); then a gap of 2 s between bob's attempts.
    policy = tmp_path / "throttle.toml"
    policy.write_text('extends = "observe"\n[server]\nlogin_free_failures = 3\nlogin_user_free_failures = 3\n'
                      'login_delay = 2\nlogin_max_delay = 2\nlogin_ip_free_failures = 1000\n')
    smtp, pop3 = free_port(), free_port()
    data = tmp_path / "data"
    out_path = tmp_path / "out.txt"
    with open(out_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "forgelab", "serve", "--smtps", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--workers", "2", "--data", str(data),
                                 "--smtp", f"127.0.0.1:{smtp}", "--pop3", f"127.0.0.1:{pop3}",
                                 "--web", "off", "--policy", str(policy)], stdout=out, stderr=subprocess.STDOUT)
    worker_pids: list[int] = []
    try:
        banner = wait_for(lambda: re.search(r"SMTP processes: 2 \(this one and workers (\d+)\)", out_path.read_text())
                          or proc.poll() is not None, 30, "the banner")
        assert proc.poll() is None, out_path.read_text()
        worker_pids = [int(banner.group(1))]

        def served_by(n: int) -> int:
            """The process that served the n-th login (its session ended: its throttle change was sent)."""
            def logged():
                records = events(data)
                closed = [r for r in records if r["kind"] == "session.close" and r.get("protocol") == "smtp"]
                auths = [r for r in records if r["kind"] == "session.auth"]
                return auths if len(closed) >= n and len(auths) >= n else None
            return wait_for(logged, 10, "the login's events")[n - 1].get("worker", proc.pid)

        # Only the worker -> main direction is checked: a worker writes its throttle line before
        # its session's close event on the same pipe, so once that close is in the log the main
        # process has the failure (the other direction has no such order for a test to wait on).
        counted = {proc.pid: 0, worker_pids[0]: 0}  # failures each process counted itself
        n = 0
        while counted[worker_pids[0]] < 4:
            assert n < 40, counted  # the kernel gives each process about half the connections
            code, _ = wrong_login(smtp)
            n += 1
            assert code == 535, (n, code)
            counted[served_by(n)] += 1
        # POP3 runs in the main process: bob's next attempt there waits out the gap that the
        # worker's failures opened (on its own, the main may have counted fewer than the free 3).
        client = poplib.POP3("127.0.0.1", pop3, timeout=30)
        try:
            client.user("bob")
            started = time.monotonic()
            with pytest.raises(poplib.error_proto, match="invalid user name or password"):
                client.pass_("not-his-password")
            assert time.monotonic() - started >= 1, counted
        finally:
            client.close()

        stop_cleanly(proc, worker_pids, out_path)
        assert not any("throttle" in r for r in events(data))  # the wire's lines are no events
    finally:
        kill_all(proc, worker_pids)


@pytest.mark.timeout(60)
def test_workers_start_whatever_folder_named_forgelab_the_current_directory_holds(tmp_path):
    # A student's checkout or notes in a folder named "forgelab": `python -m forgelab` run from
    # here would import it instead of the installed forgelab; the worker processes must not.
    (tmp_path / "forgelab").mkdir()
    (tmp_path / "forgelab" / "__init__.py").write_text("raise SystemExit('the wrong forgelab was imported')\n")
    out_path = tmp_path / "out.txt"
    with open(out_path, "w") as out:
        # -P: the main process itself is started as the console script would be, not from here
        proc = subprocess.Popen([sys.executable, "-P", "-m", "forgelab", "serve", "--smtps", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--workers", "2",
                                 "--data", str(tmp_path / "data"), "--smtp", f"127.0.0.1:{free_port()}",
                                 "--pop3", f"127.0.0.1:{free_port()}", "--web", "off"],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    worker_pids: list[int] = []
    try:
        banner = wait_for(lambda: re.search(r"SMTP processes: 2 \(this one and workers (\d+)\)", out_path.read_text())
                          or proc.poll() is not None, 30, "the banner")
        assert proc.poll() is None, out_path.read_text()
        worker_pids = [int(banner.group(1))]
        assert "wrong forgelab" not in out_path.read_text()
        stop_cleanly(proc, worker_pids, out_path)
    finally:
        kill_all(proc, worker_pids)
