"""forgelab/web/history.py: the tail of the event log, read back for a new web view."""
import json

from forgelab.web.history import earlier_records


def test_the_newest_records_are_read_and_a_cut_or_broken_line_is_skipped(tmp_path):
    log = tmp_path / "events.jsonl"
    records = [{"seq": n, "kind": "session.line", "text": "x" * 50} for n in range(1, 101)]
    log.write_text("\n".join(json.dumps(r) for r in records[:50]) + "\nnot json\n[1, 2]\n"
                   + "\n".join(json.dumps(r) for r in records[50:]) + "\n")
    assert list(earlier_records(log)) == records
    tail = list(earlier_records(log, max_bytes=1000))
    assert tail == records[-len(tail):] and 5 < len(tail) < 15  # the first, cut line is dropped


def test_no_log_no_history(tmp_path):
    assert list(earlier_records(tmp_path / "events.jsonl")) == []


def test_records_of_the_wrong_shape_are_skipped_and_history_counts_as_seq_0():
    from forgelab.web import EventIndex

    good = [{"seq": 40000, "ts": 1.0, "kind": "session.open", "protocol": "smtp",
             "session": {"id": "s1", "peer_ip": "127.0.0.1", "peer_port": 5}},
            {"seq": 40001, "ts": 2.0, "kind": "message.delivered", "session_id": "s1", "message_id": "m1",
             "envelope": {"mail_from": "a@b.example", "rcpt_tos": ["alice@corp.example"]}, "action": "accept",
             "verdicts": [{"check": "spf", "result": "pass", "reason": "ok", "details": {}}],
             "locations": [["alice", "inbox", "k1"]], "subject": "hello", "from_": "a@b.example", "size": 5}]
    bad = [{"kind": "message.delivered", "session_id": "s1", "message_id": "m2", "envelope": "x"},
           {"kind": "message.delivered", "session_id": "s1", "message_id": "m3", "locations": 7},
           {"kind": "message.delivered", "session_id": "s1", "message_id": "m4", "verdicts": ["spf"]},
           {"kind": "message.delivered", "session_id": "s1", "message_id": "m5",
            "envelope": {"rcpt_tos": "alice"}},
           {"kind": "session.line", "session_id": 12, "text": "HELO x"},
           {"kind": "verdict", "session_id": "s1", "verdict": {"check": ["spf"]}},
           {"kind": 5}, {"kind": "policy.changed", "name": "strict"}, "not a dict", {"ts": "noon", "kind": "session.close"}]
    index = EventIndex()
    index.replay(good + bad)
    assert [m["id"] for m in index.messages()] == ["m1"] and index.message("m1")["verdicts"][0]["check"] == "spf"
    (session,) = index.sessions()
    assert session["open"] is False and session["last_seq"] == 0 and index.message("m1")["seq"] == 0
    assert index.last_seq == 0 and index.policy is None
