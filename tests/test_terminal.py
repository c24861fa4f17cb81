"""The terminal transcript: readable, coloured on request, and never driven by attacker bytes."""
import io
import json
import threading

from forgelab.cli.terminal import MAX_PENDING, TerminalView


def render(records, **kw):
    out = io.StringIO()
    view = TerminalView(out, **kw)
    for record in records:
        view(record)
    assert view.flush()
    return out.getvalue()


SESSION = [
    {"kind": "session.open", "protocol": "smtp", "session": {"id": "s1", "peer_ip": "127.0.66.1", "peer_port": 4000}, "policy": "strict"},
    {"kind": "session.line", "protocol": "smtp", "session_id": "s1", "direction": "in", "text": "MAIL FROM:<alerts@bank.example>"},
    {"kind": "verdict", "session_id": "s1", "stage": "mail_from", "action": "reject",
     "verdict": {"check": "spf", "result": "fail", "reason": "127.0.66.1 is not allowed to send for bank.example"}},
    {"kind": "message.rejected", "session_id": "s1", "stage": "mail_from", "action": "reject"},
    {"kind": "session.line", "protocol": "smtp", "session_id": "s1", "direction": "out", "text": "550 5.7.1 [spf] ...\n550 second line"},
    {"kind": "session.close", "protocol": "smtp", "session_id": "s1", "reason": "client quit"},
]


def test_transcript_shows_verdict_under_the_command_and_the_action():
    text = render(SESSION, colour=False)
    lines = text.splitlines()
    assert lines[0] == "── SMTP session s1 from 127.0.66.1:4000, policy strict"
    assert lines[1] == "[s1 smtp] C: MAIL FROM:<alerts@bank.example>"
    assert lines[2] == "[s1 smtp]    spf=fail -> reject: 127.0.66.1 is not allowed to send for bank.example"
    assert lines[3] == "[s1 smtp]    => REJECT at mail_from"
    assert lines[5].strip() == "550 second line"


def test_colour_only_when_asked():
    assert "\x1b[" not in render(SESSION, colour=False)
    assert "\x1b[31m" in render(SESSION, colour=True)


def test_attacker_control_characters_are_escaped():
    evil = {"kind": "session.line", "protocol": "smtp", "session_id": "s1", "direction": "in",
            "text": "HELO \x1b[2J\x1b]0;pwned\x07 \u202egnp.exe"}
    text = render([evil], colour=False)
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b[2J" in text
    tabbed = dict(evil, text="MAIL FROM:<a@b>\tSIZE=1\rX \udcff")
    assert "MAIL FROM:<a@b>\\tSIZE=1\\rX \\xff" in render([tabbed], colour=False)


def test_json_lines_mode_prints_every_event():
    lines = render(SESSION, json_lines=True).splitlines()
    assert [json.loads(line)["kind"] for line in lines] == [r["kind"] for r in SESSION]


def test_held_lines_come_out_in_order_after_release():
    out = io.StringIO()
    view = TerminalView(out, colour=False)
    view.hold()
    view(SESSION[1])
    assert view.flush() and out.getvalue() == ""
    out.write("BANNER\n")
    view.release()
    view(SESSION[-1])
    assert view.flush()
    lines = out.getvalue().splitlines()
    assert lines[0] == "BANNER" and lines[1].startswith("[s1 smtp] C: MAIL FROM") and "closed" in lines[2]


class StuckTerminal(io.StringIO):
    """A terminal nobody reads: every write waits until ``go`` is set."""

    def __init__(self):
        super().__init__()
        self.go = threading.Event()

    def write(self, text):
        self.go.wait(30)
        return super().write(text)


def test_a_terminal_that_does_not_keep_up_never_holds_up_the_bus():
    out = StuckTerminal()
    view = TerminalView(out, colour=False)
    publisher = threading.Thread(target=lambda: [view(SESSION[1]) for _ in range(MAX_PENDING * 2)])
    publisher.start()
    publisher.join(10)
    assert not publisher.is_alive()  # every record handed over while the terminal was stuck
    out.go.set()
    assert view.flush(10)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[s1 smtp] C: MAIL FROM")
    assert "lines not shown: the terminal did not keep up" in lines[-1]
    assert MAX_PENDING <= len(lines) - 1 < MAX_PENDING * 2
