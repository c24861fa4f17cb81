"""The web view's memory: sessions and messages rebuilt from bus events, bounded.

One ``EventIndex`` subscribes to the bus. It keeps the last ``max_sessions``
sessions with their dialogue (each client line, reply, verdict and outcome, in the
order they happened), the last ``max_messages`` messages, and a ring of recent
events so an event stream can resume from a sequence number without a gap.
Everything here is attacker-written text; it is stored as is and escaped where shown.
"""
from __future__ import annotations

import threading
from collections import Counter, OrderedDict, deque
from typing import Callable

MAX_SESSIONS = 500
MAX_MESSAGES = 500
MAX_STEPS = 2000      # dialogue steps kept per session; later ones are counted, not kept
MAX_TEXT = 4000       # characters kept of one line
MAX_RECENT = 2000     # events kept for event-stream replay
MAX_SOURCE = 8192     # characters kept of a refused message's source (its event keeps no more)

Listener = Callable[[dict], None]


def _clip(text, limit: int = MAX_TEXT) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"


def _address(argument: str) -> str:
    """The address in ``FROM:<a@b> SIZE=1`` (what the client typed; the page only shows it)."""
    _, _, rest = argument.partition(":")
    rest = rest.strip()
    if rest.startswith("<"):
        return rest[1:].partition(">")[0]
    return rest.split(" ")[0]


def _attempted_envelope(session: dict, message_id: str | None) -> dict:
    """A refused message has no envelope record: rebuild what the client asked for from the dialogue."""
    mail_from, rcpts = None, []
    for step in session["steps"]:
        if step["type"] != "line" or step.get("direction") != "in":
            continue
        verb = step["text"][:9].upper()
        if verb.startswith("MAIL FROM"):
            mail_from, rcpts = _address(step["text"]), []
        elif verb.startswith("RCPT TO") and mail_from is not None:
            rcpts.append(_address(step["text"]))
    return {"id": message_id, "mail_from": mail_from, "rcpt_tos": rcpts, "attempted": True}


_TEXTS = ("session_id", "message_id", "protocol", "direction", "text", "stage", "action", "reply", "reason",
          "subject", "from_", "ending", "name", "description", "check", "result", "mail_from", "id", "peer_ip",
          "helo", "policy", "sha256", "source")
_MAPPINGS = ("session", "envelope", "verdict", "attributes", "details")
_NUMBERS = ("ts", "size", "peer_port")


def _well_formed(value, depth: int = 0) -> bool:
    """Whether a record read back from an event log has the types this index and the pages
    expect (a log from an older version, or edited by hand, must not break the view)."""
    if depth > 3:
        return True
    if not isinstance(value, dict):
        return False
    for key, item in value.items():
        if item is None:
            continue
        if key in _TEXTS and not isinstance(item, str) or key in _NUMBERS and (
                isinstance(item, bool) or not isinstance(item, (int, float))):
            return False
        if key in _MAPPINGS and not _well_formed(item, depth + 1):
            return False
        if key == "verdicts" and not (isinstance(item, list) and all(_well_formed(v, depth + 1) for v in item)):
            return False
        if key == "rcpt_tos" and not (isinstance(item, list) and all(isinstance(r, str) for r in item)):
            return False
        if key == "locations" and not (isinstance(item, list) and all(
                isinstance(loc, list) and len(loc) == 3 and all(isinstance(x, str) for x in loc) for loc in item)):
            return False
    return True


def _verdict_key(verdict: dict) -> tuple:
    return verdict.get("check"), verdict.get("result")


class EventIndex:
    """Call it with each bus record; read it from any thread."""

    def __init__(self, max_sessions: int = MAX_SESSIONS, max_messages: int = MAX_MESSAGES,
                 max_steps: int = MAX_STEPS, max_recent: int = MAX_RECENT):
        self.max_sessions, self.max_messages, self.max_steps = max_sessions, max_messages, max_steps
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, dict] = OrderedDict()
        self._messages: OrderedDict[str, dict] = OrderedDict()
        self._recent: deque[dict] = deque(maxlen=max_recent)
        self._listeners: list[Listener] = []
        self.last_seq = 0
        self.policy: dict | None = None  # the last policy.changed record

    # -- feeding -----------------------------------------------------------
    def __call__(self, record: dict) -> None:
        with self._lock:
            self.last_seq = max(self.last_seq, int(record.get("seq", 0)))
            self._recent.append(record)
            handler = getattr(self, "_on_" + record.get("kind", "").replace(".", "_"), None)
            if handler:
                handler(record)
            for listener in list(self._listeners):
                listener(record)

    def replay(self, records) -> None:
        """Rebuild sessions and messages from earlier records (the event log of earlier runs),
        before any live record. They are not resent to event streams, do not change the policy
        shown, count as sequence number 0 (the bus of this run starts again at 1, and the page
        marks what is newer than it has seen) and a session they leave open is shown closed:
        it ended with its run. A record of the wrong shape is skipped."""
        with self._lock:
            for record in records:
                kind = record.get("kind") if isinstance(record, dict) else None
                handler = getattr(self, "_on_" + kind.replace(".", "_"), None) if isinstance(kind, str) else None
                if handler is None or kind == "policy.changed" or not _well_formed(record):
                    continue
                handler({**record, "seq": 0})
            for session in self._sessions.values():
                if session["open"]:
                    session.update(open=False, close_reason="not closed in the event log: the server stopped first")

    def recent(self, since: int | None, then: Callable[[int], None] | None = None) -> list[dict]:
        """The kept records after ``since`` (none for None); ``then(last_seq)`` is called before
        any later record is handed to a listener (so a listener it adds misses nothing)."""
        with self._lock:
            backlog = [r for r in self._recent if since is not None and r.get("seq", 0) > since]
            if then is not None:
                then(self.last_seq)
            return backlog

    def listen(self, listener: Listener, since: int | None = None) -> tuple[list[dict], Callable[[], None]]:
        """Register ``listener`` for every later record; return the kept records after ``since``
        (atomically, so nothing is missed or sent twice) and a function that unregisters it."""
        with self._lock:
            backlog = [r for r in self._recent if since is not None and r.get("seq", 0) > since]
            self._listeners.append(listener)

        def stop() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
        return backlog, stop

    def _session(self, session_id: str | None, protocol: str = "smtp") -> dict | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:  # opened before we subscribed, or already evicted
            session = self._new_session({"id": session_id}, protocol, None, None)
        return session

    def _new_session(self, info: dict, protocol: str, policy: str | None, ts: float | None) -> dict:
        session = {"id": str(info.get("id")), "protocol": protocol, "peer_ip": info.get("peer_ip"),
                   "peer_port": info.get("peer_port"), "helo": info.get("helo"), "policy": policy,
                   "opened": ts, "closed": None, "close_reason": None, "open": True,
                   "steps": [], "dropped_steps": 0, "messages": [], "verdicts": 0,
                   "actions": [], "last_seq": 0}
        self._sessions[session["id"]] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session

    def _step(self, session: dict | None, record: dict, **step) -> None:
        if session is None:
            return
        session["last_seq"] = record.get("seq", 0)
        if len(session["steps"]) >= self.max_steps:
            session["dropped_steps"] += 1
            return
        session["steps"].append({"seq": record.get("seq"), "ts": record.get("ts"), **step})

    def _on_session_open(self, r: dict) -> None:
        self._new_session(r.get("session") or {}, r.get("protocol", "smtp"), r.get("policy"), r.get("ts"))

    def _on_session_line(self, r: dict) -> None:
        session = self._session(r.get("session_id"), r.get("protocol", "smtp"))
        text = _clip(r.get("text"))
        if r.get("direction") == "in" and session.get("protocol") == "smtp":
            verb, _, rest = text.partition(" ")
            if verb.upper() in ("HELO", "EHLO") and rest.strip():
                session["helo"] = _clip(rest.strip(), 255)
        self._step(session, r, type="line", direction=r.get("direction"), text=text)

    def _on_session_xclient(self, r: dict) -> None:
        session = self._session(r.get("session_id"))
        attributes = {str(k): _clip(v, 255) for k, v in (r.get("attributes") or {}).items()}
        if attributes.get("ADDR"):
            session["peer_ip"] = attributes["ADDR"]
        self._step(session, r, type="xclient", attributes=attributes)

    def _on_session_close(self, r: dict) -> None:
        session = self._session(r.get("session_id"), r.get("protocol", "smtp"))
        session.update(open=False, closed=r.get("ts"), close_reason=r.get("reason"))
        self._step(session, r, type="close", reason=r.get("reason"))

    def _on_verdict(self, r: dict) -> None:
        session = self._session(r.get("session_id"))
        session["verdicts"] += 1
        step = {"stage": r.get("stage"), "verdict": r.get("verdict") or {}, "action": r.get("action"),
                "message_id": r.get("message_id")}
        self._step(session, r, type="verdict", **step)
        message = self._messages.get(r.get("message_id") or "")
        if message is not None:
            message["stage_verdicts"].append(step)

    def _message(self, r: dict, session: dict) -> dict:
        message_id = r.get("message_id")
        message = self._messages.get(message_id)
        if message is None:
            message = {"id": message_id, "session_id": r.get("session_id"), "peer_ip": session.get("peer_ip"),
                       "helo": session.get("helo"), "ts": r.get("ts"), "status": None, "action": None,
                       "stage": None, "reply": None, "envelope": None, "subject": None, "from": None,
                       "size": None, "ending": None, "locations": [], "verdicts": [], "rejections": [],
                       "stage_verdicts": [s for s in session["steps"]
                                          if s["type"] == "verdict" and s.get("message_id") == message_id],
                       "seq": r.get("seq")}
            self._messages[message_id] = message
            while len(self._messages) > self.max_messages:
                self._messages.popitem(last=False)
            session["messages"].append(message_id)
        return message

    def _on_message_delivered(self, r: dict) -> None:
        session = self._session(r.get("session_id"))
        message = self._message(r, session)
        message.update(status="delivered", action=r.get("action"), stage="message", envelope=r.get("envelope"),
                       subject=r.get("subject"), size=r.get("size"), ending=r.get("ending"),
                       locations=r.get("locations") or [], sha256=r.get("sha256"), ts=r.get("ts"), seq=r.get("seq"))
        message["from"] = r.get("from_")
        message["verdicts"] = self._with_actions(session, r.get("verdicts") or [], r.get("message_id"))
        session["actions"].append(r.get("action"))
        self._step(session, r, type="delivered", message_id=r.get("message_id"), action=r.get("action"),
                   locations=message["locations"])

    def _on_message_rejected(self, r: dict) -> None:
        session = self._session(r.get("session_id"))
        session["actions"].append(r.get("action"))
        step = dict(type="rejected", message_id=r.get("message_id"), stage=r.get("stage"),
                    action=r.get("action"), reply=_clip(r.get("reply"), 2 * MAX_TEXT))
        if r.get("source") is not None:  # refused at DATA: what the message claimed to be
            step.update({k: None if r.get(k) is None else _clip(r[k]) for k in ("from_", "subject")})
        self._step(session, r, **step)
        if not r.get("message_id"):
            return  # refused at connect or HELO: a session event, no message yet
        message = self._message(r, session)
        message["rejections"].append({k: v for k, v in step.items() if k != "type"})
        if message["status"] != "delivered":  # a refused RCPT does not undo a later delivery
            message.update(status="rejected", action=r.get("action"), stage=r.get("stage"),
                           reply=_clip(r.get("reply"), 2 * MAX_TEXT), ts=r.get("ts"), seq=r.get("seq"))
            message["envelope"] = message["envelope"] or _attempted_envelope(session, message_id=r.get("message_id"))
            if r.get("source") is not None:  # refused at DATA: the event kept its start, and its From and Subject
                message.update(subject=step.get("subject"), source=_clip(r["source"], 2 * MAX_SOURCE))
                message["from"] = step.get("from_")
            message["verdicts"] = self._with_actions(session, r.get("verdicts") or [], r.get("message_id"))

    def _on_message_deleted(self, r: dict) -> None:
        message = self._messages.get(r.get("message_id") or "")
        if message is not None:
            message.update(locations=[], deleted=True)

    def _on_message_released(self, r: dict) -> None:
        message = self._messages.get(r.get("message_id") or "")
        if message is not None:
            message["locations"] = r.get("locations") or []

    def _on_policy_changed(self, r: dict) -> None:
        self.policy = {"name": r.get("name"), "description": r.get("description"), "ts": r.get("ts")}

    @staticmethod
    def _with_actions(session: dict, summaries: list[dict], message_id: str | None) -> list[dict]:
        """Each verdict of a message in full, with the stage and the action the policy gave it.

        message.delivered and message.rejected list only each verdict's check and result; the
        verdicts themselves are the session's verdict events before them (of this message, or
        of the session's connect and HELO). The n verdicts of one check and result are the last
        n such events; one the index no longer has is shown as the summary."""
        published: dict[tuple, list[dict]] = {}
        for step in session["steps"]:
            if step["type"] == "verdict" and step.get("message_id") in (None, message_id):
                published.setdefault(_verdict_key(step["verdict"]), []).append(step)
        wanted = Counter(_verdict_key(v) for v in summaries)
        steps = {key: iter(published.get(key, [])[-count:]) for key, count in wanted.items()}
        out = []
        for summary in summaries:
            step = next(steps[_verdict_key(summary)], None)
            if step is None:
                out.append({**summary, "stage": None, "policy_action": None})
            else:
                out.append({**step["verdict"], "stage": step.get("stage"), "policy_action": step.get("action")})
        return out

    # -- reading -----------------------------------------------------------
    @staticmethod
    def session_summary(session: dict) -> dict:
        return {k: v for k, v in session.items() if k != "steps"} | {"steps": len(session["steps"])}

    @staticmethod
    def message_summary(message: dict) -> dict:
        envelope = message.get("envelope") or {}
        return {"id": message["id"], "session_id": message["session_id"], "ts": message["ts"],
                "status": message["status"], "action": message["action"], "stage": message["stage"],
                "reply": message["reply"], "subject": message["subject"], "from": message["from"],
                "mail_from": envelope.get("mail_from"), "rcpt_tos": envelope.get("rcpt_tos"),
                "peer_ip": message["peer_ip"], "size": message["size"],
                "checks": [{"check": v.get("check"), "result": v.get("result")} for v in message["verdicts"]],
                "seq": message["seq"]}

    def sessions(self, limit: int = 100) -> list[dict]:
        """Newest first, without their dialogue."""
        with self._lock:
            newest = list(self._sessions.values())[::-1][:limit]
            return [self.session_summary(s) for s in newest]

    def session(self, session_id: str) -> dict | None:
        with self._lock:
            session = self._sessions.get(session_id)
            return None if session is None else {**session, "steps": list(session["steps"]),
                                                 "messages": list(session["messages"])}

    def messages(self, limit: int = 100) -> list[dict]:
        """Newest first, without verdict details."""
        with self._lock:
            newest = list(self._messages.values())[::-1][:limit]
            return [self.message_summary(m) for m in newest]

    def searchable(self) -> list[dict]:
        """Every message, newest first, as ``messages`` gives it plus its ``locations`` and the
        ``policy`` its session ran under (what search looks at)."""
        with self._lock:
            out = []
            for m in reversed(self._messages.values()):
                session = self._sessions.get(m["session_id"] or "") or {}
                out.append(self.message_summary(m) | {"locations": list(m["locations"]),
                                                      "policy": session.get("policy")})
            return out

    def message(self, message_id: str) -> dict | None:
        with self._lock:
            message = self._messages.get(message_id)
            return None if message is None else {**message, "verdicts": list(message["verdicts"]),
                                                 "stage_verdicts": list(message["stage_verdicts"]),
                                                 "rejections": list(message["rejections"])}

    def counts(self) -> dict:
        with self._lock:
            return {"sessions": len(self._sessions), "messages": len(self._messages), "last_seq": self.last_seq}
