"""The event bus and its JSONL log: order kept, nothing lost, written off the publisher's thread."""
from __future__ import annotations

import json
import threading
import time

import pytest

from forgelab.core.events import EventBus, JsonlLog

pytestmark = pytest.mark.timeout(30)


def read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_record_from_many_threads_is_logged_once_in_seq_order(tmp_path):
    bus = EventBus()
    log = JsonlLog(tmp_path / "events.jsonl")
    bus.subscribe(log)

    def publisher(n):
        for i in range(500):
            bus.publish("session.line", session_id=f"s{n}", text=f"line {i}")

    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bus.flush()
    records = read(tmp_path / "events.jsonl")
    assert [r["seq"] for r in records] == list(range(1, 4001))
    for n in range(8):  # each thread's own records keep their order too
        assert [r["text"] for r in records if r["session_id"] == f"s{n}"] == [f"line {i}" for i in range(500)]
    log.close()


def test_flush_waits_for_the_writer_and_the_log_catches_up_on_its_own(tmp_path):
    bus = EventBus()
    log = JsonlLog(tmp_path / "events.jsonl")
    bus.subscribe(log)
    bus.publish("session.open", session={"id": "s1"})
    assert log.flush(5)
    assert [r["kind"] for r in read(tmp_path / "events.jsonl")] == ["session.open"]
    bus.publish("session.close", session_id="s1", reason="client quit")
    deadline = time.monotonic() + 5  # no flush: the writer gets there by itself, soon
    while len(read(tmp_path / "events.jsonl")) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r["kind"] for r in read(tmp_path / "events.jsonl")] == ["session.open", "session.close"]
    log.close()


def test_close_writes_what_is_queued_and_stops_the_thread(tmp_path):
    bus = EventBus()
    log = JsonlLog(tmp_path / "events.jsonl")
    bus.subscribe(log)
    for i in range(200):
        bus.publish("verdict", n=i, text="attacker \u202e text \x00")
    log.close()
    log.close()  # twice is harmless
    records = read(tmp_path / "events.jsonl")
    assert [r["n"] for r in records] == list(range(200))
    assert records[0]["text"] == "attacker \u202e text \x00"
    assert not log._thread.is_alive()
    bus.publish("after.close")  # a late record is dropped, not an error
    assert len(read(tmp_path / "events.jsonl")) == 200


def test_an_unencodable_record_is_logged_as_such_and_the_rest_still_are(tmp_path):
    bus = EventBus()
    log = JsonlLog(tmp_path / "events.jsonl")
    bus.subscribe(log)
    bus.publish("ok", n=1)
    bus.publish("odd", n=2, loop=float("nan"), key={(1, 2): "tuple keys cannot be JSON"})
    bus.publish("ok", n=3)
    log.close()
    records = read(tmp_path / "events.jsonl")
    assert [r["kind"] for r in records] == ["ok", "odd", "ok"]
    assert records[1]["error"] == "not serialisable"


def test_a_failing_subscriber_does_not_stop_the_others(tmp_path):
    bus = EventBus()
    seen = []

    def broken(record):
        raise RuntimeError("viewer bug")

    bus.subscribe(broken)
    unsubscribe = bus.subscribe(seen.append)
    bus.publish("a")
    unsubscribe()
    bus.publish("b")
    assert [r["kind"] for r in seen] == ["a"]
    bus.flush()  # no subscriber buffers: returns at once


def test_an_encoded_record_reaches_the_log_as_it_is_and_other_subscribers_decoded():
    bus = EventBus()
    bus.publish("first", n=1)

    class Raw(list):
        takes_encoded = True

        def __call__(self, line):
            self.append(line)

    raw, decoded = Raw(), []
    bus.subscribe(raw)
    bus.subscribe(decoded.append)
    bus.subscribe(decoded.append)
    bus.publish_encoded('"ts":1.5,"kind":"session.line","text":"é\\n","worker":7}'.encode())
    assert raw == ['{"seq":2,"ts":1.5,"kind":"session.line","text":"é\\n","worker":7}'.encode()]
    assert decoded[0] == {"seq": 2, "ts": 1.5, "kind": "session.line", "text": "é\n", "worker": 7}
    assert decoded[1] is decoded[0]  # decoded once, shared, as publish shares its record


def test_what_json_cannot_say_natively_is_logged_as_its_str_and_nothing_is_lost(tmp_path):
    import dataclasses
    import datetime

    from forgelab.core.events import decode, encode

    @dataclasses.dataclass
    class Point:
        x: int

    when = datetime.datetime(2026, 11, 29, 3, 0)
    record = {"seq": 1, "kind": "x", "point": Point(1), "when": when, "tags": {"a"}, "path": tmp_path,
              "raw": b"\xff", 7: "int key", "big": 2 ** 80, "lone": "\udcff"}
    line = encode(record)
    assert b"\n" not in line
    back = decode(line)
    assert back["point"] == str(Point(1)) and back["when"] == str(when) and back["tags"] == "{'a'}"
    assert back["path"] == str(tmp_path) and back["raw"] == "b'\\xff'" and back["7"] == "int key"
    assert back["big"] == 2 ** 80 and back["lone"] == "\udcff"  # past orjson: the json module, escaped
    assert decode(encode({"text": "é\x07"})) == {"text": "é\x07"}


def test_flush_counts_records_not_lines_so_a_later_record_is_waited_for_too(tmp_path):
    bus, path = EventBus(), tmp_path / "events.jsonl"
    log = JsonlLog(path)
    bus.subscribe(log)
    logged = 0
    for batch in (3, 1, 1, 2, 1, 5, 1):  # batches of several records, then single ones
        for n in range(batch):
            bus.publish("x", n=n)
        logged += batch
        assert log.flush() and len(read(path)) == logged
    log.close()


def test_close_is_prompt_and_complete_whenever_the_timer_is_due(tmp_path):
    path = tmp_path / "events.jsonl"
    for n in range(12):  # closing before, during and after the timer's own write
        log = JsonlLog(path)
        log({"seq": n, "kind": "x"})
        time.sleep(JsonlLog.FLUSH_DELAY * n / 8)
        started = time.monotonic()
        log.close()
        assert time.monotonic() - started < 1 and not log._thread.is_alive()
    assert [r["seq"] for r in read(path)] == list(range(12))


def test_a_big_burst_reaches_the_file_without_waiting_for_the_timer(tmp_path):
    bus, path = EventBus(), tmp_path / "events.jsonl"
    log = JsonlLog(path)
    log.FLUSH_DELAY = 60  # the timer would not write within this test: a full buffer must
    bus.subscribe(log)
    for i in range(2000):  # about 300 KB
        bus.publish("session.line", text="x" * 100, n=i)
    def complete_lines() -> list[dict]:  # the writer may be in the middle of a write
        return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]

    deadline = time.monotonic() + 10
    while len(complete_lines()) < 1000 and time.monotonic() < deadline:
        time.sleep(0.01)
    written = complete_lines()
    assert len(written) >= 1000 and [r["n"] for r in written] == list(range(len(written)))
    log.close()
    assert [r["n"] for r in read(path)] == list(range(2000))
