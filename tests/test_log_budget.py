"""The event log's budget per client address (issue 15, item 7): log_budget.py without I/O,
then a real lab flooded with short sessions and refused commands."""
from __future__ import annotations

import json
import socket
import time
from contextlib import contextmanager

import click
import pytest
from click.testing import CliRunner

from forgelab.app import Forgelab, Settings
from forgelab.cli.main import ByteSize, main
from forgelab.core.events import EventBus, JsonlLog, encode
from forgelab.core.log_budget import LogBudget
from forgelab.drivers.smtp import DRIVERS
from forgelab.testing import EventRecorder
from forgelab.web.history import earlier_records
from forgelab.web.index import EventIndex

pytestmark = pytest.mark.timeout(120)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def opened(sid: str, ip: str = "127.0.0.1") -> dict:
    return {"kind": "session.open", "session": {"id": sid, "peer_ip": ip}}


def line(sid: str) -> dict:
    return {"kind": "session.line", "session_id": sid}


def closed(sid: str) -> dict:
    return {"kind": "session.close", "session_id": sid}


# -- without I/O --------------------------------------------------------------------------


def test_an_address_gets_a_burst_of_two_seconds_then_its_rate():
    clock = Clock()
    budget = LogBudget(100, clock)  # burst: 200 bytes
    assert budget.admit(opened("s1"), 50)
    assert [budget.admit(line("s1"), 50) for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5  # 50 bytes more
    assert budget.admit(line("s1"), 50) and not budget.admit(line("s1"), 50)
    clock.now += 100  # never more than the burst
    assert [budget.admit(line("s1"), 50) for _ in range(5)] == [True] * 4 + [False]


def test_records_of_no_session_are_always_written():
    budget = LogBudget(10, Clock())
    assert not budget.admit(opened("s1"), 100)
    for record in ({"kind": "policy.changed", "name": "strict"}, {"kind": "worker.ready"},
                   line("never-opened"), {"kind": "session.open", "session": {"id": "x"}}):
        assert budget.admit(record, 10_000)


def test_a_session_held_back_at_its_open_is_held_back_whole_and_counted_once():
    clock = Clock()
    budget = LogBudget(100, clock)
    assert not budget.admit(opened("big"), 500)  # over the burst
    clock.now += 10  # the bucket is full again: the session still stays out
    assert not budget.admit(line("big"), 10) and not budget.admit(closed("big"), 10)
    (report,) = budget.due()
    assert report == {"ts": clock.now, "kind": "log.held_back", "peer_ip": "127.0.0.1", "records": 3,
                      "sessions": 1, "bytes": 520, "since": clock.now - 10}
    assert budget.admit(opened("next"), 50)  # the next session is logged


def test_a_session_whose_open_was_written_has_its_close_written_past_the_budget():
    clock = Clock()
    budget = LogBudget(100, clock)
    assert budget.admit(opened("s1"), 150) and not budget.admit(line("s1"), 100)
    assert budget.admit(closed("s1"), 100)  # the bucket goes below zero
    clock.now += 1.4  # 140 bytes: -50 + 140 = 90
    assert not budget.admit(opened("s2"), 100)
    (report,) = budget.due()
    assert (report["records"], report["sessions"], report["bytes"]) == (2, 1, 200)


def test_held_back_records_are_reported_once_a_second_per_address_and_all_at_the_end():
    clock = Clock()
    budget = LogBudget(100, clock)
    assert not budget.admit(opened("a1", "10.0.0.1"), 300)
    assert [r["peer_ip"] for r in budget.due()] == ["10.0.0.1"]  # the first one at once
    assert not budget.admit(opened("a2", "10.0.0.1"), 300)
    assert not budget.admit(opened("b1", "10.0.0.2"), 300)
    assert [r["peer_ip"] for r in budget.due()] == ["10.0.0.2"]  # 10.0.0.1 was told less than a second ago
    clock.now += 0.5
    assert not budget.admit(opened("a3", "10.0.0.1"), 300)
    assert budget.due() == []
    clock.now += 0.5
    (report,) = budget.due()
    assert (report["peer_ip"], report["sessions"], report["since"]) == ("10.0.0.1", 2, clock.now - 1)
    assert budget.due() == [] and budget.due(final=True) == []
    assert not budget.admit(opened("a4", "10.0.0.1"), 300)
    assert budget.due() == [] and [r["sessions"] for r in budget.due(final=True)] == [1]


def test_one_address_held_back_leaves_another_logged():
    budget = LogBudget(100, Clock())
    assert not budget.admit(opened("a", "127.0.0.1"), 300)
    assert budget.admit(opened("b", "127.0.0.2"), 150) and budget.admit(line("b"), 50)


def test_the_maps_stay_bounded():
    clock = Clock()
    budget = LogBudget(100, clock, max_addresses=10, max_sessions=50)
    for i in range(1000):
        sid = f"s{i}"
        assert budget.admit(opened(sid, f"10.0.{i // 250}.{i % 250}"), 10)
        if i % 2:
            budget.admit(closed(sid), 10)
        assert len(budget) <= 10 and len(budget._sessions) <= 50
    for i in range(20):  # sessions leave at their close
        budget.admit(opened(f"t{i}", "10.1.0.1"), 1)
        budget.admit(closed(f"t{i}"), 1)
    assert not any(sid.startswith("t") for sid in budget._sessions)
    # An address forgotten with records held back still has them reported.
    assert not budget.admit(opened("held", "10.9.9.9"), 500)
    for i in range(30):
        budget.admit(opened(f"u{i}", f"10.2.0.{i}"), 10)
    assert "10.9.9.9" not in budget._buckets
    assert [(r["peer_ip"], r["sessions"]) for r in budget.due()] == [("10.9.9.9", 1)]


def test_the_log_writes_held_back_reports_and_passes_encoded_lines_through(tmp_path):
    bus = EventBus()
    log = JsonlLog(tmp_path / "events.jsonl", rate=1000)
    bus.subscribe(log)
    bus.publish("session.open", session={"id": "s1", "peer_ip": "127.0.0.1"}, text="x" * 3000)
    bus.publish("session.close", session_id="s1")
    log(b'{"seq":9,"ts":1,"kind":"session.line","session_id":"s1","text":"' + b"y" * 5000 + b'"}')
    log.close()
    records = [json.loads(line) for line in (tmp_path / "events.jsonl").read_bytes().splitlines()]
    # The first record held back is told at once, the rest (the close) when the log closes.
    assert [r["kind"] for r in records] == ["log.held_back", "session.line", "log.held_back"]
    assert [(r["records"], r["sessions"]) for r in records[::2]] == [(1, 1), (1, 0)]
    assert "seq" not in records[0] and records[1]["text"] == "y" * 5000


def test_the_history_reader_and_the_web_index_take_a_held_back_record(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(encode(r) for r in [
        {"seq": 1, "ts": 1.0, "kind": "session.open", "protocol": "smtp", "session": {"id": "s1", "peer_ip": "127.0.0.1"}},
        {"ts": 2.0, "kind": "log.held_back", "peer_ip": "127.0.0.1", "records": 5, "sessions": 1, "bytes": 900,
         "since": 1.5},
        {"seq": 2, "ts": 3.0, "kind": "session.close", "protocol": "smtp", "session_id": "s1", "reason": "client quit"},
    ]) + b"\n")
    records = list(earlier_records(path))
    assert [r["kind"] for r in records] == ["session.open", "log.held_back", "session.close"]
    index = EventIndex()
    index.replay(records)
    index({"seq": 1, "ts": 4.0, "kind": "log.held_back", "peer_ip": "127.0.0.1", "records": 1, "sessions": 0,
           "bytes": 100, "since": 3.5})  # live, forwarded from a worker
    assert index.last_seq == 1


def test_event_log_rate_option():
    rate = ByteSize(minimum=1024, allow_off=True)
    assert rate.convert("128KB", None, None) == 128 * 1024
    assert rate.convert("off", None, None) == 0 and rate.convert("0", None, None) == 0
    with pytest.raises(click.BadParameter):
        rate.convert("10", None, None)
    with pytest.raises(click.BadParameter):
        ByteSize(minimum=64 * 1024).convert("off", None, None)
    help_text = CliRunner().invoke(main, ["serve", "--help"]).output
    assert "--event-log-rate" in help_text and "128KB" in help_text


# -- a real lab ---------------------------------------------------------------------------

RATE = 1000  # bytes a second: a session of banner and QUIT is ~900


@contextmanager
def lab(tmp_path, **settings):
    """A lab with a small event log budget; stopped (its log closed) when the block ends."""
    app = Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=tmp_path / "data",
                            event_log_rate=RATE, **settings))
    app.recorder = EventRecorder()
    app.bus.subscribe(app.recorder)
    app.start()
    try:
        yield app
    finally:
        app.stop()


def short_session(address, source: str = "127.0.0.1") -> None:
    with socket.socket() as sock:
        sock.settimeout(30)
        sock.bind((source, 0))
        sock.connect(address)
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220")
        sock.sendall(b"QUIT\r\n")
        assert reader.readline().startswith(b"221")
        reader.close()


def logged(app) -> list[dict]:
    return [json.loads(line) for line in (app.data_dir / "events.jsonl").read_bytes().splitlines()]


def session_of(record: dict) -> str | None:
    return record.get("session_id") or (record.get("session") or {}).get("id")


def check_held_back(app, ip: str) -> list[dict]:
    """The log.held_back records of ``ip`` count exactly the session records of ``ip`` that
    went on the bus and not into the log (records, sessions, bytes). Returns them."""
    bus = app.recorder.events
    ids = {r["session"]["id"] for r in bus if r["kind"] == "session.open" and r["session"]["peer_ip"] == ip}
    log = logged(app)
    in_log = {r["seq"] for r in log if "seq" in r}
    held = [r for r in bus if session_of(r) in ids and r["seq"] not in in_log]
    reports = [r for r in log if r["kind"] == "log.held_back" and r["peer_ip"] == ip]
    assert held and reports
    assert sum(r["records"] for r in reports) == len(held)
    assert sum(r["sessions"] for r in reports) == len([r for r in held if r["kind"] == "session.open"])
    assert sum(r["bytes"] for r in reports) == sum(len(encode(r)) + 1 for r in held)
    assert all(r["kind"] != "session.close" or session_of(r) not in {session_of(o) for o in log}
               for r in held)  # a session whose open was written has its close written
    return reports


def session_growth(app, before: int) -> int:
    """Bytes the log grew by, without its log.held_back records."""
    data = (app.data_dir / "events.jsonl").read_bytes()
    reports = [line for line in data.splitlines() if b'"kind":"log.held_back"' in line]
    return len(data) - before - sum(len(line) + 1 for line in reports)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_flood_of_short_connections_fills_the_log_at_the_rate_and_leaves_another_address_logged(tmp_path, driver):
    with lab(tmp_path, driver=driver) as app:
        app.bus.flush()
        before = (app.data_dir / "events.jsonl").stat().st_size
        started = time.time()
        for _ in range(300):
            short_session(app.smtp.address)
        short_session(app.smtp.address, source="127.0.0.2")  # while 127.0.0.1 is held back
        app.recorder.wait_for("session.close", 301)
    elapsed = time.time() - started
    # The burst, the rate, and the last close (written past the budget).
    assert session_growth(app, before) <= 2 * RATE + RATE * elapsed + 2048, elapsed  # ~270 KB unbudgeted
    check_held_back(app, "127.0.0.1")
    other = [r for r in app.recorder.events if r["kind"] == "session.open" and r["session"]["peer_ip"] == "127.0.0.2"]
    other_records = [r["seq"] for r in app.recorder.events if session_of(r) == other[0]["session"]["id"]]
    assert len(other_records) >= 4 and set(other_records) <= {r.get("seq") for r in logged(app)}
    assert {r["peer_ip"] for r in logged(app) if r["kind"] == "log.held_back"} == {"127.0.0.1"}


def test_one_session_of_refused_recipients_fills_the_log_at_the_rate(tmp_path):
    policy = tmp_path / "many-errors.toml"
    policy.write_text('extends = "observe"\n[server]\nmax_errors = 10000\n')
    with lab(tmp_path, policy=str(policy)) as app:
        app.bus.flush()
        before = (app.data_dir / "events.jsonl").stat().st_size
        started = time.time()
        with socket.create_connection(app.smtp.address, timeout=30) as sock:
            sock.sendall(b"EHLO x.example\r\nMAIL FROM:<a@shop.example>\r\n"
                         + b"RCPT TO:<nobody@elsewhere.example>\r\n" * 500 + b"QUIT\r\n")
            replies = b""
            while chunk := sock.recv(65536):
                replies += chunk
        assert replies.count(b"\r\n55") >= 500  # refused, every one
        app.recorder.wait_for("session.close")
    elapsed = time.time() - started
    assert session_growth(app, before) <= 2 * RATE + RATE * elapsed + 2048, elapsed
    (report, *_) = check_held_back(app, "127.0.0.1")
    assert report["sessions"] == 0  # its open was written, and so its close


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")
def test_with_two_processes_each_applies_the_budget_and_the_worker_reports_reach_the_log(tmp_path):
    with lab(tmp_path, workers=2) as app:
        app.bus.flush()
        before = (app.data_dir / "events.jsonl").stat().st_size
        started = time.time()
        for _ in range(300):  # the kernel gives each process about half of them
            short_session(app.smtp.address)
        worker = app.workers.pids[0]  # stopping the lab stops it first: its last records reach the log
    elapsed = time.time() - started
    # Each process: its burst, its rate, its last close (N workers: N times the rate).
    assert session_growth(app, before) <= 2 * (2 * RATE + RATE * elapsed + 2048), elapsed
    reports = [r for r in logged(app) if r["kind"] == "log.held_back"]
    assert {r.get("worker") for r in reports} == {None, worker}  # the main process's own, and the worker's
    assert sum(r["sessions"] for r in reports) == 300 - len([r for r in logged(app) if r["kind"] == "session.open"])
