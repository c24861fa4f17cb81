"""Real sessions that make every kind of event the server publishes.

``tests/data/events_before.jsonl`` holds what these sessions published before the event
records were typed (recorded with ``python tests/event_scenario.py``); ``test_event_records.py``
plays them again and compares the shape of every event with it.
"""
from __future__ import annotations

import json
import os
import poplib
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDED = HERE / "data" / "events_before.jsonl"

LEGIT = (b"From: News <news@news.example>\r\nTo: alice@corp.example\r\nSubject: weekly news\r\n"
         b"Message-ID: <n1@news.example>\r\n\r\nHello.\r\n")


def _trusting() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def play_every_kind(app) -> None:
    """SMTP and POP3 sessions under ``strict`` that publish every kind the server's bus has,
    then a policy switch. ``app``: a started Forgelab with TLS (the lab certificate)."""
    from forgelab.core.policy import load_policy

    host, port = app.smtp.address
    with smtplib.SMTP(host, port, timeout=10) as c:  # TLS, AUTH (a failure, then a pass), a delivery
        c.ehlo("client.example")
        c.starttls(context=_trusting())
        c.ehlo("client.example")
        try:
            c.login("alice", "wrong")
        except smtplib.SMTPAuthenticationError:
            pass
        c.login("alice", "rabbit-hole")
        c.sendmail("news@news.example", ["alice@corp.example"], LEGIT)
    with smtplib.SMTP(host, port, timeout=10) as c:  # XCLIENT, refusals at HELO and MAIL FROM, one over a limit
        c.ehlo("client.example")
        c.docmd("XCLIENT", "ADDR=192.0.2.66 NAME=[UNAVAILABLE]")
        assert c.ehlo("mail.bank.example")[0] == 550  # spf-helo: a refusal with no message yet
        c.ehlo("client.example")
        assert c.docmd("MAIL", "FROM:<ceo@bank.example>")[0] == 550
        c.rset()
        c.mail("someone@news.example")
        c.rcpt("alice@corp.example")
        headers = b"".join(b"X-Many: %d\r\n" % i for i in range(1100))
        assert c.data(headers + b"\r\nbody\r\n")[0] == 552
    with socket.create_connection((host, port), timeout=10) as raw:  # a TLS handshake that fails
        f = raw.makefile("rb")
        f.readline()
        raw.sendall(b"EHLO client.example\r\n")
        while f.readline()[3:4] == b"-":
            pass
        raw.sendall(b"STARTTLS\r\n")
        f.readline()
        raw.sendall(b"this is not a TLS hello\r\n" * 10)
        raw.settimeout(10)
        try:
            while raw.recv(4096):
                pass
        except OSError:
            pass
    pop = poplib.POP3(*app.pop3.address, timeout=10)
    pop.stls(context=_trusting())
    pop.user("alice")
    pop.pass_("rabbit-hole")
    pop.stat()
    pop.quit()
    # The web view's actions (tests/test_web_messages.py plays them through its API).
    from forgelab.web.actions import delete_message, release_message
    key = app.store.deliver("alice", LEGIT, "quarantine")
    locations = [["alice", "quarantine", key]]
    release_message(app.store, app.bus, "m-web-action", locations)
    delete_message(app.store, app.bus, "m-web-action", [["alice", "inbox", key]])
    app.context.set_policy(load_policy("observe"))


def play_worker_wire(data_dir: Path) -> list[dict]:
    """The wire kinds of one ``_smtp-worker`` process: worker.failed (a bad configuration), then
    worker.ready, worker.policy (a switch, and a switch that fails) and its policy.changed."""
    out = []
    bad = subprocess.run([sys.executable, "-m", "forgelab", "_smtp-worker", json.dumps({"smtp": "nonsense"})],
                         capture_output=True, timeout=60)
    out += [json.loads(line) for line in bad.stdout.splitlines() if line.strip()]
    config = {"smtp": "127.0.0.1:0", "data_dir": str(data_dir), "policy": "strict", "tls": False}
    proc = subprocess.Popen([sys.executable, "-m", "forgelab", "_smtp-worker", json.dumps(config)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        lines = iter(proc.stdout.readline, b"")
        out.append(json.loads(next(lines)))  # worker.ready
        for source in ("observe", "no-such-policy"):
            proc.stdin.write(json.dumps({"policy": source}).encode() + b"\n")
            proc.stdin.flush()
            for line in lines:
                out.append(json.loads(line))
                if out[-1].get("kind") == "worker.policy":
                    break
        proc.stdin.close()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out


def record(path: Path = RECORDED) -> None:
    """Play every kind and write what the bus published, one JSON line each."""
    from forgelab.app import Forgelab, Settings

    events: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        app = Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=tmp, policy="strict",
                                event_log=False))
        app.bus.subscribe(events.append)
        with app:
            play_every_kind(app)
        events += play_worker_wire(Path(tmp) / "worker")
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


if __name__ == "__main__":
    os.chdir(HERE.parent)
    record(Path(sys.argv[1]) if len(sys.argv) > 1 else RECORDED)
