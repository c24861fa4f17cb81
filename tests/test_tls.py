"""STARTTLS (RFC 3207) on the real SMTP server over 127.0.0.1, the lab certificate, CVE-2011-0411."""
from __future__ import annotations

import smtplib
import ssl

import pytest

from line_client import LineClient

from forgelab.app import Forgelab, Settings
from forgelab.lab.tls import (TlsError, client_context, ensure_lab_certificate, generate_certificate, lab_ca_paths,
                              lab_certificate_paths, lab_server_context)

pytestmark = pytest.mark.timeout(30)


def Client(address) -> LineClient:
    return LineClient(address, greet="smtp")


class Pop3Client(LineClient):
    def __init__(self, address):
        super().__init__(address, greet="pop3")

    cmd = LineClient.pop

    def listing(self, text: str) -> list[str]:
        assert self.cmd(text).startswith("+OK")
        lines = []
        while (line := self.line()) != ".":
            lines.append(line)
        return lines


@pytest.fixture
def lab(forgelab_server):
    return forgelab_server()


def trusting(lab) -> ssl.SSLContext:
    return client_context(lab_ca_paths(lab.data_dir)[0])


def test_lab_certificate_is_made_once_with_a_private_key_only_we_can_read(tmp_path):
    cert, key = ensure_lab_certificate(tmp_path, "mx.corp.example")
    assert cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert key.stat().st_mode & 0o077 == 0
    before = cert.read_bytes()
    assert ensure_lab_certificate(tmp_path, "mx.corp.example") == (cert, key)
    assert cert.read_bytes() == before  # reused on the next start: students can pin it


def test_starttls_verifies_against_the_lab_certificate_and_the_session_starts_over(lab):
    c = Client(lab.smtp.address)
    try:
        code, text = c.cmd("EHLO me.example")
        assert "STARTTLS" in text.splitlines()
        assert c.cmd("STARTTLS") == (220, "2.0.0 Ready to start TLS; say EHLO again afterwards")
        c.start_tls(trusting(lab))  # raises if the certificate does not verify
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert c.cmd("MAIL FROM:<a@shop.example>")[0] == 503  # RFC 3207 4.2: EHLO again first
        code, text = c.cmd("EHLO me.example")
        assert code == 250 and "STARTTLS" not in text.splitlines()
        assert c.cmd("STARTTLS")[0] == 503
        assert c.cmd("MAIL FROM:<a@shop.example>")[0] == 250
        assert c.cmd("RCPT TO:<alice@corp.example>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        assert c.cmd("Subject: over tls\r\n\r\nhi\r\n.")[0] == 250
    finally:
        c.close()
    (key, _), = lab.store.list("alice")
    assert b"with ESMTPS" in lab.store.read("alice", "inbox", key)
    assert any(e["ok"] for e in lab.recorded("session.tls"))


def test_plaintext_pipelined_after_starttls_is_discarded_cve_2011_0411(lab):
    c = Client(lab.smtp.address)
    try:
        c.cmd("EHLO me.example")
        # The injection: commands sent in plain text right behind STARTTLS, in the same segment.
        c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@attacker.example>\r\n")
        assert c.reply()[0] == 220
        c.start_tls(trusting(lab))
        # Had the injected lines run, the next replies would be theirs (250 for RSET, MAIL).
        assert c.cmd("EHLO me.example")[0] == 250
        assert c.cmd("RCPT TO:<alice@corp.example>")[0] == 503  # no MAIL FROM is in effect
        assert c.cmd("NOOP") == (250, "2.0.0 OK")
    finally:
        c.close()
    lab.recorder.wait_for("session.close")
    lines = [e["text"] for e in lab.recorded("session.line") if e["direction"] == "in"]
    assert any("discarded (CVE-2011-0411)" in line for line in lines)
    assert not any("evil@attacker.example" in line for line in lines)


def test_smtplib_starttls_and_login(lab):
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as smtp:
        smtp.starttls(context=trusting(lab))
        smtp.login("alice", "rabbit-hole")
        smtp.sendmail("alice@corp.example", ["bob@corp.example"], b"Subject: s\r\n\r\nhi\r\n")
    (key, _), = lab.store.list("bob")
    assert b"with ESMTPSA" in lab.store.read("bob", "inbox", key)


def test_a_failed_handshake_ends_that_session_only(lab):
    c = Client(lab.smtp.address)
    c.cmd("EHLO me.example")
    assert c.cmd("STARTTLS")[0] == 220
    c.send(b"this is not a TLS ClientHello\r\n" * 4)
    c.sock.settimeout(5)
    with pytest.raises((EOFError, ConnectionResetError)):  # the server hangs up (maybe after a TLS alert)
        while c.sock.recv(100):
            pass
        raise EOFError
    c.close()
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as smtp:
        assert smtp.noop()[0] == 250
    assert any(not e["ok"] for e in lab.recorded("session.tls"))


def test_given_certificate_and_key_are_used(tmp_path, forgelab_server):
    cert_pem, key_pem = generate_certificate("trainer.example")
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    lab = forgelab_server(tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem")
    assert not lab_certificate_paths(lab.data_dir)[0].exists()  # no lab certificate was made
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as smtp:
        smtp.starttls(context=client_context(tmp_path / "c.pem"))
        der = smtp.sock.getpeercert(binary_form=True)
    assert ssl.DER_cert_to_PEM_cert(der).encode().strip() == cert_pem.strip()


def test_without_tls_starttls_is_not_offered_and_answers_454(forgelab_server):
    lab = forgelab_server(tls=False)
    c = Client(lab.smtp.address)
    try:
        assert "STARTTLS" not in c.cmd("EHLO me.example")[1]
        code, text = c.cmd("STARTTLS")
        assert (code, text[:5]) == (454, "4.7.0")
        assert c.cmd("NOOP")[0] == 250
    finally:
        c.close()


def test_unusable_certificate_settings_are_one_clear_error(tmp_path):
    with pytest.raises(TlsError, match="needs --tls-cert"):
        lab_server_context(tmp_path, "mx", key=tmp_path / "k.pem")
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(TlsError, match="bad.pem"):
        lab_server_context(tmp_path, "mx", cert=tmp_path / "bad.pem")
    with pytest.raises(TlsError):
        Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=tmp_path / "d",
                          tls_cert=tmp_path / "missing.pem"))


# -- POP3 STLS (RFC 2595) -----------------------------------------------------------------------

def test_pop3_stls_then_login_inside_tls(lab):
    lab.store.deliver("alice", b"Subject: one\r\n\r\nbody\r\n")
    c = Pop3Client(lab.pop3.address)
    try:
        assert "STLS" in c.listing("CAPA")
        assert c.cmd("STLS") == "+OK Begin TLS negotiation"
        c.start_tls(trusting(lab))
        assert "STLS" not in c.listing("CAPA")
        assert c.cmd("STLS").startswith("-ERR")
        assert c.cmd("USER alice").startswith("+OK")
        assert c.cmd("PASS rabbit-hole").startswith("+OK")
        assert c.cmd("STAT").startswith("+OK 1 ")
        assert c.cmd("STLS").startswith("-ERR")  # not after login
    finally:
        c.close()


def test_pop3_plaintext_pipelined_after_stls_is_discarded(lab):
    c = Pop3Client(lab.pop3.address)
    try:
        c.sock.sendall(b"STLS\r\nUSER alice\r\nPASS rabbit-hole\r\n")
        assert c.line() == "+OK Begin TLS negotiation"
        c.start_tls(trusting(lab))
        # Had the injected USER/PASS run, we would be logged in and STAT would answer +OK.
        assert c.cmd("STAT").startswith("-ERR")
        assert c.cmd("NOOP").startswith("-ERR")
    finally:
        c.close()
    lab.recorder.wait_for("session.close", 1)
    lines = [e["text"] for e in lab.recorded("session.line") if e.get("protocol") == "pop3" and e["direction"] == "in"]
    assert any("discarded (CVE-2011-0411)" in line for line in lines)


def test_pop3_stls_without_tls_is_refused(forgelab_server):
    lab = forgelab_server(tls=False)
    c = Pop3Client(lab.pop3.address)
    try:
        assert "STLS" not in c.listing("CAPA")
        assert c.cmd("STLS").startswith("-ERR")
        assert c.cmd("USER alice").startswith("+OK")
    finally:
        c.close()


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_the_server_ends_tls_with_close_notify_not_a_truncation(lab, protocol):
    if protocol == "smtp":
        c = Client(lab.smtp.address)
        c.cmd("EHLO me.example")
        assert c.cmd("STARTTLS")[0] == 220
    else:
        c = Pop3Client(lab.pop3.address)
        assert c.cmd("STLS").startswith("+OK")
    c.file.close()
    # suppress_ragged_eofs=False: a connection dropped without close_notify raises SSLEOFError.
    tls = trusting(lab).wrap_socket(c.sock, server_hostname="127.0.0.1", suppress_ragged_eofs=False)
    try:
        tls.sendall(b"QUIT\r\n")
        while tls.recv(4096):
            pass
    finally:
        tls.close()


# -- the lab CA ---------------------------------------------------------------------------------

def _cert(path):
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_lab_ca_signs_a_certificate_for_every_name_a_client_may_use(tmp_path):
    from cryptography import x509

    cert_path, key_path = ensure_lab_certificate(tmp_path, "mx.corp.example")
    ca_path, ca_key_path = lab_ca_paths(tmp_path)
    assert ca_key_path.stat().st_mode & 0o077 == 0 and key_path.stat().st_mode & 0o077 == 0
    ca, cert = _cert(ca_path), _cert(cert_path)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"mx.corp.example", "localhost"}
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}


def test_an_old_self_signed_lab_certificate_is_replaced_by_one_the_ca_signs(tmp_path):
    cert_path, key_path = lab_certificate_paths(tmp_path)
    cert_path.parent.mkdir()
    old_cert, old_key = generate_certificate("mx.corp.example")  # what earlier versions made
    cert_path.write_bytes(old_cert)
    key_path.write_bytes(old_key)
    ensure_lab_certificate(tmp_path, "mx.corp.example")
    assert cert_path.read_bytes() != old_cert
    _cert(cert_path).verify_directly_issued_by(_cert(lab_ca_paths(tmp_path)[0]))


def test_the_ca_is_kept_across_restarts_and_still_verifies(tmp_path, forgelab_server):
    data = tmp_path / "data"
    fingerprints = []
    for _ in range(2):
        lab = forgelab_server(data_dir=data, smtps="127.0.0.1:0")
        ca = lab_ca_paths(lab.data_dir)[0]
        with smtplib.SMTP_SSL("localhost", lab.smtps.address[1], timeout=10,
                              context=ssl.create_default_context(cafile=str(ca))) as smtp:
            assert smtp.noop()[0] == 250
        fingerprints.append(_cert(ca).fingerprint(_sha256()))
        lab.stop()
    assert fingerprints[0] == fingerprints[1]


def _sha256():
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()
