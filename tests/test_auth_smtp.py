"""SMTP AUTH PLAIN and LOGIN (RFC 4954) against the real server on 127.0.0.1, and the pipeline's rules."""
from __future__ import annotations

import base64
import json
import smtplib

import pytest

from line_client import LineClient

from forgelab.lab import load_lab
from forgelab.core.pipeline import ServerContext, SmtpPipeline
from forgelab.core.policy import load_policy
from forgelab.core.login_throttle import LoginThrottle
from forgelab.core.session import Session
from forgelab.protocols.smtp import events as ev
from forgelab.store import MailStore

pytestmark = pytest.mark.timeout(30)

PASSWORD = "rabbit-hole"
PLAIN = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()


def Client(address) -> LineClient:
    return LineClient(address, greet="smtp")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def lab(forgelab_server):
    app = forgelab_server()
    app.context.login_throttle = LoginThrottle(free_failures=2, delay=0.05, max_delay=0.1, clock=lambda: 0.0)
    return app


@pytest.fixture
def client(lab):
    c = Client(lab.smtp.address)
    yield c
    c.close()


def test_ehlo_on_loopback_offers_auth_plain_login(client):
    code, text = client.cmd("EHLO me.example")
    assert code == 250
    assert "AUTH PLAIN LOGIN" in text.splitlines()


def test_plain_with_initial_response_logs_in_and_may_relay_held(lab, client):
    client.cmd("EHLO me.example")
    assert client.cmd(f"AUTH PLAIN {PLAIN}") == (235, "2.7.0 Authentication successful: you are alice")
    assert client.cmd("MAIL FROM:<alice@corp.example>")[0] == 250
    assert client.cmd("RCPT TO:<friend@faraway.example>")[0] == 250
    assert client.cmd("DATA")[0] == 354
    assert client.cmd("Subject: out\r\n\r\nhello\r\n.")[0] == 250
    held = lab.store.list_relay()
    assert len(held) == 1
    assert b"ESMTPA" in lab.store.read_relay(held[0][0])  # Received: ... with ESMTPA


def test_relay_without_auth_is_refused(client):
    client.cmd("EHLO me.example")
    client.cmd("MAIL FROM:<alice@corp.example>")
    code, text = client.cmd("RCPT TO:<friend@faraway.example>")
    assert (code, text[:5]) == (550, "5.7.1")


def test_plain_with_empty_challenge(client):
    client.cmd("EHLO me.example")
    assert client.cmd("AUTH PLAIN") == (334, "")
    assert client.cmd(PLAIN)[0] == 235


def test_login_two_challenges(client):
    client.cmd("EHLO me.example")
    assert client.cmd("AUTH LOGIN") == (334, "VXNlcm5hbWU6")  # "Username:"
    assert client.cmd(b64("alice@corp.example")) == (334, "UGFzc3dvcmQ6")  # "Password:"
    assert client.cmd(b64(PASSWORD))[0] == 235


def test_login_with_initial_username(client):
    client.cmd("EHLO me.example")
    assert client.cmd(f"AUTH LOGIN {b64('alice')}") == (334, "UGFzc3dvcmQ6")
    assert client.cmd(b64(PASSWORD))[0] == 235


def test_wrong_password_and_unknown_user_get_the_same_answer(client):
    client.cmd("EHLO me.example")
    wrong = client.cmd("AUTH PLAIN " + b64("\0alice\0nope"))
    unknown = client.cmd("AUTH PLAIN " + b64("\0mallory\0nope"))
    assert wrong == unknown == (535, "5.7.8 Authentication credentials invalid")


def test_proxy_authzid_is_refused(client):
    client.cmd("EHLO me.example")
    assert client.cmd("AUTH PLAIN " + b64(f"bob\0alice\0{PASSWORD}"))[0] == 535
    assert client.cmd("AUTH PLAIN " + b64(f"alice\0alice\0{PASSWORD}"))[0] == 235


@pytest.mark.parametrize("steps, expected", [
    (["AUTH CRAM-MD5"], (504, "5.5.4")),
    (["AUTH PLAIN !!notbase64!!"], (501, "5.5.2")),
    (["AUTH PLAIN " + b64("no-nuls-here")], (501, "5.5.2")),
    (["AUTH LOGIN", "*"], (501, "5.0.0")),
    (["AUTH PLAIN", "*"], (501, "5.0.0")),
    (["AUTH LOGIN", b64("alice"), "%%%"], (501, "5.5.2")),
])
def test_malformed_exchanges_are_protocol_errors_and_the_session_goes_on(client, steps, expected):
    client.cmd("EHLO me.example")
    for line in steps:
        code, text = client.cmd(line)
    assert (code, text[:5]) == expected
    assert client.cmd("NOOP")[0] == 250  # back in READY, not stuck in the exchange
    assert client.cmd(f"AUTH PLAIN {PLAIN}")[0] == 235


def test_auth_twice_and_auth_inside_a_transaction_are_out_of_sequence(client):
    client.cmd("EHLO me.example")
    client.cmd("MAIL FROM:<alice@corp.example>")
    assert client.cmd(f"AUTH PLAIN {PLAIN}")[0] == 503
    client.cmd("RSET")
    assert client.cmd(f"AUTH PLAIN {PLAIN}")[0] == 235
    assert client.cmd(f"AUTH PLAIN {PLAIN}")[0] == 503


def test_auth_before_ehlo_is_out_of_sequence(client):
    assert client.cmd(f"AUTH PLAIN {PLAIN}")[0] == 503


def test_repeated_failures_are_slowed_then_refused_even_with_the_right_password(lab, client):
    client.cmd("EHLO me.example")
    for _ in range(4):
        assert client.cmd("AUTH PLAIN " + b64("\0alice\0guess"))[0] == 535
    code, text = client.cmd(f"AUTH PLAIN {PLAIN}")
    assert (code, text[:5]) == (454, "4.7.0")
    other = Client(lab.smtp.address)  # the backoff is per user name, not per session
    try:
        other.cmd("EHLO me.example")
        assert other.cmd(f"AUTH PLAIN {PLAIN}")[0] == 454
        assert other.cmd("AUTH PLAIN " + b64("\0bob\0tiny-tim"))[0] == 235  # another user: at once
    finally:
        other.close()


def test_passwords_never_reach_the_transcript_or_the_event_log(lab, client):
    client.cmd("EHLO me.example")
    client.cmd(f"AUTH PLAIN {PLAIN}")
    client.cmd("QUIT")
    second = Client(lab.smtp.address)
    second.cmd("EHLO me.example")
    second.cmd("AUTH LOGIN")
    second.cmd(b64("alice"))
    second.cmd(b64(PASSWORD))
    second.cmd("AUTH PLAIN " + b64("\0bob\0" + PASSWORD + "x" * 600))  # an over-long line inside AUTH
    second.cmd("QUIT")
    second.close()
    lab.recorder.wait_for("session.close", 2)
    secrets = [PASSWORD, PLAIN, b64(PASSWORD), PLAIN[:20]]
    shown = json.dumps(lab.recorder.events)
    lab.bus.flush()  # the log is written by its own thread
    log = (lab.data_dir / "events.jsonl").read_text()
    for secret in secrets:
        assert secret not in shown
        assert secret not in log
    assert any(e["kind"] == "session.auth" and e["result"] == "pass" for e in lab.recorder.events)
    assert "<AUTH response ****>" in shown


def test_smtplib_login_and_send(lab):
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as smtp:
        smtp.login("bob", "tiny-tim")
        refused = smtp.sendmail("bob@corp.example", ["someone@elsewhere.example"], b"Subject: hi\r\n\r\nhi\r\n")
    assert refused == {}
    assert len(lab.store.list_relay()) == 1


# -- the rules that need a client address other than loopback: the pipeline on its own ------

@pytest.fixture
def context(tmp_path):
    return ServerContext(load_lab(), MailStore(tmp_path / "mail"), policy=load_policy("observe"))


def _remote(context, tls=False) -> SmtpPipeline:
    session = Session(peer_ip="192.0.2.10")
    session.tls = tls
    pipeline = SmtpPipeline(context, session)
    pipeline.handle(ev.Ehlo("remote.example"))
    return pipeline


def test_remote_client_without_tls_is_not_offered_auth_and_gets_538(context):
    pipeline = _remote(context)
    assert "AUTH PLAIN LOGIN" not in pipeline.handle(ev.Ehlo("remote.example")).lines
    reply = pipeline.handle(ev.Auth("PLAIN", PLAIN))
    assert (reply.code, reply.enhanced) == (538, "5.7.11")
    assert pipeline.session.authenticated is None


def test_remote_client_inside_tls_may_log_in(context):
    pipeline = _remote(context, tls=True)
    assert "AUTH PLAIN LOGIN" in pipeline.handle(ev.Ehlo("remote.example")).lines
    assert pipeline.handle(ev.Auth("PLAIN", PLAIN)).code == 235
    assert pipeline.session.authenticated == "alice"


def test_xclient_does_not_make_a_remote_client_local_for_auth(context):
    session = Session(peer_ip="127.0.0.1")
    pipeline = SmtpPipeline(context, session)
    pipeline.handle(ev.XClient({"ADDR": "192.0.2.10"}))
    assert session.peer_ip == "192.0.2.10"
    assert pipeline.handle(ev.Auth("PLAIN", PLAIN)).code == 235  # the real peer is loopback


def test_require_auth_answers_530_until_logged_in(tmp_path):
    policy = load_policy("observe")
    policy.server["require_auth"] = True
    context = ServerContext(load_lab(), MailStore(tmp_path / "mail"), policy=policy)
    pipeline = SmtpPipeline(context, Session(peer_ip="127.0.0.1"))
    pipeline.handle(ev.Ehlo("me.example"))
    reply = pipeline.handle(ev.MailFrom("alice@corp.example"))
    assert (reply.code, reply.enhanced) == (530, "5.7.0")
    assert pipeline.handle(ev.Auth("PLAIN", PLAIN)).code == 235
    assert pipeline.handle(ev.MailFrom("alice@corp.example")).code == 250


@pytest.mark.parametrize("line", [f"AUTH PLAIN {PLAIN}", f"auth plain {PLAIN} extra", f"AUTH PLAIN\t{PLAIN}"])
def test_a_refused_auth_line_never_shows_its_credential(forgelab_server, line):
    lab = forgelab_server()
    client = Client(lab.smtp.address)
    assert client.cmd(line)[0] in (501, 503)  # before EHLO: out of sequence, or bad syntax
    client.cmd("QUIT")
    lab.recorder.wait_for("session.close")
    texts = [e.get("text", "") for e in lab.recorder.events if e["kind"] == "session.line"]
    assert not any(PLAIN in t for t in texts) and any("****" in t for t in texts)
    assert PLAIN not in (lab.data_dir / "events.jsonl").read_text()


@pytest.mark.parametrize("first", ["AUTH LOGIN YWxpY2U=", "AUTH CRAM-MD5"])
def test_the_line_after_a_refused_auth_is_never_shown_or_echoed(forgelab_server, first):
    lab = forgelab_server()
    client = Client(lab.smtp.address)
    secret = base64.b64encode(PASSWORD.encode()).decode()
    client.cmd("EHLO me.example")
    if first.startswith("AUTH LOGIN"):
        assert client.cmd(f"AUTH PLAIN {PLAIN}")[0] == 235  # logged in: a second AUTH is refused
    assert client.cmd(first)[0] in (503, 504)
    code, text = client.cmd(secret)  # the client thinks it is in an AUTH exchange
    assert code == 500 and secret not in text
    client.cmd("QUIT")
    lab.recorder.wait_for("session.close")
    lab.bus.flush()
    texts = [e.get("text", "") for e in lab.recorder.events if e["kind"] == "session.line"]
    assert not any(secret in t for t in texts)
    assert secret not in (lab.data_dir / "events.jsonl").read_text()
