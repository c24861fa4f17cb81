"""Refusals a student can read (issue 17): the deciding check first, then the other failing
ones, ranked, on continuation lines; every line 7-bit and at most 512 octets; no reason twice."""
import shutil
import smtplib
import socket
import subprocess

import pytest

from forgelab.core.pipeline import replies
from forgelab.core.pipeline.decide import Decision
from forgelab.core.policy import Policy, load_policy
from forgelab.verdicts import Verdict

ATTACKER = "127.0.66.1"
FORGED = (b"From: Carol Danvers <carol@corp.example>\r\nTo: alice@corp.example\r\nSubject: wire\r\n"
          b"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\npay now\r\n")
# A third-party defence whose reasons carry attacker text: raw UTF-8, a bidi override, NUL,
# a zero-width space, U+FFFD, a long paragraph, and the same reason twice.
NOISY = '''from forgelab import Verdict, hookimpl

name = "noisy"
LONG = "the subject quotes " + "very long words " * 60


@hookimpl
def forgelab_message(message):
    odd = "caf\\u00e9 \\u202egnp.exe\\x00 zero\\u200bwidth \\ufffd"
    return [Verdict("noisy", "fail", "odd text: " + odd), Verdict("noisy", "fail", LONG),
            Verdict("noisy", "fail", LONG), Verdict("noisy", "softfail", "only a hint")]
'''


def policy(*defences, **actions) -> Policy:
    return Policy("t", defences={d: {} for d in defences},
                  actions={"default": {"fail": "reject", "softfail": "tag"}, **actions})


def test_the_deciding_check_is_the_harshest_then_the_first_in_policy_order():
    verdicts = [Verdict("iprev", "fail", "no PTR"), Verdict("dmarc", "fail", "not aligned"),
                Verdict("spf", "fail", "not allowed"), Verdict("lookalike", "softfail", "looks like")]
    decision = Decision.fold(verdicts, policy("spf", "iprev", "dmarc", "lookalike", iprev={"fail": "tag"}))
    assert decision.action == "reject" and decision.deciding.check == "spf"
    assert [v.check for v in decision.ranked] == ["spf", "dmarc", "iprev", "lookalike"]
    # a check the policy does not list ranks after those it lists
    decision = Decision.fold([Verdict("mine", "fail", "x")] + verdicts, policy("spf", "dmarc"))
    assert [v.check for v in decision.ranked][:3] == ["spf", "dmarc", "mine"]
    # a check named after its defence takes the defence's place
    decision = Decision.fold([Verdict("dkim", "fail", "x"), Verdict("spf-helo", "fail", "y")], policy("spf", "dkim"))
    assert decision.deciding.check == "spf-helo"


def test_a_refusal_lists_the_others_ranked_each_reason_once_and_at_most_ten_lines():
    verdicts = [Verdict("dkim", "fail", "body hash did not verify"), Verdict("arc", "fail", "body hash did not verify"),
                Verdict("dmarc", "fail", "not aligned"), Verdict("dmarc", "fail", "not aligned"),
                Verdict("headers", "softfail", "no Date"), Verdict("spf", "pass", "fine")]
    reply = replies.refusal("message", Decision.fold(verdicts, policy("spf", "dmarc", "dkim", "arc", "headers")))
    assert reply.lines == ("[dmarc] not aligned", "[dkim, arc] body hash did not verify", "[headers] no Date")
    assert reply.to_bytes() == (b"550-5.7.1 [dmarc] not aligned\r\n550-5.7.1 [dkim, arc] body hash did not verify\r\n"
                                b"550 5.7.1 [headers] no Date\r\n")
    many = [Verdict(f"c{i}", "fail", f"reason {i}") for i in range(25)]
    reply = replies.refusal("rcpt_to", Decision.fold(many, policy()))
    assert len(reply.lines) == 10 and reply.lines[0] == "[c0] reason 0"
    assert reply.lines[-1].startswith("... and 16 more failing checks")


def refused_at_data(lab) -> smtplib.SMTPDataError:
    with smtplib.SMTP(*lab.smtp.address, timeout=10, source_address=(ATTACKER, 0)) as client:
        client.ehlo("mail.phish.example")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("boss@phish.example", ["alice@corp.example"], FORGED)
    return refused.value


def check_lines(lines: list[bytes], deciding: str) -> None:
    assert len(lines) > 2 and lines[0].startswith(b"5.7.1 [" + deciding.encode() + b"] ")
    assert all(line.startswith(b"5.7.1 ") and line.isascii() and line.decode().isprintable()
               and len(line) + len(b"550-\r\n") <= 512 for line in lines)
    text = b"\n".join(lines)
    assert b"caf\\u00e9 \\u202egnp.exe\\x00 zero\\u200bwidth \\ufffd" in text
    assert text.count(b"the subject quotes") == 1 and b" [...]" in text


def test_a_strict_refusal_over_smtplib_and_raw_bytes(forgelab_server, tmp_path):
    (tmp_path / "noisy.py").write_text(NOISY)
    lab = forgelab_server(policy="strict", plugins=[str(tmp_path / "noisy.py")])
    refused = refused_at_data(lab)
    (event,) = lab.recorder.wait_for("message.rejected")
    assert refused.smtp_code == 550
    check_lines(refused.smtp_error.split(b"\n"), event["deciding"])
    # the same reply on the wire: 550- continuation lines, then one 550 line
    wire = event["reply"].encode("ascii").split(b"\r\n")
    assert all(line.startswith(b"550-") for line in wire[:-1]) and wire[-1].startswith(b"550 ")


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_reads_the_whole_refusal(forgelab_server, tmp_path):
    (tmp_path / "noisy.py").write_text(NOISY)
    (tmp_path / "mail.eml").write_bytes(FORGED)
    lab = forgelab_server(policy="strict", plugins=[str(tmp_path / "noisy.py")])
    host, port = lab.smtp.address
    run = subprocess.run(["swaks", "--server", host, "--port", str(port), "--local-interface", ATTACKER,
                          "--helo", "mail.phish.example", "--from", "boss@phish.example", "--to", "alice@corp.example",
                          "--data", str(tmp_path / "mail.eml")], capture_output=True, timeout=60)
    (event,) = lab.recorder.wait_for("message.rejected")
    shown = [line[4:] for line in run.stdout.splitlines() if line.startswith(b"<** 550")]
    assert run.returncode != 0 and len(shown) == event["reply"].count("\r\n") + 1
    check_lines([line[4:] for line in shown], event["deciding"])
