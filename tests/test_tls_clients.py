"""Implicit TLS (RFC 8314: --smtps, --pop3s) and STARTTLS/STLS, verified against the lab CA by real
clients: Python's ssl (smtplib, poplib), curl, swaks and openssl s_client, under both SMTP drivers."""
from __future__ import annotations

import poplib
import shutil
import smtplib
import socket
import ssl
import subprocess
import time

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
    # The same command without the CA (or with another) fails: the verification is real.
    refused = run("curl", "-sS", "--max-time", "20", "--cacert", other_ca(tmp_path),
                  f"smtps://127.0.0.1:{lab.smtps.address[1]}")
    assert refused.returncode == 60, refused.stderr  # CURLE_PEER_FAILED_VERIFICATION


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_tls_on_connect_verifies_with_the_ca(lab, tmp_path):
    base = ("swaks", "--server", "127.0.0.1", "--port", str(lab.smtps.address[1]), "--tlsc", "--tls-verify",
            "--from", "alice@corp.example", "--to", "bob@corp.example", "--timeout", "20")
    result = run(*base, "--tls-ca-path", ca_file(lab))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(stored(lab, "bob")) == 1
    refused = run(*base, "--tls-ca-path", other_ca(tmp_path))
    assert refused.returncode != 0
    assert len(stored(lab, "bob")) == 1


@pytest.mark.parametrize("port", ["smtps", "pop3s", "starttls"])
def test_openssl_s_client_verify_return_error(lab, port, tmp_path):
    if port == "starttls":
        address, extra = lab.smtp.address, ("-starttls", "smtp")
    else:
        address, extra = getattr(lab, port).address, ()
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
