"""No AUTH or PASS secret reaches any sink (issue 15, item 9): a recognisable secret is sent
every way a client may send it, through a real ``forgelab serve``; then its stdout (the
terminal transcript, or ``--json``), ``events.jsonl`` and the web view's API are searched for
the secret and its base64 forms."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from forgelab.protocols.pop3.connection import Pop3Connection
from forgelab.protocols.pop3.replies import Pop3Reply
from forgelab.protocols.smtp import Reply, SmtpConnection, events as ev

from line_client import LineClient

pytestmark = pytest.mark.timeout(120)

SECRET = "Zebra-Quartz-7319-hush"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


PLAIN = b64(f"\0alice\0{SECRET}")
LOGIN_USER, LOGIN_PASS = b64("alice"), b64(SECRET)


def forms(secret: str) -> set[str]:
    """The secret, and the runs of base64 text that encode it at each alignment."""
    found = {secret, b64(secret)[:-4]}
    for pad in (1, 2):
        found.add(base64.b64encode(b"\0" * pad + secret.encode()).decode()[4:-4])
    found.add(PLAIN[8:-4])
    return found


def leaks(text: str) -> list[str]:
    return [f for f in forms(SECRET) if f in text]


# Each: lines sent in one packet (pipelined), or with a reply read after each line.
SMTP_WAYS = {
    "before EHLO": ["AUTH PLAIN " + PLAIN],
    "lower case": ["EHLO me.example", "auth plain " + PLAIN],
    "LOGIN in steps": ["EHLO me.example", "AUTH LOGIN", LOGIN_USER, LOGIN_PASS],
    "LOGIN with an initial user": ["EHLO me.example", "AUTH LOGIN " + LOGIN_USER, LOGIN_PASS],
    "PLAIN answering 334": ["EHLO me.example", "AUTH PLAIN", PLAIN],
    "tabs and no mechanism": ["EHLO me.example", f"AUTH\tPLAIN\t{PLAIN}", "AUTH " + PLAIN, "AUTH=PLAIN " + PLAIN],
    "cancel then the password anyway": ["EHLO me.example", "AUTH LOGIN", LOGIN_USER, "*", LOGIN_PASS, SECRET],
    "after a failure, typed again": ["EHLO me.example", "AUTH LOGIN", LOGIN_USER, LOGIN_PASS, SECRET],
    "over-long": ["EHLO me.example", "AUTH PLAIN " + b64(f"\0alice\0{SECRET}" * 40),
                  "AUTH PLAIN", b64(f"\0alice\0{SECRET}" * 40)],
    "twice": ["EHLO me.example", "AUTH PLAIN " + b64("\0bob\0tiny-tim"), "AUTH PLAIN " + PLAIN,
              "AUTH LOGIN", LOGIN_USER, LOGIN_PASS],
}
SMTP_PIPELINED = {
    "in a transaction, pipelined": ["EHLO me.example", "MAIL FROM:<a@shop.example>", "AUTH LOGIN", LOGIN_USER,
                                    LOGIN_PASS, SECRET, "AUTH PLAIN " + PLAIN, "RSET", "QUIT"],
    "one packet": ["EHLO me.example", "AUTH PLAIN", PLAIN, "AUTH LOGIN", LOGIN_USER, LOGIN_PASS, "NOOP", "QUIT"],
    "typed in plain text after a refusal": ["MAIL FROM:<a@shop.example>", "AUTH LOGIN", "alice", SECRET, "QUIT"],
}
POP3_WAYS = {
    "before USER": ["PASS " + SECRET, "pass " + SECRET],
    "USER then PASS, cases": ["USER alice", "PASS " + SECRET, "USER alice", "pAsS " + SECRET,
                              "USER alice", " PASS\t" + SECRET, "USER alice", "PASS\0" + SECRET],
    "APOP": ["APOP alice " + hashlib.md5(SECRET.encode()).hexdigest(), "apop alice " + SECRET],
    "AUTH": ["AUTH PLAIN " + PLAIN, "AUTH PLAIN", PLAIN, LOGIN_PASS],
    "after login": ["USER bob", "PASS tiny-tim", "PASS " + SECRET, "APOP bob " + SECRET, "QUIT"],
    "over-long": ["PASS " + SECRET * 20],
}


def converse(address, lines: list[str], greet: str, pipelined: bool = False) -> None:
    c = LineClient(address, greet=greet)
    try:
        if pipelined:
            c.send("".join(line + "\r\n" for line in lines).encode())
            c.sock.settimeout(10)
            while c.sock.recv(65536):  # every reply, until the server closes after QUIT
                pass
            return
        for line in lines:
            c.send(line.encode() + b"\r\n")
            c.reply() if greet == "smtp" else c.line()
    except EOFError:
        pass
    finally:
        c.close()


class Serve:
    """``forgelab serve`` on free loopback ports in its own process; stdout kept whole."""

    def __init__(self, data_dir, *args):
        self.data_dir = data_dir
        self.out = open(data_dir.parent / f"out-{time.monotonic_ns()}.txt", "w+b")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "forgelab", "serve", "--smtps", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--smtp", "127.0.0.1:0", "--pop3", "127.0.0.1:0",
             "--web", "127.0.0.1:0", "--data", str(data_dir), *args],
            stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        addresses = {}
        deadline = time.monotonic() + 30
        while len(addresses) < 3:
            assert time.monotonic() < deadline and self.proc.poll() is None, self.output()
            time.sleep(0.05)
            for m in re.finditer(r"^\s+(SMTP|POP3|web)\s+(?:http://)?([\d.]+):(\d+)", self.output(), re.M):
                addresses[m[1]] = (m[2], int(m[3]))
        self.smtp, self.pop3, self.web = addresses["SMTP"], addresses["POP3"], addresses["web"]

    def output(self) -> str:
        self.out.seek(0)
        return self.out.read().decode("utf-8", "replace")

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{self.web[0]}:{self.web[1]}{path}", timeout=10) as r:
            return r.read().decode()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)
        out = self.output()
        self.out.close()
        return out


@pytest.mark.parametrize("args", [["--json"], ["--driver", "selector"]], ids=["json", "terminal-selector"])
def test_no_secret_reaches_any_sink(tmp_path, args):
    policy = tmp_path / "quick.toml"  # many failed logins here: keep their delays short
    policy.write_text('extends = "observe"\n[server]\nlogin_delay = 0.01\nlogin_max_delay = 0.05\n')
    server = Serve(tmp_path / "data", "--policy", str(policy), *args)
    try:
        for lines in SMTP_WAYS.values():
            converse(server.smtp, lines, "smtp")
        for lines in SMTP_PIPELINED.values():
            converse(server.smtp, lines, "smtp", pipelined=True)
        for lines in POP3_WAYS.values():
            converse(server.pop3, lines, "pop3")
        converse(server.pop3, [f"{line}" for lines in POP3_WAYS.values() for line in lines] + ["QUIT"], "pop3",
                 pipelined=True)
        sessions = json.loads(server.get("/api/sessions?limit=1000"))["sessions"]
        ids = [s["id"] for s in sessions]
        web = [server.get("/api/sessions")] + [server.get(f"/api/sessions/{i}") for i in ids]
        web += [server.get(f"/sessions/{i}") for i in ids[:3]]
    finally:
        out = server.stop()
    log = (tmp_path / "data" / "events.jsonl").read_text()
    assert len(ids) >= len(SMTP_WAYS) + len(SMTP_PIPELINED) + len(POP3_WAYS)
    assert "AUTH PLAIN ****" in log and "PASS ****" in log and "APOP alice ****" in log  # shown, masked
    assert "session.auth" in log  # the attempts themselves are recorded
    assert "C: AUTH PLAIN ****" in out if "--json" not in args else '"AUTH PLAIN ****"' in out
    for name, text in [("stdout", out), ("events.jsonl", log)] + [(f"web {i}", t) for i, t in enumerate(web)]:
        assert not leaks(text), (name, leaks(text))


def test_the_cores_mask_what_they_show():
    smtp = SmtpConnection()
    smtp.send(Reply(220, None, "hi"))
    shown = []
    for line in ["AUTH PLAIN " + PLAIN, "auth login " + LOGIN_USER, "AUTH " + PLAIN, "AUTH=PLAIN " + PLAIN, LOGIN_PASS,
                 "AUTH LOGIN", "NOOP", LOGIN_PASS]:
        smtp.receive_data(line.encode() + b"\r\n")
        event = smtp.next_event()
        shown.append(smtp.last_line)
        smtp.send(event.reply if isinstance(event, ev.CommandError) else Reply(250, None, "ok"))
    assert shown == ["AUTH PLAIN ****", "auth login ****", "AUTH ****", "AUTH ****", "<AUTH response ****>",
                     "AUTH LOGIN", "NOOP", "<a line that may be a credential ****>"]
    pop = Pop3Connection()
    pop.send(Pop3Reply.ok("hi"))
    shown = []
    for line in ["PASS " + SECRET, "pass\t" + SECRET, "PASS\0" + SECRET, "APOP alice 0123", "AUTH PLAIN " + PLAIN,
                 LOGIN_PASS, "STAT", "USER alice"]:
        pop.receive_data(line.encode() + b"\r\n")
        event = pop.next_event()
        shown.append(event.line)
        pop.send(Pop3Reply.err("no"))
    assert shown == ["PASS ****", "pass ****", "PASS ****", "APOP alice ****", "AUTH ****",
                     "<a line that may be a credential ****>", "STAT", "USER alice"]
