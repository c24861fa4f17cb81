"""The forging client against real forgelab servers over loopback."""
from __future__ import annotations

import socket

import click
import pytest
from click.testing import CliRunner

from forgelab import forge
from forgelab.cli.forge import forge as forge_cmd
from forgelab.forge import ForgeClient, Transaction, send

pytestmark = pytest.mark.timeout(60)

MESSAGE = b"From: <x@phish.example>\r\nTo: <alice@corp.example>\r\nSubject: t\r\nDate: Mon, 01 Jan 2024 09:00:00 +0000\r\n\r\nhello\r\n"


def test_helpers_are_exact():
    assert forge.dot_stuff(b".a\r\n.b\r\nc.\r\n") == b"..a\r\n..b\r\nc.\r\n"
    assert forge.dot_stuff(b"x\n.y\n") == b"x\n.y\n"  # a strict server only reads CRLF lines
    assert forge.parse_escapes(r"\r\n.\n") == b"\r\n.\n"
    assert forge.parse_escapes(r"\x00.\r") == b"\x00.\r"
    assert forge.escape_bytes(b"a\r\n\x00\xe2\x80\xae") == "a\\r\\n\\x00\\u202e"
    assert forge.escape_bytes(b"\\n\xff") == "\\\\n\\xff"  # our bytes: a sent backslash shows doubled
    assert forge.escape_bytes(b"(\\n without \\r)\r\n\x1b\xff", double_backslash=False) == "(\\n without \\r)\\r\\n\\x1b\\xff"
    assert forge.set_line_endings(b"a\r\nb\nc\rd", b"\n") == b"a\nb\nc\nd"
    assert ForgeClient.payload(b"x\r\n") == b"x\r\n.\r\n"
    assert ForgeClient.payload(b"x\r\n", end=b"\n.\n") == b"x\r\n\n.\n"
    built = forge.build_message(from_="A <a@b.example>", to="c@d.example", subject="s", headers=[("X-Y", "z")],
                                body="hi", date="D", message_id="<m@x>")
    assert built == b"From: A <a@b.example>\r\nTo: c@d.example\r\nSubject: s\r\nDate: D\r\nMessage-ID: <m@x>\r\nX-Y: z\r\n\r\nhi\r\n"


def test_sends_bytes_verbatim_and_a_lenient_server_cuts_at_lf_dot_lf(forgelab_server):
    lab = forgelab_server(policy="open")
    hidden = (b"MAIL FROM:<ceo@shop.example>\r\nRCPT TO:<alice@corp.example>\r\nDATA\r\n"
              b"From: <ceo@shop.example>\r\n\r\nsmuggled\r\n")
    message = MESSAGE + b"\n.\n" + hidden
    tx = Transaction("x@phish.example", ["alice@corp.example"], message, helo="mail.phish.example", stuff=False)
    result = send(*lab.smtp.address, tx, timeout=10)
    assert result.outcome == "accepted"
    sent = b"".join(e.data for e in result.transcript if e.direction == "C")
    assert message + b".\r\n" in sent  # not dot-stuffed, not repaired: the \n.\n went out as is
    delivered = lab.recorder.wait_for("message.delivered", 2)
    assert [d["ending"] for d in delivered] == ["\n.\n", "\r\n.\r\n"]
    assert len(result.extra_replies) == 4  # 250 MAIL, 250 RCPT, 354, 250 for the smuggled message


def test_dot_stuffing_on_and_off(forgelab_server):
    lab = forgelab_server(policy="open")
    body = MESSAGE + b".secret line\r\n"
    for stuff in (True, False):
        tx = Transaction("x@phish.example", ["alice@corp.example"], body, helo="mail.phish.example", stuff=stuff)
        assert send(*lab.smtp.address, tx).outcome == "accepted"
    stored = [lab.store.read(u, f, k) for d in lab.recorder.wait_for("message.delivered", 2) for u, f, k in d["locations"]]
    assert stored[0].endswith(b"\r\n.secret line\r\n")  # stuffed, then unstuffed by the server
    assert stored[1].endswith(b"\r\nsecret line\r\n")  # sent unstuffed: the server ate the dot


def test_pipelining_sends_the_envelope_in_one_write(forgelab_server):
    lab = forgelab_server(policy="observe")
    tx = Transaction("x@phish.example", ["alice@corp.example", "bob@corp.example"], MESSAGE,
                     helo="mail.phish.example", pipeline=True)
    result = send(*lab.smtp.address, tx)
    assert result.outcome == "accepted"
    chunks = [e.data for e in result.transcript if e.direction == "C"]
    assert b"MAIL FROM:<x@phish.example>\r\nRCPT TO:<alice@corp.example>\r\nRCPT TO:<bob@corp.example>\r\nDATA\r\n" in chunks


def test_source_ip_binding_and_xclient(forgelab_server):
    lab = forgelab_server(policy="observe")
    tx = Transaction("x@phish.example", ["alice@corp.example"], MESSAGE, helo="mail.phish.example")
    assert send(*lab.smtp.address, tx, source_ip="127.0.66.1").outcome == "accepted"
    tx.xclient = "127.0.2.1"
    assert send(*lab.smtp.address, tx).outcome == "accepted"
    opened = [e["session"]["peer_ip"] for e in lab.recorded("session.open")]
    assert opened[0] == "127.0.66.1"
    assert lab.recorded("session.xclient")[0]["attributes"]["ADDR"] == "127.0.2.1"
    spf = [e["verdict"] for e in lab.recorded("verdict") if e["verdict"]["check"] == "spf"]
    assert spf[-1]["details"]["ip"] == "127.0.2.1"


def test_dkim_signing_with_lab_keys_verifies(forgelab_server):
    lab = forgelab_server(policy="observe")
    message = forge.dkim_sign(forge.build_message(from_="<news@bank.example>", to="<alice@corp.example>",
                                                  subject="signed", body="hi"), "bank.example:lab")
    tx = Transaction("news@bank.example", ["alice@corp.example"], message, helo="mail.bank.example")
    assert send(*lab.smtp.address, tx, source_ip="127.0.1.1").outcome == "accepted"
    results = {e["verdict"]["check"]: e["verdict"]["result"] for e in lab.recorded("verdict")}
    assert results["dkim"] == "pass" and results["dmarc"] == "pass" and results["spf"] == "pass"


def _cli(*args):
    group = click.Group(commands={"forge": forge_cmd})
    return CliRunner().invoke(group, ["forge", "--no-color", *args])


def test_cli_exit_statuses(forgelab_server):
    lab = forgelab_server(policy="observe")
    server = "%s:%d" % lab.smtp.address
    ok = _cli("--server", server, "--from", "<x@phish.example>", "--to", "<alice@corp.example>", "--subject", "hi",
              "--header", "X-Test: yes", "--body", "hello", "--helo", "mail.phish.example")
    assert ok.exit_code == 0, ok.output
    assert "C: X-Test: yes\\r\\n" in ok.output and "outcome: accepted" in ok.output
    refused = _cli("--server", server, "--from", "<x@phish.example>", "--rcpt", "victim@elsewhere.example")
    assert refused.exit_code == 3 and "[relay]" in refused.output
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = _cli("--server", f"127.0.0.1:{closed}", "--to", "alice@corp.example", "--timeout", "2")
    assert down.exit_code == 1 and "cannot connect" in down.output
    usage = _cli("--server", server, "--from", "<x@phish.example>")
    assert usage.exit_code == 2


def test_cli_data_file_custom_ending_and_attack(forgelab_server, tmp_path):
    lab = forgelab_server(policy="strict")
    server = "%s:%d" % lab.smtp.address
    raw = tmp_path / "m.eml"
    raw.write_bytes(MESSAGE.replace(b"\r\n", b"\n"))
    out = _cli("--server", server, "--data", str(raw), "--rcpt", "alice@corp.example", "--mail-from", "x@phish.example",
               "--source-ip", "127.0.66.1", "--helo", "mail.phish.example", "--eod", r"\n.\n", "--timeout", "2")
    assert "C: hello\\n" in out.output  # sent with bare LFs, as in the file
    # A strict server does not take \n.\n for the end of data: it says why (521) and hangs up.
    assert out.exit_code == 3 and "S: 521 5.5.2 Bare <LF> line endings" in out.output, out.output
    assert not lab.recorded("message.delivered")
    attack = _cli("--server", server, "--attack", "from-two-headers")
    assert attack.exit_code == 3, attack.output
    assert "C: From: <first@phish.example>\\r\\n" in attack.output
    assert lab.recorded("session.open")[-1]["session"]["peer_ip"] == "127.0.66.1"


BANK = ("--from", "Bank <statements@bank.example>", "--to", "alice@corp.example", "--subject", "statement",
        "--helo", "mail.bank.example", "--dkim-sign", "bank.example")


def test_cli_body_newlines_are_sent_as_crlf_and_strict_accepts_them(forgelab_server):
    lab = forgelab_server(policy="strict")
    server = "%s:%d" % lab.smtp.address
    out = _cli("--server", server, *BANK, "--source-ip", "127.0.1.1", "--body", "line one\nline two\n")
    assert out.exit_code == 0, out.output
    assert "C: line one\\r\\n" in out.output and "C: line two\\r\\n" in out.output
    (event,) = lab.recorder.wait_for("message.delivered")
    assert lab.store.read(*event["locations"][0]).endswith(b"\r\n\r\nline one\r\nline two\r\n")
    assert forge.build_message(subject="s", body="a\nb\rc\r\nd", date="", message_id="") == \
        b"Subject: s\r\n\r\na\r\nb\r\nc\r\nd\r\n"
    assert forge.build_message(subject="s", body=b"a\nb", date="", message_id="") == \
        b"Subject: s\r\n\r\na\nb\r\n"  # bytes: as given
    lf = _cli("--server", server, *BANK, "--source-ip", "127.0.1.1", "--body", "x\ny", "--line-ending", "lf",
              "--timeout", "2")
    assert "C: x\\n" in lf.output  # --line-ending still rewrites every line ending


def test_cli_xclient_comes_before_ehlo_so_strict_judges_the_helo_from_addr(forgelab_server):
    lab = forgelab_server(policy="strict")
    server = "%s:%d" % lab.smtp.address
    out = _cli("--server", server, *BANK, "--xclient", "127.0.1.1", "--body", "hello")
    assert out.exit_code == 0, out.output
    sent = [line for line in out.output.splitlines() if line.startswith("C: ")]
    assert sent[:2] == ["C: XCLIENT ADDR=127.0.1.1\\r\\n", "C: EHLO mail.bank.example\\r\\n"]
    assert lab.recorded("session.open")[-1]["session"]["peer_ip"] == "127.0.0.1"
    helo = [e["verdict"] for e in lab.recorded("verdict") if e["verdict"]["check"] == "spf-helo"]
    assert helo and all(v["result"] == "pass" for v in helo), helo


def test_a_header_option_replaces_the_header_forge_would_write(forgelab_server):
    built = forge.build_message(from_="<a@b.example>", to="c@d.example", subject="s", date="D", message_id="<m@x>",
                                headers=[("Date", "Tue, 02 Jan 2024 10:00:00 +0000"), ("message-id", "<own@x>"),
                                         ("Subject", "mine"), ("From", "<one@x.example>"), ("From", "<two@x.example>"),
                                         ("From ", "<spaced@x.example>")])
    head = built.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head == [b"To: c@d.example", b"Date: Tue, 02 Jan 2024 10:00:00 +0000", b"message-id: <own@x>",
                    b"Subject: mine", b"From: <one@x.example>", b"From: <two@x.example>", b"From : <spaced@x.example>"]
    lab = forgelab_server(policy="observe")
    out = _cli("--server", "%s:%d" % lab.smtp.address, "--helo", "mail.phish.example", "--subject", "default",
               "--header", "Date: Mon, 01 Jan 2024 09:00:00 +0000", "--header", "From: <x@phish.example>",
               "--header", "To: Alice <alice@corp.example>", "--header", "Subject: given", "--body", "hi")
    assert out.exit_code == 0, out.output
    sent = [line for line in out.output.splitlines() if line.startswith("C: ")]
    for name in ("Date", "From", "To", "Subject", "Message-ID"):
        assert len([line for line in sent if line.startswith(f"C: {name}:")]) == 1, (name, sent)
    assert "C: Date: Mon, 01 Jan 2024 09:00:00 +0000\\r\\n" in sent and "C: Subject: given\\r\\n" in sent
    # The envelope follows the From and To given with --header.
    assert "C: MAIL FROM:<x@phish.example>\\r\\n" in sent and "C: RCPT TO:<alice@corp.example>\\r\\n" in sent


def test_cli_attack_refuses_the_options_it_would_ignore(forgelab_server):
    lab = forgelab_server(policy="observe")
    server = "%s:%d" % lab.smtp.address
    refused = _cli("--server", server, "--attack", "from-two-headers", "--helo", "x.example", "--body", "hi",
                   "--no-dot-stuff", "--header", "X: y")
    assert refused.exit_code == 2
    assert "--helo, --header, --body, --no-dot-stuff would be ignored" in refused.output
    assert not lab.recorded("session.open")  # nothing was sent
    applied = _cli("--server", server, "--attack", "from-two-headers", "--xclient", "127.0.66.2",
                   "--rcpt", "bob@corp.example", "--pipeline", "--timeout", "5", "--quiet")
    assert applied.exit_code == 0, applied.output
    assert lab.recorded("session.xclient")[-1]["attributes"]["ADDR"] == "127.0.66.2"
    assert lab.recorder.wait_for("message.delivered")[-1]["envelope"]["rcpt_tos"] == ["bob@corp.example"]


def test_cli_shows_server_replies_as_written(forgelab_server, tmp_path):
    lab = forgelab_server(policy="strict")
    raw = tmp_path / "m.eml"
    raw.write_bytes(MESSAGE.replace(b"hello\r\n", b"one\ntwo\r\n"))  # a bare LF in the body
    out = _cli("--server", "%s:%d" % lab.smtp.address, "--data", str(raw), "--rcpt", "alice@corp.example",
               "--mail-from", "x@phish.example", "--source-ip", "127.0.66.1", "--helo", "mail.phish.example")
    assert out.exit_code == 3, out.output
    refusal = next(line for line in out.output.splitlines() if line.startswith("S: 5"))
    assert "[bare-newline]" in refusal and "(\\n without \\r)" in refusal and "\\\\" not in refusal
    assert refusal.endswith("\\r\\n")  # the real line ending is still shown as an escape
    outcome = next(line for line in out.output.splitlines() if line.startswith("outcome:"))
    assert "(\\n without \\r)" in outcome and "\\\\" not in outcome
    assert "C: one\\n" in out.output


def test_cli_auth_logs_in_so_a_local_user_may_send_as_corp_example(forgelab_server):
    lab = forgelab_server(policy="strict")
    server = "%s:%d" % lab.smtp.address
    args = ("--server", server, "--from", "Alice Liddell <alice@corp.example>", "--to", "bob@corp.example",
            "--subject", "lunch", "--body", "Friday?\n", "--helo", "workstation.corp.example")
    anonymous = _cli(*args)
    assert anonymous.exit_code == 3 and "[mismatch]" in anonymous.output
    logged_in = _cli(*args, "--auth", "alice:rabbit-hole")
    assert logged_in.exit_code == 0, logged_in.output
    assert "C: AUTH PLAIN " in logged_in.output and "235 2.7.0" in logged_in.output
    wrong = _cli(*args, "--auth", "alice:nope")
    assert wrong.exit_code == 3 and "535" in wrong.output
