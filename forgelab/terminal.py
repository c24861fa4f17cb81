"""The live transcript in the terminal: one line per client line, reply and verdict."""
from __future__ import annotations

import json
import sys
import threading

import click

from .printable import printable

RESULT_COLOURS = {"pass": "green", "fail": "red", "softfail": "yellow", "neutral": "blue", "none": "white",
                  "temperror": "magenta", "permerror": "red"}
SESSION_COLOURS = ("cyan", "blue", "magenta", "bright_cyan", "bright_blue", "bright_magenta")
ACTION_COLOURS = {"accept": "green", "tag": "yellow", "quarantine": "magenta", "tempfail": "magenta", "reject": "red"}


class TerminalView:
    """Subscribes to the event bus and prints each session's dialogue as it happens."""

    def __init__(self, stream=None, colour: bool | None = None, json_lines: bool = False):
        self.stream = stream or sys.stdout
        self.colour = self.stream.isatty() if colour is None else colour
        self.json_lines = json_lines
        self._lock = threading.Lock()
        self._held: list[str] | None = None

    def hold(self) -> None:
        """Keep lines back (e.g. until the banner is printed); ``release()`` prints them."""
        with self._lock:
            self._held = []

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held or [], None
            for line in held:
                self.stream.write(line + "\n")
            self.stream.flush()

    def _style(self, text: str, **kw) -> str:
        return click.style(text, **kw) if self.colour else text

    def __call__(self, record: dict) -> None:
        if self.json_lines:
            line = json.dumps(record, default=str, ensure_ascii=False)
        else:
            line = self.format(record)
        if line is None:
            return
        with self._lock:
            if self._held is not None:
                self._held.append(line)
                return
            self.stream.write(line + "\n")
            self.stream.flush()

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
