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
