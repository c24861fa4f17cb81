"""The SMTP server over loopback with real clients: smtplib, raw sockets, swaks."""
import shutil
import smtplib
import socket
import subprocess
import time

import pytest


def stored(lab, user="alice", folder="inbox"):
    return [lab.store.read(user, folder, key) for key, _ in lab.store.list(user, folder)]


def raw_session(address, payload: bytes, wait: float = 0.5) -> bytes:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        out = bytearray()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
        return bytes(out)


def test_several_recipients_and_a_list_each_get_one_copy(forgelab_server):
    lab = forgelab_server()
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        refused = client.sendmail("orders@shop.example", ["alice@corp.example", "staff@corp.example", "BOB@CORP.EXAMPLE"],
                                  b"Subject: hi\r\n\r\nhello\r\n")
    assert refused == {}
    assert [len(stored(lab, u)) for u in ("alice", "bob", "carol")] == [1, 1, 1]
    # As Postfix: "for <rcpt>" only when there is one recipient, so the copies are one file.
    copies = [stored(lab, u)[0] for u in ("alice", "bob", "carol")]
    assert copies[0] == copies[1] == copies[2] and b"\tfor <" not in copies[0]
    assert copies[0].startswith(b"Return-Path: <orders@shop.example>\r\nReceived: ")
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        client.sendmail("orders@shop.example", ["bob@corp.example"], b"Subject: one\r\n\r\nhello\r\n")
    assert b"for <bob@corp.example>" in stored(lab, "bob")[1]


def test_several_messages_in_one_session(forgelab_server):
    lab = forgelab_server()
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        for n in range(3):
            client.sendmail("", ["alice@corp.example"], f"Subject: {n}\r\n\r\nbody {n}\r\n".encode())
    assert sorted(m.split(b"Subject: ")[1][:1] for m in stored(lab)) == [b"0", b"1", b"2"]


def test_unknown_local_user_is_550_5_1_1_and_relay_is_550_5_7_1(forgelab_server):
    lab = forgelab_server()
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        client.ehlo("x.example")
        client.mail("a@shop.example")
        code, text = client.rcpt("nobody@corp.example")
        assert (code, text[:5]) == (550, b"5.1.1")
        code, text = client.rcpt("victim@elsewhere.example")
        assert code == 550 and text.startswith(b"5.7.1 [relay] relay denied")


def test_open_policy_holds_relayed_mail_and_sends_nothing(forgelab_server):
    lab = forgelab_server(policy="open")
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        assert client.sendmail("a@shop.example", ["victim@elsewhere.example"], b"Subject: relay\r\n\r\nx\r\n") == {}
    (held,) = lab.store.list_relay()
    assert b"Subject: relay" in lab.store.read_relay(held[0])


def test_one_local_recipient_gets_for_rcpt_and_the_relay_hold_does_not(forgelab_server):
    lab = forgelab_server(policy="open")
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        client.sendmail("a@shop.example", ["bob@corp.example", "victim@elsewhere.example"], b"Subject: mixed\r\n\r\nx\r\n")
    (held,) = lab.store.list_relay()
    assert b"for <bob@corp.example>" in stored(lab, "bob")[0]
    assert b"for <" not in lab.store.read_relay(held[0])


def test_several_local_recipients_and_the_relay_hold_get_the_same_bytes(forgelab_server):
    lab = forgelab_server(policy="open")
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        client.sendmail("a@shop.example", ["alice@corp.example", "bob@corp.example", "victim@elsewhere.example"],
                        b"Subject: mixed\r\n\r\nx\r\n")
    (held,) = lab.store.list_relay()
    held_copy = lab.store.read_relay(held[0])
    assert b"Subject: mixed" in held_copy and b"for <" not in held_copy
    assert stored(lab, "alice") == stored(lab, "bob") == [held_copy]


def test_ehlo_advertises_the_extensions(forgelab_server):
    lab = forgelab_server()
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        client.ehlo("x.example")
        for ext in ("pipelining", "8bitmime", "enhancedstatuscodes", "help"):
            assert client.has_extn(ext), ext
        assert int(client.esmtp_features["size"]) == 10 * 1024 * 1024


def test_message_over_size_is_552_and_nothing_is_stored(forgelab_server, tmp_path):
    policy = tmp_path / "small.toml"
    policy.write_text('extends = "observe"\n[server]\nmax_message_size = 2000\n')
    lab = forgelab_server(policy=str(policy))
    big = b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 1 + (b"y" * 70 + b"\r\n") * 100
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        client.ehlo("x.example")
        assert client.mail("a@shop.example", ["SIZE=999999"])[0] == 552
        # A client that lies about (or omits) SIZE is stopped at the end of DATA.
        client.mail("a@shop.example")
        client.rcpt("alice@corp.example")
        code, text = client.data(big)
        assert (code, text[:5]) == (552, b"5.3.4")
        assert client.noop()[0] == 250
    assert stored(lab) == []


@pytest.mark.parametrize("bad", [b"HELO a\x00b\r\n", b"HELO \xc3\x28\r\n", b"\xff\xfe\xfd\r\n"])
def test_nul_and_invalid_utf8_get_an_error_and_the_session_goes_on(forgelab_server, bad):
    lab = forgelab_server()
    out = raw_session(lab.smtp.address, bad + b"NOOP\r\nQUIT\r\n")
    lines = out.split(b"\r\n")
    assert lines[1][:1] == b"5" and lines[2].startswith(b"250") and lines[3].startswith(b"221")


def test_ten_megabyte_line_is_refused_and_server_serves_the_next_client(forgelab_server):
    lab = forgelab_server()
    out = raw_session(lab.smtp.address, b"x" * (10 * 1024 * 1024) + b"\r\nNOOP\r\nQUIT\r\n")
    assert b"500 5.5.2 Line too long" in out and b"250 2.0.0 OK" in out
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        assert client.noop()[0] == 250


def test_text_line_over_1000_octets_is_refused_and_nothing_stored(forgelab_server):
    lab = forgelab_server()
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        client.ehlo("x.example")
        client.mail("a@shop.example")
        client.rcpt("alice@corp.example")
        code, _ = client.data(b"Subject: long\r\n\r\n" + b"z" * 1500 + b"\r\n")
        assert code == 500
    assert stored(lab) == []


def test_pipelined_session_in_one_packet_is_answered_in_order(forgelab_server):
    lab = forgelab_server()
    out = raw_session(lab.smtp.address, b"EHLO x.example\r\nMAIL FROM:<a@shop.example>\r\nRCPT TO:<alice@corp.example>\r\n"
                      b"RCPT TO:<nobody@corp.example>\r\nDATA\r\nSubject: p\r\n\r\nx\r\n.\r\nQUIT\r\n")
    codes = [line[:3] for line in out.split(b"\r\n") if line[3:4] == b" "]
    assert codes == [b"220", b"250", b"250", b"250", b"550", b"354", b"250", b"221"]


def test_xclient_sets_the_client_address_from_loopback(forgelab_server):
    lab = forgelab_server(policy="strict")
    out = raw_session(lab.smtp.address, b"EHLO trainer\r\nXCLIENT ADDR=127.0.66.1 HELO=mail.phish.example\r\n"
                      b"EHLO mail.phish.example\r\nMAIL FROM:<alerts@bank.example>\r\nQUIT\r\n")
    assert b"XCLIENT ADDR NAME HELO" in out and b"220 mx.corp.example ESMTP forgelab; you are now 127.0.66.1" in out
    assert b"550 5.7.1 [spf] 127.0.66.1 is not allowed to send for bank.example" in out


def test_xclient_is_refused_when_the_policy_says_so(forgelab_server, tmp_path):
    policy = tmp_path / "noxc.toml"
    policy.write_text('extends = "observe"\n[server]\nxclient = false\n')
    lab = forgelab_server(policy=str(policy))
    out = raw_session(lab.smtp.address, b"EHLO t\r\nXCLIENT ADDR=127.0.66.1\r\nQUIT\r\n")
    assert b"XCLIENT ADDR" not in out and b"550 5.7.0 XCLIENT is allowed only" in out


def test_transcript_and_event_log_record_each_verdict_under_its_command(forgelab_server):
    import json

    lab = forgelab_server(policy="observe")
    with smtplib.SMTP(*lab.smtp.address, timeout=10, source_address=("127.0.66.1", 0)) as client:
        client.sendmail("alerts@bank.example", ["alice@corp.example"], b"From: alerts@bank.example\r\n\r\nx\r\n")
    lab.recorder.wait_for("session.close")
    kinds = [(e["kind"], e.get("text", e.get("verdict", {}).get("check"))) for e in lab.recorder.events
             if e["kind"] in ("session.line", "verdict")]
    mail = next(i for i, k in enumerate(kinds) if k[0] == "session.line" and k[1].startswith("mail FROM:<alerts@bank.example>"))
    assert kinds[mail + 1] == ("verdict", "spf")
    lab.bus.flush()  # the log is written by its own thread
    log = [json.loads(line) for line in (lab.data_dir / "events.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "verdict" and e["verdict"]["check"] == "spf" and e["verdict"]["result"] == "fail" for e in log)


@pytest.mark.skipif(not shutil.which("swaks"), reason="swaks is not installed (.ci/run installs it)")
def test_swaks_sends_through_forgelab(forgelab_server):
    lab = forgelab_server(policy="strict")
    host, port = lab.smtp.address
    done = subprocess.run(["swaks", "--server", host, "--port", str(port), "--from", "alerts@bank.example",
                           "--to", "alice@corp.example", "--helo", "mail.bank.example", "--local-interface", "127.0.1.1",
                           "--header", "Subject: swaks test"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "250 2.0.0 OK" in done.stdout
    (message,) = stored(lab)
    assert b"X-Forgelab-Verdict: spf=pass" in message
    refused = subprocess.run(["swaks", "--server", host, "--port", str(port), "--from", "alerts@bank.example",
                              "--to", "alice@corp.example", "--local-interface", "127.0.66.1"],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "550 5.7.1 [spf]" in refused.stdout


def test_postmaster_is_always_accepted_and_quoted_local_parts_match(forgelab_server):
    lab = forgelab_server(policy="strict")
    out = raw_session(lab.smtp.address, b"EHLO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\n"
                      b"RCPT TO:<PostMaster@corp.example>\r\nRCPT TO:<\"bob\"@corp.example>\r\nDATA\r\n"
                      b"From: <nobody@news.example>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nSubject: abuse report\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    codes = [line[:3] for line in out.split(b"\r\n") if line[3:4] == b" "]
    assert codes == [b"220", b"250", b"250", b"250", b"250", b"250", b"354", b"250", b"221"], out
    assert len(stored(lab, "alice")) == 1 and len(stored(lab, "bob")) == 1


def test_unknown_esmtp_parameter_is_555(forgelab_server):
    lab = forgelab_server()
    out = raw_session(lab.smtp.address, b"EHLO c\r\nMAIL FROM:<a@shop.example> FOO=bar\r\nMAIL FROM:<a@shop.example> BODY=8BITMIME\r\n"
                      b"RCPT TO:<alice@corp.example> NOTIFY=NEVER\r\nQUIT\r\n")
    assert b"555 5.5.4 Unsupported parameter FOO" in out and b"555 5.5.4 Unsupported parameter NOTIFY" in out
    assert b"250 2.1.0 Sender <a@shop.example> OK" in out


def test_nc_without_crlf_gets_a_clear_reply_not_a_hang(forgelab_server):
    lab = forgelab_server(policy="observe")
    out = raw_session(lab.smtp.address, b"HELO some.where.com\nMAIL FROM <>\nRCPT TO <alice@corp.example>\nDATA\n"
                      b"Subject: hi\n\n.. Count the dots\n.\nQUIT\n")
    assert out.rstrip().endswith(b"521 5.5.2 " + b"Bare <LF> line endings: the line holding only a dot ended with <LF>, but "
                                 b"DATA ends with <CR><LF>.<CR><LF>. Nothing was stored; closing. (telnet and nc -C send <CR><LF>.)")
    assert stored(lab) == []


def test_a_bare_cr_in_helo_cannot_inject_a_header(forgelab_server):
    lab = forgelab_server(policy="open")
    out = raw_session(lab.smtp.address, b"HELO foo\rAuthentication-Results: mx.corp.example; dmarc=pass\r\n"
                      b"HELO ok.example\r\nMAIL FROM:<a@shop.example>\r\nRCPT TO:<alice@corp.example>\r\nDATA\r\n"
                      b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    assert out.split(b"\r\n")[1].startswith(b"501 5.5.4 Control characters")
    (message,) = stored(lab)
    head = message.split(b"\r\n\r\n")[0]
    assert b"Authentication-Results: mx.corp.example; dmarc=pass" not in head and b"\r" not in head.replace(b"\r\n", b"")


def test_no_message_is_kept_in_memory_after_its_session(forgelab_server):
    import email.message
    import gc

    def messages_alive() -> int:
        gc.collect()
        return sum(isinstance(o, email.message.Message) for o in gc.get_objects())

    lab = forgelab_server(policy="observe")
    before = messages_alive()
    for n in range(5):
        with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
            client.sendmail("a@shop.example", ["alice@corp.example"], f"Subject: {n}\r\n\r\n".encode() + (b"x" * 70 + b"\r\n") * 80)
    lab.recorder.wait_for("session.close", count=5)
    assert messages_alive() <= before
