"""The typed event records: same shape as the events published before them, frozen, documented,
and the outcome event names the check that decided it (so no consumer reads reply text)."""
from __future__ import annotations

import dataclasses
import json
import re
import smtplib
from collections import defaultdict
from pathlib import Path

import pytest

from event_scenario import RECORDED, play_every_kind, play_worker_wire
from forgelab.core.event_records import RECORDS, VERSION, EventRecord
from forgelab.core.event_schema import _field_docs, schema_markdown

NEW_KEYS = {"v", "deciding"}  # what version 1 added to the events published before it
REFUSED_AT_DATA = {"subject", "from_", "source"}  # added to message.rejected later (issue 17), same version
DOCS = Path(__file__).resolve().parent.parent / "docs" / "events.md"


def recorded() -> list[dict]:
    return [json.loads(line) for line in RECORDED.read_text().splitlines()]


def shapes(events) -> dict:
    """(kind, protocol) -> the sets of keys its events had (a kind's optional keys make several)."""
    out = defaultdict(set)
    for e in events:
        added = REFUSED_AT_DATA if e["kind"] == "message.rejected" else set()
        out[(e["kind"], e.get("protocol"))].add(frozenset(e) - {"seq", "ts"} - NEW_KEYS - added)
    return dict(out)


def test_the_recording_has_every_kind_the_server_publishes():
    assert {e["kind"] for e in recorded()} == set(RECORDS)


@pytest.mark.parametrize("event", recorded(), ids=lambda e: e["kind"])
def test_every_recorded_event_round_trips_through_its_record(event):
    cls = RECORDS[event["kind"]]
    record = cls.from_dict({"deciding": None, **event})
    out = record.to_dict()
    assert out["v"] == VERSION and out["kind"] == event["kind"]
    before = {k: v for k, v in event.items() if k not in ("seq", "ts")}
    assert {k: v for k, v in out.items() if k not in NEW_KEYS} == before
    assert set(out) - set(before) <= NEW_KEYS


@pytest.mark.parametrize("kind", sorted(RECORDS))
def test_records_are_frozen(kind):
    event = next(e for e in recorded() if e["kind"] == kind)
    record = RECORDS[kind].from_dict({"deciding": None, **event})
    field = dataclasses.fields(record)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, field, "changed")
    with pytest.raises((AttributeError, TypeError)):  # slots: no new attribute either
        record.extra = 1


def _normalised(text: str) -> str:
    """A line with what changes from run to run masked: ids, times, and sizes (a stored message
    holds ids and times, so its size varies by a few octets)."""
    text = re.sub(r"\b[spm][0-9a-f]{8}-\d+-\d+\b", "ID", text)
    text = re.sub(r"<[^<>]*@[^<>]*>", "<STAMP>", text) if text.startswith("+OK") else text
    return re.sub(r"\d{2}:\d{2}:\d{2}|(?<=[\s(])\d{4,}\b", "N", text)


def test_a_real_session_publishes_the_recorded_shapes_replies_and_verdicts(forgelab_server, tmp_path):
    lab = forgelab_server(policy="strict", event_log=False)
    play_every_kind(lab)
    lab.recorder.wait_for("policy.changed")
    lab.recorder.wait_for("session.close", 4)
    now = list(lab.recorder.events) + play_worker_wire(tmp_path / "worker")
    before = recorded()
    assert shapes(now) == shapes(before)
    assert all(e["v"] == VERSION for e in now)

    def dialogue(events):  # every line and outcome, in order, ids masked
        return [(e["kind"], e.get("direction"), _normalised(e.get("text") or e.get("reply") or ""),
                 e.get("stage"), e.get("action"), json.dumps(e.get("verdict", {}).get("check")))
                for e in events if e["kind"] in ("session.line", "verdict", "message.rejected", "message.delivered")]
    assert dialogue(now) == dialogue(before)


def test_the_outcome_event_names_the_check_the_ranking_chose_not_the_first_failing(forgelab_server, tmp_path):
    plugin = tmp_path / "two_checks.py"
    plugin.write_text(
        "from forgelab import hookimpl\nfrom forgelab.verdicts import Verdict\n\n"
        "class TwoChecks:\n    name = 'two-checks'\n    def __init__(self, settings):\n        pass\n"
        "    @hookimpl\n    def forgelab_mail_from(self, address):\n"
        "        return [Verdict('first-softfail', 'softfail', 'a softfail: strict tags it'),\n"
        "                Verdict('then-fail', 'fail', 'a fail: strict rejects it'),\n"
        "                Verdict('fail-again', 'fail', 'another fail, after the deciding one')]\n\n"
        "def forgelab_plugin(settings):\n    return TwoChecks(settings)\n")
    lab = forgelab_server(policy="strict", plugins=[str(plugin)])
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        client.ehlo("client.example")
        code, text = client.docmd("MAIL", "FROM:<someone@news.example>")
    (rejected,) = lab.recorder.wait_for("message.rejected")
    assert code == 550 and text.startswith(b"5.7.1 [then-fail]")
    assert rejected["deciding"] == "then-fail" and rejected["action"] == "reject"
    checks = [v["check"] for v in rejected["verdicts"]]
    assert checks.index("first-softfail") < checks.index("then-fail") < checks.index("fail-again")


def test_the_attack_runner_reads_the_deciding_check_not_the_reply(monkeypatch):
    from forgelab.attacks.catalogue import all_entries
    from forgelab.attacks.runner import _cell, run_policy
    from forgelab.core.pipeline import replies
    from forgelab.protocols.smtp import Reply

    entries = [a for a in all_entries() if a.id in ("spf-fail-direct", "from-two-headers")]
    plain = run_policy("strict", entries, bind=False)
    monkeypatch.setattr(replies, "refusal", lambda stage, decision: Reply(550, "5.7.1", "No. [not-a-check]"))
    reworded = run_policy("strict", entries, bind=False)
    assert [o.reply for o in reworded] != [o.reply for o in plain]  # the refusals were reworded
    assert [_cell(o) for o in reworded] == [_cell(o) for o in plain]
    assert [o.caught_by for o in reworded] == [o.caught_by for o in plain] and all(o.caught_by for o in plain)


@pytest.mark.parametrize("kind", sorted(RECORDS))
def test_every_field_of_every_record_is_documented(kind):
    cls = RECORDS[kind]
    assert issubclass(cls, EventRecord) and cls.__doc__
    assert set(_field_docs(cls)) == {f.name for f in dataclasses.fields(cls)}


def test_docs_events_md_holds_the_schema_the_records_define():
    text = DOCS.read_text()
    start, end = "<!-- schema: made by forgelab.core.event_schema.schema_markdown() -->", "<!-- end of schema -->"
    assert start in text and end in text, "docs/events.md lost its schema markers"
    held = text.split(start, 1)[1].split(end, 1)[0].strip()
    assert held == schema_markdown().strip(), (
        "docs/events.md differs from the records: paste forgelab.core.event_schema.schema_markdown() between its markers")
