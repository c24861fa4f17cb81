"""headers: RFC 5322 3.6 counts, on the parsed message and on the raw header block."""
import email
import email.policy
import inspect

import pytest

from forgelab.lab import load_lab
from forgelab.plugins.headers import AT_MOST_ONE, Headers
from forgelab.core.session import Envelope, Session

LAB = load_lab()
FROM = b"From: Shop <orders@shop.example>"
DATE = b"Date: Mon, 17 Jun 1996 11:24:00 -0700"


def message(*lines, body=b"Hello.\r\n"):
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


def check(raw, settings=None):
    plugin = Headers(settings or {})
    try:
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception:  # the plugin must cope with raw bytes alone
        parsed = None
    args = {"session": Session(peer_ip="127.0.0.1"), "envelope": Envelope(mail_from="orders@shop.example",
            rcpt_tos=["alice@corp.example"]), "message": parsed, "raw": raw, "lab": LAB}
    wanted = inspect.signature(plugin.forgelab_message).parameters
    return plugin.forgelab_message(**{k: v for k, v in args.items() if k in wanted})


CASES = [
    ("well-formed", message(FROM, b"To: alice@corp.example", b"Subject: hi", DATE, b"Message-ID: <1@shop.example>"),
     "pass", None),
    ("trace-fields-repeat", message(b"Received: from a", b"Received: from b", FROM, DATE), "pass", None),
    ("two-from", message(FROM, b"From: <ceo@bank.example>", DATE), "fail", "2 From headers"),
    ("no-from", message(b"To: alice@corp.example", DATE), "fail", "no From header"),
    ("sender-only", message(b"Sender: <ceo@bank.example>", DATE), "fail", "only a Sender"),
    ("no-date", message(FROM), "softfail", "no Date"),
    ("two-dates", message(FROM, DATE, DATE), "fail", "2 Date headers"),
    ("unparsable-from", message(b"From: (ceo@bank.example <x@evil.example>", DATE), "fail", "no address"),
    ("mailboxes-without-sender", message(b"From: <a@shop.example>, <ceo@bank.example>", DATE), "fail", "Sender"),
    ("mailboxes-with-sender", message(b"From: <a@shop.example>, <b@shop.example>", b"Sender: <a@shop.example>", DATE),
     "pass", None),
    ("space-before-colon", message(FROM, b"From : <ceo@bank.example>", DATE), "fail", "whitespace before the colon"),
    ("space-before-first-line", message(b" From: <ceo@bank.example>", FROM, DATE), "fail", "first header line"),
    ("folded-field-name", message(b"From", b" : <ceo@bank.example>", FROM, DATE), "fail", "folded"),
    ("line-without-colon", message(FROM, DATE, b"this is not a header"), "fail", "no colon"),
    # The worksheet's message: "From wombley@..." has no colon, so there is no From header at all.
    ("worksheet-from-line", message(b"From wombley@wimbledon.com", b"To: fred@flintstone.org", b"Subject: Greetings",
                                    b"Date: Mon, 17 Jun 96 11:24 PDT"), "fail", "mbox separator"),
]


@pytest.mark.parametrize("raw, expected, phrase", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_results(raw, expected, phrase):
    verdict = check(raw)
    assert verdict.check == "headers"
    assert verdict.result == expected, verdict.reason
    if phrase:
        assert phrase in verdict.reason


@pytest.mark.parametrize("name", AT_MOST_ONE)
def test_at_most_one(name):
    line = f"{name}: <x@shop.example>".encode()
    verdict = check(message(FROM, DATE, line, line))
    assert verdict.result == "fail"
    assert f"2 {name} headers" in verdict.reason
    assert verdict.details["counts"][name] == 2


def test_raw_count_sees_what_python_drops():
    # Python's parser drops "From :" (it looks like an mbox line); the raw count still sees two.
    raw = message(FROM, b"From : <ceo@bank.example>", DATE)
    assert len(email.message_from_bytes(raw, policy=email.policy.default).get_all("From")) == 1
    assert check(raw).details["counts"]["From"] == 2


def test_bare_lf_message_is_read_too():
    raw = b"From: <a@shop.example>\nFrom: <b@bank.example>\nDate: Mon, 17 Jun 1996 11:24:00 -0700\n\nhi\n"
    assert check(raw).details["counts"]["From"] == 2


def test_parsed_counts_are_the_per_name_counts():
    from forgelab.attacks.catalogue import all_entries

    for raw in {e.script.message for e in all_entries() if e.script.message}:
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        counts = Headers._parsed_counts(parsed)
        for name in {k.lower() for k in parsed.keys()} | {"from", "x-none"}:
            assert counts.get(name, 0) == sum(1 for key in parsed.keys() if key.lower() == name.lower())
    assert Headers._parsed_counts(None) == {}

    class Unreadable:
        def keys(self):
            raise ValueError("no")

    assert Headers._parsed_counts(Unreadable()) == {}
