"""The attack catalogue: complete, documented, and played against every shipped policy."""
from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from forgelab.attacks import catalogue
from forgelab.attacks.catalogue import OUTCOMES, POLICIES, all_entries, attacks, legitimate
from forgelab.attacks.docs import render
from forgelab.attacks.runner import matrix_text, run_catalogue
from forgelab.cli.attacks import attacks as attacks_cmd

pytestmark = pytest.mark.timeout(120)
DOCS = Path(__file__).resolve().parent.parent / "docs" / "attacks.md"

REQUIRED = [
    # espoofer server-side cases
    "spf-nonexistent-subdomain", "mailfrom-unclosed-comment", "dkim-selector-nul", "dkim-d-quote-injection",
    "dkim-d-comment-injection", "mailfrom-quote-injection", "mailfrom-comment-injection", "mailfrom-source-route",
    "from-two-headers", "from-space-before", "from-space-before-colon", "from-folded", "from-and-sender",
    "from-and-resent-from", "from-two-addresses", "from-encoded-word-address", "from-route-portion",
    "from-quoted-pair", "from-delimiter-precedence", "from-display-name-address",
    # DKIM replays
    "dkim-unsigned-header-edited", "dkim-duplicate-subject", "dkim-length-append", "dkim-replay-extra-from",
    "dkim-replay-null-sender", "dkim-replay-added-to", "dkim-replay-expired",
    # Unicode
    "unicode-trailing-space", "unicode-base64-address", "unicode-rtl-override", "unicode-idn-homograph",
    # SMTP smuggling, every ending
    *[f"smuggling-{name}" for name, _ in catalogue.SMUGGLING_ENDINGS],
    # classics
    "ceo-display-name", "lookalike-domain", "reply-to-hijack", "null-sender", "open-relay", "vrfy-enumeration",
    "expn-enumeration", "forged-authentication-results", "sender-without-from",
]


def test_catalogue_is_complete():
    ids = [a.id for a in all_entries()]
    assert len(ids) == len(set(ids))
    assert len(attacks()) >= 35
    assert not set(REQUIRED) - set(ids)
    assert {e for _, e in catalogue.SMUGGLING_ENDINGS} == {
        b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r",
        b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"}
    for a in all_entries():
        assert a.id and a.title and a.reference and a.explanation, a.id
        assert a.cls in catalogue.ATTACK_CLASSES, a.id
        assert set(a.expected) == set(POLICIES) and set(a.expected.values()) <= set(OUTCOMES), a.id
        assert a.legit or a.defences, a.id
        assert a.script.client_bytes().endswith(b"QUIT\r\n"), a.id


def test_smuggling_bytes_are_sent_as_written():
    for name, ending in catalogue.SMUGGLING_ENDINGS:
        sent = catalogue.get(f"smuggling-{name}").script.client_bytes()
        assert b"my order.\r\n" + ending[2:] + b"MAIL FROM:<ceo@shop.example>" in sent or \
            b"my order." + ending + b"MAIL FROM:<ceo@shop.example>" in sent, name
        assert sent.endswith(b"\r\n.\r\nQUIT\r\n")


def test_catalogue_bytes_are_reproducible():
    first = [a.script.client_bytes() for a in all_entries()]
    all_entries.cache_clear()
    assert [a.script.client_bytes() for a in all_entries()] == first
    assert b"t=1704099600" in catalogue.get("legit-bank").script.message


def test_docs_are_up_to_date():
    assert DOCS.read_text(encoding="utf-8") == render(), "regenerate: python -m forgelab.attacks.docs > docs/attacks.md"
    text = DOCS.read_text(encoding="utf-8")
    for a in all_entries():
        assert f'<a id="{a.id}"></a>' in text
    assert "Hello, a question about my order.\\r\\n" in text and "\n.\\n\n" in text  # bytes, escaped


def test_quarantined_mail_goes_where_the_docs_say(forgelab_server):
    from forgelab.attacks.runner import can_bind, play

    assert "Junk" not in render() and "`.Quarantine` Maildir++ folder, which POP3 does not show" in render()
    lab = forgelab_server(policy="strict")
    attack = catalogue.get("null-sender")
    assert attack.expected_for("strict") == "quarantined"
    play(attack, *lab.smtp.address, bind=can_bind(attack.script.source_ip))
    (event,) = lab.recorder.wait_for("message.delivered")
    assert event["action"] == "quarantine"
    (user, folder, key), = event["locations"]
    assert folder == "quarantine" and lab.store.folder_dir(user, folder).name == ".Quarantine"
    assert lab.store.list(user, "inbox") == []  # POP3 serves the inbox only


@pytest.fixture(scope="module")
def outcomes():
    return run_catalogue()


def test_every_outcome_matches_the_catalogue(outcomes):
    assert len(outcomes) == len(all_entries()) * len(POLICIES)
    bad = [o for o in outcomes if not o.ok]
    assert not bad, matrix_text(outcomes)


def test_strict_refuses_every_forgery(outcomes):
    let_in = [o.attack for o in outcomes if o.policy == "strict" and not o.legit
              and o.outcome not in ("rejected", "quarantined")]
    assert not let_in, matrix_text([o for o in outcomes if o.policy == "strict"])


def test_no_false_alarms(outcomes):
    legit = [o for o in outcomes if o.legit]
    assert len(legit) == len(legitimate()) * len(POLICIES)
    for o in legit:
        assert o.outcome == "accepted" and o.delivered == 1, (o.attack, o.policy, o.reply)
        assert not o.reacted, (o.attack, o.policy, o.reacted)


def test_open_lets_smuggled_messages_through(outcomes):
    smuggled = [o for o in outcomes if o.attack.startswith("smuggling-")]
    assert all(o.delivered == 2 for o in smuggled if o.policy == "open")
    assert all(o.delivered <= 1 for o in smuggled if o.policy != "open")


def test_outcomes_show_the_from_as_each_parser_reads_it(outcomes):
    o = next(o for o in outcomes if o.attack == "from-two-headers" and o.policy == "observe")
    view = o.from_views[0]
    assert view["server"] and set(view["parsers"]) >= {"policy.default", "compat32", "rfc5322", "lenient"}
    assert "from-ambiguity" in o.reacted and o.caught_by


def _cli(*args):
    return CliRunner().invoke(click.Group(commands={"attacks": attacks_cmd}), ["attacks", *args])


def test_cli_list_and_run():
    listed = _cli("list")
    assert listed.exit_code == 0
    assert len(listed.output.splitlines()) == len(all_entries())
    assert listed.output.splitlines()[0].startswith("spf-nonexistent-subdomain ")
    run = _cli("run", "--policy", "strict", "--only", "from-two-headers", "--only", "legit-bank")
    assert run.exit_code == 0, run.output
    assert "rejected [" in run.output and "2 entries x 1 policies: 2 as expected" in run.output
    as_json = _cli("run", "--policy", "open", "--only", "open-relay", "--json")
    assert as_json.exit_code == 0
    [record] = json.loads(as_json.output)
    assert record["attack"] == "open-relay" and record["outcome"] == "accepted" and record["ok"]
    unknown = _cli("run", "--only", "no-such-attack")
    assert unknown.exit_code == 1 and "no-such-attack" in unknown.output
    show = _cli("show", "smuggling-lflf")
    assert show.exit_code == 0 and "\\n.\\n" in show.output


def test_cli_show_prints_plain_text_not_markdown():
    for attack_id in ("smuggling-lflf", "smuggling-nullbefore", "unicode-rtl-override"):
        out = _cli("show", attack_id)
        assert out.exit_code == 0, out.output
        text = out.output
        for markup in ("<a id=", "###", "**", "```", "\\\\n", "\\\\r"):  # anchors, headings, bold, fences, \\n
            assert markup not in text, (attack_id, markup)
        assert text.startswith(f"{attack_id}: ")
        assert "Expected:     open: " in text and "Class:" in text and "Reference:" in text
        assert "\u202e" not in text  # a bidi control is shown as an escape, never sent to the terminal
    lflf = _cli("show", "smuggling-lflf").output
    assert "smuggling-lflf: SMTP smuggling with \\n.\\n\n" in lflf
    assert "\n  Hello, a question about my order.\\n\n  .\\n\n" in lflf
    assert "U+202E" in _cli("show", "unicode-rtl-override").output
    assert "  \\r\\n\\x00.\\r\\n" not in lflf and "\\x00" in _cli("show", "smuggling-nullbefore").output
    assert _cli("show", "nope").exit_code == 1
