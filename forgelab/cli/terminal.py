"""The live transcript in the terminal: one line per client line, reply and verdict."""
from __future__ import annotations

import json
import sys
import threading

import click

from ..core.printable import printable

RESULT_COLOURS = {"pass": "green", "fail": "red", "softfail": "yellow", "neutral": "blue", "none": "white",
                  "temperror": "magenta", "permerror": "red"}
SESSION_COLOURS = ("cyan", "blue", "magenta", "bright_cyan", "bright_blue", "bright_magenta")
ACTION_COLOURS = {"accept": "green", "tag": "yellow", "quarantine": "magenta", "tempfail": "magenta", "reject": "red"}


MAX_PENDING = 10_000  # lines waiting for a slow terminal; past it they are counted, not kept


class TerminalView:
    """Subscribes to the event bus and prints each session's dialogue as it happens.

    The bus only hands it a line: a thread of its own writes them, so a terminal that does
    not keep up (paused with Ctrl-S, a pipe nobody reads) never holds up the bus and the mail
    servers behind it. Past ``MAX_PENDING`` waiting lines, new ones are counted and one
    line says how many were not shown.
    """

    def __init__(self, stream=None, colour: bool | None = None, json_lines: bool = False):
        self.stream = stream or sys.stdout
        self.colour = self.stream.isatty() if colour is None else colour
        self.json_lines = json_lines
        self._ready = threading.Condition()
        self._lines: list[str] = []
        self._dropped = 0
        self._held = False
        self._writing = False
        self._thread: threading.Thread | None = None

    def hold(self) -> None:
        """Keep lines back (e.g. until the banner is printed); ``release()`` lets them out."""
        with self._ready:
            self._held = True

    def release(self) -> None:
        with self._ready:
            self._held = False
            self._ready.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every line handed over so far is written (False if not within ``timeout``)."""
        with self._ready:
            return self._ready.wait_for(
                lambda: self._held or not (self._lines or self._dropped or self._writing), timeout)

    def __call__(self, record: dict) -> None:
        if self.json_lines:
            line = json.dumps(record, default=str, ensure_ascii=False)
        else:
            line = self.format(record)
        if line is None:
            return
        with self._ready:
            if len(self._lines) >= MAX_PENDING:
                self._dropped += 1
                return
            self._lines.append(line)
            if self._thread is None:
                self._thread = threading.Thread(target=self._write, name="forgelab-terminal", daemon=True)
                self._thread.start()
            self._ready.notify_all()

    def _write(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: not self._held and (self._lines or self._dropped))
                lines, self._lines = self._lines, []
                dropped, self._dropped = self._dropped, 0
                self._writing = True
            text = "".join(line + "\n" for line in lines)
            if dropped:
                text += f"[{dropped} lines not shown: the terminal did not keep up]\n"
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # a closed terminal or pipe: the lab goes on without it
                pass
            with self._ready:
                self._writing = False
                self._ready.notify_all()

    def _style(self, text: str, **kw) -> str:
        return click.style(text, **kw) if self.colour else text

    def format(self, record: dict) -> str | None:
        kind = record["kind"]
        sid = record.get("session_id") or record.get("session", {}).get("id", "")
        proto = record.get("protocol", "smtp")
        # One colour per session, so interleaved sessions read as separate blocks.
        tag = self._style(f"[{sid} {proto}]", fg=SESSION_COLOURS[sum(map(ord, sid)) % len(SESSION_COLOURS)])
        if kind == "session.open":
            s = record["session"]
            policy = f", policy {record['policy']}" if record.get("policy") else ""
            return self._style(f"── {proto.upper()} session {s['id']} from {s['peer_ip']}:{s['peer_port']}{policy}", bold=True)
        if kind == "session.line":
            arrow = "C:" if record["direction"] == "in" else "S:"
            indent = "\n" + " " * (len(sid) + len(proto) + 7)
            text = indent.join(printable(line) for line in str(record["text"]).split("\n"))
            body = self._style(text, fg="white" if arrow == "C:" else "bright_black") if self.colour else text
            return f"{tag} {arrow} {body}"
        if kind == "verdict":
            v = record["verdict"]
            mark = self._style(f"{v['check']}={v['result']}", fg=RESULT_COLOURS.get(v["result"], "white"), bold=True)
            action = self._style(record["action"], fg=ACTION_COLOURS.get(record["action"], "white"))
            return f"{tag}    {mark} -> {action}: {printable(v['reason'])}"
        if kind == "message.delivered":
            action = record["action"]
            where = ", ".join(f"{u}/{f}" for u, f, _ in record["locations"])
            return f"{tag}    " + self._style(f"=> {action.upper()}: stored for {where}", fg=ACTION_COLOURS.get(action), bold=True)
        if kind == "message.rejected":
            return f"{tag}    " + self._style(f"=> {record['action'].upper()} at {record['stage']}", fg="red", bold=True)
        if kind == "session.close":
            return self._style(f"── {proto.upper()} session {sid} closed: {record.get('reason', '')}", dim=True)
        if kind == "policy.changed":
            return self._style(f"== policy is now {record['name']}", bold=True)
        return None
