"""The events the server publishes, one frozen record per kind: the schema of the event bus.

A publisher builds a record (``SessionLine(...)``) and hands it to ``EventBus.publish``;
the bus numbers it and hands every subscriber (the JSONL log, the web view, the terminal)
the plain dict ``to_dict()`` makes, with ``seq`` and ``ts`` in front::

    {"seq": 7, "ts": 1765000000.1, "kind": "session.line", "v": 1, "session_id": ..., ...}

``v`` is the schema version, ``VERSION``. Compatibility rule: a new kind or a new field
keeps the version (a consumer ignores what it does not know); renaming or removing a field,
or changing what one means, raises it. docs/events.md is made from these records
(``event_schema.schema_markdown``) and a test keeps the two the same.

Every attacker-written string is bounded before it gets here (``clip``, ``bounded``,
and the helpers of ``event_values.py``), so one event never holds a huge header.
Each ``to_dict`` is written out by hand: the event path is hot (docs/performance.md).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar


VERSION = 1


@dataclass(frozen=True, slots=True)
class EventRecord:
    """What every record has: its ``kind`` (a class constant) and ``to_dict()``."""

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict:  # each kind writes its own
        raise NotImplementedError

    @classmethod
    def from_dict(cls, record: dict) -> "EventRecord":
        """The record a published dict holds (``seq``, ``ts``, ``kind``, ``v`` and unknown keys ignored)."""
        return cls(**{f.name: record[f.name] for f in fields(cls) if f.name in record})


# -- sessions (SMTP and POP3) --------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SessionOpen(EventRecord):
    """A client connected.

    :param protocol: ``smtp`` or ``pop3``.
    :param session: the session as it starts: ``{id, peer_ip, peer_port}``, and for SMTP also
        ``helo``, ``esmtp``, ``tls``, ``authenticated``, ``xclient``.
    :param policy: the policy the session runs under (SMTP only; absent for POP3).
    """

    kind: ClassVar[str] = "session.open"
    protocol: str
    session: dict
    policy: str | None = None

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "v": VERSION, "protocol": self.protocol, "session": self.session}
        if self.policy is not None:
            d["policy"] = self.policy
        return d


@dataclass(frozen=True, slots=True)
class SessionLine(EventRecord):
    """One line of the dialogue, as the client sent it or the server answered it (a session's
    lines past its ``TranscriptBudget`` are counted in ``session.close``, not published).

    :param session_id: the session's id.
    :param protocol: ``smtp`` or ``pop3``.
    :param direction: ``in`` (the client's line) or ``out`` (the server's reply; lines of one
        multi-line reply joined with ``\\n``).
    :param text: the line, without its end of line; a password or AUTH response is shown as ``****``.
    """

    kind: ClassVar[str] = "session.line"
    session_id: str
    protocol: str
    direction: str
    text: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "v": VERSION, "session_id": self.session_id, "protocol": self.protocol,
                "direction": self.direction, "text": self.text}


@dataclass(frozen=True, slots=True)
class SessionTls(EventRecord):
    """A TLS handshake (STARTTLS, STLS) ended.

    :param session_id: the session's id.
    :param protocol: ``smtp`` or ``pop3``.
    :param ok: whether the handshake succeeded (a failed one ends the session).
    :param version: the TLS version agreed (absent when it failed).
    :param cipher: the cipher agreed (SMTP only; absent when it failed).
    :param error: why it failed, at most 200 characters (absent when it succeeded).
    """

    kind: ClassVar[str] = "session.tls"
    session_id: str
    protocol: str
    ok: bool
    version: str | None = None
    cipher: str | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "v": VERSION, "session_id": self.session_id, "protocol": self.protocol, "ok": self.ok}
        d.update((key, getattr(self, key)) for key in ("version", "cipher", "error") if getattr(self, key) is not None)
        return d


@dataclass(frozen=True, slots=True)
class SessionAuth(EventRecord):
    """An SMTP AUTH exchange ended (never the password).

    :param session_id: the session's id.
    :param mechanism: ``PLAIN`` or ``LOGIN``.
    :param username: the user name given, at most 64 characters.
    :param result: ``pass`` or ``fail``.
    """

    kind: ClassVar[str] = "session.auth"
    session_id: str
    mechanism: str
    username: str
    result: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "v": VERSION, "session_id": self.session_id, "mechanism": self.mechanism,
                "username": self.username, "result": self.result}


@dataclass(frozen=True, slots=True)
class SessionXclient(EventRecord):
    """XCLIENT changed who the SMTP client is said to be (lab mode, from 127.0.0.1 only).

    :param session_id: the session's id.
    :param attributes: the attributes as given (``ADDR``, ``NAME``, ``HELO``), bounded.
    """

    kind: ClassVar[str] = "session.xclient"
    session_id: str
    attributes: dict

    def to_dict(self) -> dict:
        return {"kind": self.kind, "v": VERSION, "session_id": self.session_id, "attributes": self.attributes}


@dataclass(frozen=True, slots=True)
class SessionClose(EventRecord):
    """The connection is gone.

    :param protocol: ``smtp`` or ``pop3``.
    :param session_id: the session's id.
    :param reason: why it ended (``client quit``, ``idle timeout``, ...).
    :param unlogged_lines: lines of the dialogue counted but not published (its transcript budget ran out).
    """

    kind: ClassVar[str] = "session.close"
    protocol: str
    session_id: str
    reason: str
    unlogged_lines: int

    def to_dict(self) -> dict:
        return {"kind": self.kind, "v": VERSION, "protocol": self.protocol, "session_id": self.session_id,
                "reason": self.reason, "unlogged_lines": self.unlogged_lines}


# -- verdicts and outcomes (SMTP) ---------------------------------------------------

@dataclass(frozen=True, slots=True)
class VerdictGiven(EventRecord):
    """One defence's verdict at one stage, with what the policy makes of it.

    :param session_id: the session's id.
    :param message_id: the message's id (null at connect and HELO, before MAIL FROM).
    :param stage: ``connect``, ``helo``, ``mail_from``, ``rcpt_to`` or ``message``.
    :param verdict: ``{check, result, reason, action, details}`` (``verdict_detail``): ``action`` is
        the defence's suggestion; ``details`` bounded, without what the message or the event holds.
    :param action: what the policy does with this verdict alone: accept, tag, quarantine, tempfail, reject.
    """

    kind: ClassVar[str] = "verdict"
    session_id: str
    message_id: str | None
    stage: str
    verdict: dict
    action: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "v": VERSION, "session_id": self.session_id, "message_id": self.message_id,
                "stage": self.stage, "verdict": self.verdict, "action": self.action}


@dataclass(frozen=True, slots=True)
class MessageRejected(EventRecord):
    """The policy refused (reject or tempfail) at one stage, or a message was over a cap of the server.

    :param session_id: the session's id.
    :param message_id: the message's id (null when refused at connect or HELO).
    :param stage: the stage that refused: ``connect``, ``helo``, ``mail_from``, ``rcpt_to`` or ``message``.
    :param reply: the reply sent, its lines joined by CRLF, 7-bit, at most 10 lines of 512 octets (for
        people; read ``deciding``, never this text).
    :param action: ``reject`` or ``tempfail``.
    :param limit: the policy key that refused the message whole, before any defence: a cap it was over
        (``max_header_fields``, ...) or ``header_start`` (a folded first line); absent when a defence refused.
    :param deciding: the check whose verdict decided the refusal (of those the policy gave the harshest
        action, the first in the policy's order), named first in the reply; null when a cap refused.
    :param verdicts: every verdict the decision weighed, each ``{check, result, action}``
        (``verdict_summary``); the verdicts in full are the ``verdict`` events before this one.
    :param subject: refused at DATA: the Subject header, clipped (absent without one, or unparsed).
    :param from_: refused at DATA: the From header, clipped (absent without one, or unparsed).
    :param source: refused at DATA: the message as received, its first 8,192 octets decoded as UTF-8
        (a bad byte becomes U+FFFD), then a marker saying how many octets more there were.
    """

    kind: ClassVar[str] = "message.rejected"
    session_id: str
    message_id: str | None
    stage: str
    reply: str
    action: str
    deciding: str | None
    verdicts: list
    limit: str | None = None
    subject: str | None = None
    from_: str | None = None
    source: str | None = None

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "v": VERSION, "session_id": self.session_id, "message_id": self.message_id,
             "stage": self.stage, "reply": self.reply, "action": self.action}
        if self.limit is not None:
            d["limit"] = self.limit
        d["deciding"] = self.deciding
        d["verdicts"] = self.verdicts
        for key in ("subject", "from_", "source"):  # only a message refused at DATA has them
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d


@dataclass(frozen=True, slots=True)
class MessageDelivered(EventRecord):
    """A message is on disk (accepted, tagged or quarantined): a summary, never the message again.

    :param session_id: the session's id.
    :param message_id: the message's id.
    :param envelope: ``{id, mail_from, rcpt_tos, mail_params}`` (``envelope_summary``), strings clipped.
    :param action: ``accept``, ``tag`` or ``quarantine``.
    :param deciding: the check whose verdict decided a tag or quarantine; null when accepted.
    :param verdicts: every verdict of the message (its connect, HELO, MAIL FROM, RCPT TO and
        message stages), each ``{check, result, action}``; in full they are the ``verdict`` events.
    :param locations: ``[user, folder, key]`` of each stored copy (``_relay-hold`` for a relayed one).
    :param subject: the Subject header, clipped (null without one).
    :param from_: the From header, clipped (null without one).
    :param size: octets of the message as received.
    :param sha256: hex SHA-256 of the message as received.
    :param ending: the line ending the message used (``\\r\\n``, or a bare one).
    """

    kind: ClassVar[str] = "message.delivered"
    session_id: str
    message_id: str
    envelope: dict
    action: str
    deciding: str | None
    verdicts: list
    locations: list
    subject: str | None
    from_: str | None
    size: int
    sha256: str
    ending: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "v": VERSION, "session_id": self.session_id, "message_id": self.message_id,
                "envelope": self.envelope, "action": self.action, "deciding": self.deciding,
                "verdicts": self.verdicts, "locations": self.locations, "subject": self.subject,
                "from_": self.from_, "size": self.size, "sha256": self.sha256, "ending": self.ending}


@dataclass(frozen=True, slots=True)
class PolicyChanged(EventRecord):
    """The server switched policy; it applies to every message that starts from now on.

    :param name: the policy's name.
    :param description: the policy's description.
    """

    kind: ClassVar[str] = "policy.changed"
    name: str
    description: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "v": VERSION, "name": self.name, "description": self.description}


@dataclass(frozen=True, slots=True)
class MessageDeleted(EventRecord):
    """A trainer deleted a message from the web view: every stored copy of it is gone.

    :param message_id: the message's id.
    :param copies: ``[user, folder, key]`` of each copy removed (a copy already gone is not listed).
    """

    kind: ClassVar[str] = "message.deleted"
    message_id: str
    copies: list

    def to_dict(self) -> dict:
        return {"kind": self.kind, "v": VERSION, "message_id": self.message_id, "copies": self.copies}


@dataclass(frozen=True, slots=True)
class MessageReleased(EventRecord):
    """A trainer released a quarantined message from the web view: its copies moved to the inbox.

    :param message_id: the message's id.
    :param copies: ``[user, folder, key]`` of each copy moved, where it was (``quarantine``).
    :param locations: ``[user, folder, key]`` of every stored copy now (the moved ones in ``inbox``).
    """

    kind: ClassVar[str] = "message.released"
    message_id: str
    copies: list
    locations: list

    def to_dict(self) -> dict:
        return {"kind": self.kind, "v": VERSION, "message_id": self.message_id, "copies": self.copies,
                "locations": self.locations}


# -- serve --workers: the wire from a worker to the main process (never on the main bus) --

@dataclass(frozen=True, slots=True)
class WorkerReady(EventRecord):
    """A worker process listens.

    :param pid: the worker's process id.
    :param address: ``[host, port]`` it listens on.
    """

    kind: ClassVar[str] = "worker.ready"
    pid: int
    address: list

    def to_dict(self) -> dict:
        return {"kind": self.kind, "v": VERSION, "pid": self.pid, "address": self.address}


@dataclass(frozen=True, slots=True)
class WorkerFailed(EventRecord):
    """A worker process could not start.

    :param pid: the worker's process id.
    :param error: why, one line for the user.
    """

    kind: ClassVar[str] = "worker.failed"
    pid: int
    error: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "v": VERSION, "pid": self.pid, "error": self.error}


@dataclass(frozen=True, slots=True)
class WorkerPolicy(EventRecord):
    """A worker's answer to a policy switch: ``name`` when it switched, ``error`` when it could not.

    :param name: the policy now running (absent on an error).
    :param error: why the switch failed (absent when it succeeded).
    """

    kind: ClassVar[str] = "worker.policy"
    name: str | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "v": VERSION}
        if self.name is not None:
            d["name"] = self.name
        if self.error is not None:
            d["error"] = self.error
        return d


RECORDS: dict[str, type[EventRecord]] = {cls.kind: cls for cls in (
    SessionOpen, SessionLine, SessionTls, SessionAuth, SessionXclient, SessionClose, VerdictGiven,
    MessageRejected, MessageDelivered, MessageDeleted, MessageReleased, PolicyChanged, WorkerReady, WorkerFailed, WorkerPolicy)}
