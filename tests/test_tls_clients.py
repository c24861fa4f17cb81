"""Implicit TLS (RFC 8314: --smtps, --pop3s) and STARTTLS/STLS, verified against the lab CA by real
clients: Python's ssl (smtplib, poplib), curl, swaks and openssl s_client, under both SMTP drivers."""
from __future__ import annotations

import poplib
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from forgelab.drivers.smtp import DRIVERS
from forgelab.lab.tls import generate_ca, lab_ca_paths

pytestmark = pytest.mark.timeout(60)

MESSAGE = b"From: alice@corp.example\r\nTo: bob@corp.example\r\nSubject: over implicit tls\r\n\r\nhi bob\r\n"
NAMES = ("localhost", "127.0.0.1")  # names a client may connect by; the certificate has both (and ::1)


@pytest.fixture(params=DRIVERS)
def lab(request, forgelab_server):
    return forgelab_server(driver=request.param, smtps="127.0.0.1:0", pop3s="127.0.0.1:0")


def ca_file(lab) -> str:
    return str(lab_ca_paths(lab.data_dir)[0])


def verifying(lab) -> ssl.SSLContext:
    """What docs/clients.md tells a Python user to write: the default context with the lab CA."""
    context = ssl.create_default_context(cafile=ca_file(lab))
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    return context


def other_ca(tmp_path) -> str:
    path = tmp_path / "other-ca.pem"
    path.write_bytes(generate_ca("elsewhere.example")[0])
    return str(path)


def run(*argv, input: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=input, capture_output=True, timeout=30)


def stored(lab, user: str) -> list[bytes]:
    return [lab.store.read(user, "inbox", key) for key, _ in lab.store.list(user)]


# -- Python's ssl ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_smtp_ssl_verifies_the_lab_ca_and_the_banner_comes_inside_tls(lab, name):
    with smtplib.SMTP_SSL(name, lab.smtps.address[1], context=verifying(lab), timeout=10) as smtp:
        assert smtp.sock.version() in ("TLSv1.2", "TLSv1.3")
        code, text = smtp.ehlo("me.example")
        assert code == 250 and b"STARTTLS" not in text  # TLS from the first byte
        assert smtp.docmd("STARTTLS")[0] == 503
        smtp.login("alice", "rabbit-hole")
        smtp.sendmail("alice@corp.example", ["bob@corp.example"], MESSAGE)
    message, = stored(lab, "bob")
    assert b"with ESMTPSA" in message
    assert [e["ok"] for e in lab.recorder.wait_for("session.tls") if e["protocol"] == "smtp"] == [True]


@pytest.mark.parametrize("name", NAMES)
def test_pop3_ssl_verifies_the_lab_ca_and_lists_the_mail(lab, name):
    lab.store.deliver("alice", b"Subject: one\r\n\r\nbody\r\n")
    pop = poplib.POP3_SSL(name, lab.pop3s.address[1], context=verifying(lab), timeout=10)
    try:
        assert pop.getwelcome().startswith(b"+OK")
        assert "STLS" not in pop.capa()
        with pytest.raises(poplib.error_proto, match="already active"):
            pop._shortcmd("STLS")
        pop.user("alice")
        pop.pass_("rabbit-hole")
        assert pop.stat()[0] == 1
        assert b"body" in b"\r\n".join(pop.retr(1)[1])
    finally:
        pop.quit()
    assert any(e["ok"] and e["protocol"] == "pop3" for e in lab.recorder.wait_for("session.tls"))


def test_a_client_without_the_ca_refuses_the_certificate(lab):
    with pytest.raises(ssl.SSLCertVerificationError):
        smtplib.SMTP_SSL("127.0.0.1", lab.smtps.address[1], context=ssl.create_default_context(), timeout=10)


@pytest.mark.parametrize("name", NAMES)
def test_starttls_and_stls_verify_with_the_same_ca(lab, name):
    with smtplib.SMTP(name, lab.smtp.address[1], timeout=10) as smtp:
        smtp.starttls(context=verifying(lab))
        smtp.login("alice", "rabbit-hole")
        smtp.sendmail("alice@corp.example", ["bob@corp.example"], MESSAGE)
    pop = poplib.POP3(name, lab.pop3.address[1], timeout=10)
    try:
        pop.stls(context=verifying(lab))
        pop.user("bob")
        pop.pass_(lab.lab.directory.users["bob"].password)
        assert pop.stat()[0] == 1
    finally:
        pop.quit()


# -- curl, swaks, openssl -------------------------------------------------------------------------

def test_curl_sends_over_smtps_and_reads_over_pop3s_with_the_ca(lab, tmp_path):
    mail = tmp_path / "mail.txt"
    mail.write_bytes(MESSAGE)
    sent = run("curl", "-sS", "--max-time", "20", "--cacert", ca_file(lab), f"smtps://localhost:{lab.smtps.address[1]}",
               "--mail-from", "alice@corp.example", "--mail-rcpt", "bob@corp.example", "-T", str(mail),
               "-u", "alice:rabbit-hole")
    assert sent.returncode == 0, sent.stderr
    assert b"over implicit tls" in stored(lab, "bob")[0]
    password = lab.lab.directory.users["bob"].password
    listed = run("curl", "-sS", "--max-time", "20", "--cacert", ca_file(lab), "-u", f"bob:{password}",
                 f"pop3s://127.0.0.1:{lab.pop3s.address[1]}/1")
    assert listed.returncode == 0, listed.stderr
    assert b"hi bob" in listed.stdout
    starttls = run("curl", "-sS", "--max-time", "20", "--ssl-reqd", "--cacert", ca_file(lab),
                   f"smtp://localhost:{lab.smtp.address[1]}", "--mail-from", "alice@corp.example",
                   "--mail-rcpt", "bob@corp.example", "-T", str(mail))
    assert starttls.returncode == 0, starttls.stderr
    assert len(stored(lab, "bob")) == 2
    # The same command without the CA (or with another) fails: the verification is real.
    refused = run("curl", "-sS", "--max-time", "20", "--cacert", other_ca(tmp_path),
                  f"smtps://127.0.0.1:{lab.smtps.address[1]}")
    assert refused.returncode == 60, refused.stderr  # CURLE_PEER_FAILED_VERIFICATION


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
@pytest.mark.parametrize("mode", ["--tlsc", "--tls"])
def test_swaks_verifies_with_the_ca(lab, tmp_path, mode):
    port = lab.smtps.address[1] if mode == "--tlsc" else lab.smtp.address[1]  # implicit TLS, STARTTLS
    base = ("swaks", "--server", "127.0.0.1", "--port", str(port), mode, "--tls-verify",
            "--from", "alice@corp.example", "--to", "bob@corp.example", "--timeout", "20")
    result = run(*base, "--tls-ca-path", ca_file(lab))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(stored(lab, "bob")) == 1
    refused = run(*base, "--tls-ca-path", other_ca(tmp_path))
    assert refused.returncode != 0
    assert len(stored(lab, "bob")) == 1


@pytest.mark.parametrize("port", ["smtps", "pop3s", "smtp", "pop3"])
def test_openssl_s_client_verify_return_error(lab, port, tmp_path):
    address = getattr(lab, port).address
    extra = ("-starttls", port) if port in ("smtp", "pop3") else ()
    argv = ("openssl", "s_client", "-verify_return_error", "-verify_hostname", "localhost",
            "-connect", f"127.0.0.1:{address[1]}", *extra)
    good = run(*argv, "-CAfile", ca_file(lab), input=b"QUIT\r\n")
    assert good.returncode == 0, good.stdout + good.stderr
    assert b"Verify return code: 0 (ok)" in good.stdout
    bad = run(*argv, "-CAfile", other_ca(tmp_path), input=b"QUIT\r\n")
    assert bad.returncode != 0


# -- failed and missing handshakes ----------------------------------------------------------------

def test_a_failed_handshake_is_recorded_and_ends_that_connection_only(lab):
    with socket.create_connection(lab.smtps.address, timeout=10) as sock:
        sock.sendall(b"EHLO plain.text.example\r\n" * 4)
        with pytest.raises((ConnectionResetError, EOFError)):
            while sock.recv(100):  # an alert at most, never a banner in plain text
                pass
            raise EOFError
    closed = lab.recorder.wait_for("session.close")
    assert [e["ok"] for e in lab.recorded("session.tls")] == [False]
    assert closed[0]["reason"] == "TLS handshake failed"
    with smtplib.SMTP_SSL("localhost", lab.smtps.address[1], context=verifying(lab), timeout=10) as smtp:
        assert smtp.noop()[0] == 250


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("port", ["smtps", "pop3s"])
def test_a_handshake_that_never_comes_is_closed_at_the_idle_timeout(forgelab_server, tmp_path, driver, port):
    policy = tmp_path / "quick.toml"
    policy.write_text('extends = "observe"\n[server]\nidle_timeout = 1\n')
    lab = forgelab_server(policy=str(policy), driver=driver, smtps="127.0.0.1:0", pop3s="127.0.0.1:0")
    with socket.create_connection(getattr(lab, port).address, timeout=15) as sock:
        started = time.monotonic()
        assert sock.recv(100) == b""  # no banner in plain text, and closed by the server, not by our timeout
        assert time.monotonic() - started < 10
    lab.recorder.wait_for("session.close")
    tls, = lab.recorded("session.tls")
    assert tls["ok"] is False and "timed out" in tls["error"]


def test_a_second_tls_client_is_served_while_one_never_handshakes(lab):
    with socket.create_connection(lab.smtps.address, timeout=10):
        with smtplib.SMTP_SSL("localhost", lab.smtps.address[1], context=verifying(lab), timeout=10) as smtp:
            assert smtp.noop()[0] == 250


@pytest.mark.parametrize("port", ["smtps", "pop3s"])
def test_full_a_client_that_never_handshakes_is_shed_for_a_newcomer(forgelab_server, tmp_path, port):
    policy = tmp_path / "one.toml"
    policy.write_text('extends = "observe"\n[server]\nmax_connections = 1\nadmit_wait = 10\n')
    lab = forgelab_server(policy=str(policy), smtps="127.0.0.1:0", pop3s="127.0.0.1:0")
    address = getattr(lab, port).address
    with socket.create_connection(address, timeout=15) as silent:
        silent.recv(0)
        context = ssl.create_default_context(cafile=ca_file(lab))
        if port == "smtps":  # waits in the room until the silent one may be shed (a quarter of shed_idle_after)
            with smtplib.SMTP_SSL("localhost", address[1], context=context, timeout=15) as smtp:
                assert smtp.noop()[0] == 250
        else:
            pop = poplib.POP3_SSL("localhost", address[1], context=context, timeout=15)
            assert pop.getwelcome().startswith(b"+OK")
            pop.quit()
        assert silent.recv(100) == b""  # closed without a word: there was no TLS to say it in
    closes = lab.recorder.wait_for("session.close", 2)
    assert any(e["reason"] == "shed (idle) to make room" for e in closes), closes


def test_the_python_example_in_docs_clients_md_runs_as_written(forgelab_server, capsys):
    lab = forgelab_server(smtps="127.0.0.1:0", pop3s="127.0.0.1:0")
    code = re.search(r"```python\n(.*?)```", (Path(__file__).parents[1] / "docs" / "clients.md").read_text(), re.S)[1]
    ports = {"1465": lab.smtps.address[1], "1025": lab.smtp.address[1], "1995": lab.pop3s.address[1]}
    code = re.sub(r"\b(1465|1025|1995)\b", lambda m: str(ports[m[1]]), code).replace("DATA/tls/ca.pem", ca_file(lab))
    exec(compile(code, "docs/clients.md", "exec"), {})
    assert capsys.readouterr().out.startswith("(1, ")  # bob's one message, read over POP3S
