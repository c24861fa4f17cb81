"""The event log under a hostile class (issue 15, item 7): bounded growth, rotation, private files."""
from __future__ import annotations

import json
import os
import smtplib
import stat

import click
import pytest

from forgelab.app import Forgelab, Settings
from forgelab.cli.main import ByteSize
from forgelab.core.events import EventBus, JsonlLog, TranscriptBudget, bounded, clip
from forgelab.web.history import earlier_records

pytestmark = pytest.mark.timeout(120)

SENDER_IP = "127.0.2.1"  # shop.example's own address: its SPF passes, so strict delivers
USERS = ["alice", "bob", "carol", "student"]
BASE = ("From: Shop <news@shop.example>\r\nTo: alice@corp.example\r\nSubject: hi\r\n"
        "Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@shop.example>\r\n")
JUNK_LINES = [f"X-Junk-{i}: {'y' * 900}\r\n" for i in range(60)]
JUNK = "".join(JUNK_LINES)


def shapes():
    """(name, message, recipients): the shapes a student would send to grow the log."""
    one = ["alice@corp.example"]
    hundred = [f"{USERS[i % 4]}@corp.example" for i in range(100)]
    many_from = "From: news@shop.example," + ",\r\n ".join(f"u{i}@shop.example" for i in range(2000))
    yield "a 54 KB header block", (BASE + JUNK).encode() + b"\r\nhi\r\n", one
    yield "a 45 KB folded Subject", BASE.replace("Subject: hi", "Subject: " + "\r\n ".join(["S" * 900] * 50)).encode() + b"\r\nhi\r\n", one
    yield "2,000 From addresses", BASE.replace("From: Shop <news@shop.example>", many_from).encode() + b"\r\nhi\r\n", one
    yield "100 recipients and a 54 KB header block", (BASE + JUNK).encode() + b"\r\nhi\r\n", hundred
    yield "a 100 KB body", BASE.encode() + b"\r\n" + (b"x" * 76 + b"\r\n") * 1300, one
    words = " ".join(["=?utf-8?q?caf=C3=A9?="] * 2000)
    yield "2,000 encoded words", BASE.replace("Subject: hi", "Subject: " + words.replace(" ", "\r\n ", 1999)).encode() + b"\r\nhi\r\n", one


class CountingSMTP(smtplib.SMTP):
    """smtplib that counts every byte it sends: the bytes the server received."""

    sent = 0

    def send(self, s):
        CountingSMTP.sent += len(s.encode("ascii") if isinstance(s, str) else s)
        return super().send(s)


@pytest.mark.parametrize("name,message,rcpts", list(shapes()), ids=[s[0] for s in shapes()])
def test_the_log_grows_less_than_twice_the_bytes_received(forgelab_server, name, message, rcpts):
    lab = forgelab_server(policy="strict")
    log = lab.data_dir / "events.jsonl"
    lab.bus.flush()
    before = log.stat().st_size
    CountingSMTP.sent = 0
    for _ in range(3):
        with CountingSMTP(*lab.smtp.address, timeout=30, source_address=(SENDER_IP, 0)) as client:
            client.ehlo("mail.shop.example")
            try:
                client.sendmail("news@shop.example", rcpts, message)
            except smtplib.SMTPResponseException:
                pass  # refused or delivered, the log must stay small
    lab.recorder.wait_for("session.close", 3)
    lab.bus.flush()
    growth = log.stat().st_size - before
    assert growth < 2 * CountingSMTP.sent, f"{name}: {growth} bytes logged for {CountingSMTP.sent} received"
    for line in log.read_bytes().splitlines():
        assert len(line) < 32 * 1024  # no event holds the message again


def test_a_delivery_names_the_stored_message_and_lists_verdicts_once(forgelab_server):
    lab = forgelab_server(policy="strict")
    message = (BASE + "".join(JUNK_LINES[:5])).encode() + b"\r\nhi\r\n"
    with smtplib.SMTP(*lab.smtp.address, timeout=30, source_address=(SENDER_IP, 0)) as client:
        client.ehlo("mail.shop.example")
        client.sendmail("news@shop.example", ["alice@corp.example"], message)
    (delivered,) = lab.recorder.wait_for("message.delivered")
    import hashlib

    assert delivered["sha256"] == hashlib.sha256(message).hexdigest() and delivered["size"] == len(message)
    assert delivered["locations"][0][:2] == ["alice", "inbox"]
    assert all(set(v) == {"check", "result", "action"} for v in delivered["verdicts"])
    full = {v["verdict"]["check"] for v in lab.recorded("verdict") if v["session_id"] == delivered["session_id"]}
    assert {v["check"] for v in delivered["verdicts"]} <= full  # the full verdicts are the verdict events


def test_attacker_strings_are_clipped_with_a_marker():
    assert clip("x" * 1500) == "x" * 1000 + "… [500 more characters]"
    assert clip(None) is None and clip("short") == "short"
    details = {"parsers": {"a": [f"u{i}@x" for i in range(500)]}, "why": "y" * 5000,
               "deep": {"a": {"b": {"c": {"d": {"e": 1}}}}}, **{f"k{i}": i for i in range(40)}}
    out = bounded(details)
    assert out["parsers"]["a"][-1] == "… [480 more items]" and len(out["parsers"]["a"]) == 21
    assert out["why"].endswith("… [4000 more characters]")
    assert out["deep"]["a"]["b"]["c"] == "… [1 entries not kept]"
    assert len(out) == 21 and out["…"] == "23 more entries"
    assert len(json.dumps(out)) < 8000


def test_the_log_rotates_at_its_cap_and_the_history_reader_reads_across(tmp_path):
    path = tmp_path / "events.jsonl"
    bus, log = EventBus(), JsonlLog(path, max_bytes=4096, keep=2)
    bus.subscribe(log)
    for n in range(1, 401):
        bus.publish("session.line", session_id="s1", text=f"line {n:04d} " + "x" * 40)
        if n % 50 == 0:
            log.flush()
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]  # .3 and older were dropped
    for name in files:
        assert (tmp_path / name).stat().st_size <= 4096
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    seqs = [r["seq"] for r in earlier_records(path)]
    kept = sum(len((tmp_path / name).read_bytes().splitlines()) for name in files)
    assert seqs == list(range(401 - kept, 401))  # oldest first, across the three files
    assert kept > 2 * len(path.read_bytes().splitlines())
    assert [r["seq"] for r in earlier_records(path, max_bytes=3000)][-1] == 400


def test_the_log_and_the_data_directory_are_private(tmp_path):
    data = tmp_path / "lab"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    (data / "events.jsonl").write_bytes(b"")
    os.chmod(data / "events.jsonl", 0o644)  # an older forgelab made it so
    lab = Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=data)).start()
    try:
        lab.bus.publish("session.open", session={"id": "s1"})
        lab.bus.flush()
    finally:
        lab.stop()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "events.jsonl").stat().st_mode) == 0o600
    fresh = tmp_path / "new" / "events.jsonl"
    JsonlLog(fresh).close()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600 and stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700


def test_a_symlinked_log_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious\n")
    data = tmp_path / "lab"
    data.mkdir()
    (data / "events.jsonl").symlink_to(target)
    with pytest.raises(OSError, match="refusing to follow a symlink"):
        Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=data))
    assert target.read_bytes() == b"precious\n"
    (data / "events.jsonl").unlink()
    os.mkfifo(data / "events.jsonl")  # would block an open for writing
    with pytest.raises(OSError, match="not a regular file"):
        JsonlLog(data / "events.jsonl")


def test_event_log_size_option():
    size = ByteSize(minimum=64 * 1024)
    assert size.convert("64MB", None, None) == 64 * 1024 * 1024
    assert size.convert("512kb", None, None) == 512 * 1024 and size.convert("0", None, None) == 0
    for bad in ("1KB", "lots", "12TB", "-5"):
        with pytest.raises(click.BadParameter):
            size.convert(bad, None, None)


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_a_flood_of_commands_is_counted_not_logged_past_the_session_budget(forgelab_server, protocol):
    lab = forgelab_server(policy="strict")
    log = lab.data_dir / "events.jsonl"
    lab.bus.flush()
    before = log.stat().st_size
    if protocol == "smtp":
        payload = b"EHLO x.example\r\n" + b"NOOP\r\n" * 3000 + b"QUIT\r\n"
        address = lab.smtp.address
    else:
        payload = b"USER alice\r\nPASS rabbit-hole\r\n" + b"NOOP\r\n" * 3000 + b"QUIT\r\n"
        address = lab.pop3.address
    import socket

    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(payload)
        while sock.recv(65536):
            pass
    (closed,) = lab.recorder.wait_for("session.close")
    lab.bus.flush()
    growth = log.stat().st_size - before
    assert growth < 2 * len(payload), f"{growth} bytes logged for {len(payload)} received"  # 48x before
    lines = [r["text"] for r in lab.recorded("session.line")]
    assert lines.count(TranscriptBudget.NOTE) == 1
    assert closed["unlogged_lines"] > 4000  # counted: in and out, for most of the 3,000 NOOPs


def test_a_failed_rotation_loses_no_record(tmp_path):
    path = tmp_path / "events.jsonl"
    (tmp_path / "events.jsonl.1").mkdir()  # planted: events.jsonl cannot be renamed onto it
    bus, log = EventBus(), JsonlLog(path, max_bytes=200, keep=2)
    bus.subscribe(log)
    for n in range(1, 21):
        bus.publish("session.line", session_id="s1", text=f"line {n:04d}")
        log.flush()
    log.close()
    assert [r["seq"] for r in earlier_records(path)] == list(range(1, 21))  # all kept, unrotated


def test_a_rotated_log_that_is_not_a_file_is_skipped_when_read_back(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"seq": 7, "kind": "x"}\n')
    os.mkfifo(tmp_path / "events.jsonl.1")  # a FIFO nobody writes: opening it must not block
    assert [r["seq"] for r in earlier_records(path)] == [7]
    (tmp_path / "events.jsonl.1").unlink()
    (tmp_path / "events.jsonl.1").mkdir()
    assert [r["seq"] for r in earlier_records(path)] == [7]
