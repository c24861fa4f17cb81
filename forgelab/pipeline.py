"""Turns SMTP events into hook calls, verdicts into replies, accepted mail into stored mail.

The only caller of the plugin hooks. Each hook implementation is called on its own,
so one defence that raises yields a ``temperror`` verdict for its check and every
other defence still runs.
"""
from __future__ import annotations

import hashlib
import logging
import ssl
import threading
from dataclasses import dataclass, field
from typing import Callable

import pluggy

from .events import EventBus, bounded, clip
from .lab import Lab
from .login_throttle import LoginThrottle
from .message import parse_message
from .message_limits import LimitExceeded, Limits
from .nofollow import SymlinkRefused
from .policy import Policy
from .registry import build_plugin_manager, plugin_name
from .server.base import is_loopback
from .session import Envelope, Session
from .smtp import Reply, events as ev, help_reply
from .smtp.sasl import Challenge, SaslExchange, SaslProblem
from .store import MailStore, WriteSteps
from .store.spool import Spool
from .verdicts import Verdict, collect, harshest

log = logging.getLogger(__name__)


STAGE_HOOKS = {
    "connect": "forgelab_connect",
    "helo": "forgelab_helo",
    "mail_from": "forgelab_mail_from",
    "rcpt_to": "forgelab_rcpt_to",
    "message": "forgelab_message",
}
# Rejections before DATA answer 550/451 for that command; after DATA for the message.
REJECT = {"connect": (554, "5.7.1"), "helo": (550, "5.7.1"), "mail_from": (550, "5.7.1"),
          "rcpt_to": (550, "5.7.1"), "message": (550, "5.7.1")}


@dataclass
class Rules:
    """A policy and the plugin manager built from it; swapped whole when the policy changes."""

    policy: Policy
    pm: pluggy.PluginManager
    plugins: tuple[str, ...] = ()

    @classmethod
    def build(cls, policy: Policy, plugins: tuple[str, ...]) -> "Rules":
        return cls(policy, build_plugin_manager(policy, plugins), tuple(plugins))


class ServerContext:
    """What every SMTP session shares: the lab, the store, the event bus, the current rules.

    ``tls`` is the server context STARTTLS uses (None: STARTTLS is not offered);
    ``login_throttle`` slows down repeated AUTH failures per user name (shared with POP3);
    ``spool`` keeps big messages' text while DATA goes on (default: ``spool`` beside the store).
    """

    def __init__(self, lab: Lab, store, bus: EventBus | None = None, policy: Policy | None = None,
                 plugins: tuple[str, ...] = (), tls: ssl.SSLContext | None = None, login_throttle=None,
                 spool: Spool | None = None):
        from .policy import load_policy

        self.lab = lab
        self.store = store
        self.bus = bus or EventBus()
        self.tls = tls
        self.login_throttle = login_throttle or LoginThrottle()
        self.spool = spool or Spool(store.root.parent / "spool")
        self._lock = threading.Lock()
        self.stopping = threading.Event()  # set when the server stops: ends throttle waits at once
        self._rules = Rules.build(policy or load_policy("observe"), plugins)

    @property
    def rules(self) -> Rules:
        with self._lock:
            return self._rules

    def set_policy(self, policy: Policy) -> None:
        """Switch policy for every message that starts from now on (plugins are rebuilt)."""
        rules = Rules.build(policy, self._rules.plugins)
        with self._lock:
            self._rules = rules
        self.bus.publish("policy.changed", name=policy.name, description=policy.description)


@dataclass
class Decision:
    action: str
    verdicts: list[Verdict] = field(default_factory=list)
    deciding: Verdict | None = None

    @classmethod
    def fold(cls, verdicts: list[Verdict], policy: Policy) -> "Decision":
        """The harshest action the policy gives any verdict, and the first verdict that got it."""
        decision = cls("accept", verdicts)
        for verdict in verdicts:
            action = policy.action_for(verdict)
            if harshest([action, decision.action]) != decision.action:
                decision.action, decision.deciding = action, verdict
        return decision


class SmtpPipeline:
    """One per SMTP session: ``handle(event) -> Reply``."""

    def __init__(self, context: ServerContext, session: Session):
        self.context = context
        self.session = session
        self.lab = context.lab
        self.rules = context.rules
        self.envelope: Envelope | None = None
        self.connect_verdicts: list[Verdict] = []
        self.helo_verdicts: list[Verdict] = []
        self.message_verdicts: list[Verdict] = []
        self.relay_recipients: list[str] = []
        self.local_recipients: list[str] = []  # user names, lists expanded
        self.sasl: SaslExchange | None = None
        # Seconds the driver waits before it sends the last reply (a throttled login); it resets it.
        self.reply_delay = 0.0

    @property
    def policy(self) -> Policy:
        return self.rules.policy

    # -- hooks -------------------------------------------------------------
    def _call(self, hook_name: str, **kwargs):
        """Each implementation of a hook on its own, in pluggy's order (tryfirst/trylast honoured):
        yields (plugin name, returned value, exception or None). One plugin that raises never
        stops the others, nor the session."""
        hook = getattr(self.rules.pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):
            name = plugin_name(self.rules.pm, impl.plugin)
            try:
                yield name, impl.function(*[kwargs[arg] for arg in impl.argnames]), None
            except Exception as exc:
                log.exception("plugin %s failed in %s", name, hook_name)
                yield name, None, exc

    def _run_stage(self, stage: str, **kwargs) -> Decision:
        kwargs.setdefault("session", self.session)
        kwargs.setdefault("lab", self.lab)
        kwargs.setdefault("envelope", self.envelope)
        verdicts: list[Verdict] = []
        for name, returned, exc in self._call(STAGE_HOOKS[stage], **kwargs):
            if exc is not None:
                verdicts.append(Verdict(name, "temperror", f"the {name} defence failed: {type(exc).__name__}: {exc}"))
                continue
            try:
                verdicts.extend(collect([returned]))
            except TypeError as bad:  # a plugin returned something that is not a Verdict
                verdicts.append(Verdict(name, "temperror", f"the {name} defence returned nonsense: {bad}"))
        return self._decide(stage, verdicts)

    def _notify(self, hook_name: str, **kwargs) -> None:
        for _ in self._call(hook_name, **kwargs):
            pass

    def _first_reply(self, hook_name: str, **kwargs) -> Reply | None:
        for _, returned, _ in self._call(hook_name, **kwargs):
            if returned is not None:
                return returned
        return None

    def _decide(self, stage: str, verdicts: list[Verdict]) -> Decision:
        for verdict in verdicts:
            self.context.bus.publish("verdict", session_id=self.session.id,
                                     message_id=self.envelope.id if self.envelope else None,
                                     stage=stage, verdict=_verdict_record(verdict), action=self.policy.action_for(verdict))
        return Decision.fold(verdicts, self.policy)

    def _refusal(self, stage: str, decision: Decision) -> Reply:
        verdict = decision.deciding
        text = f"[{verdict.check}] {clip(verdict.reason or verdict.result, MAX_REPLY_TEXT)}"
        if decision.action == "tempfail":
            enhanced = "4.3.0" if verdict.result == "temperror" else "4.7.1"
            return Reply(421 if stage == "connect" else 451, enhanced, text)
        code, enhanced = REJECT[stage]
        return Reply(code, enhanced, text)

    def _refused(self, stage: str, decision: Decision) -> Reply | None:
        if decision.action not in ("reject", "tempfail"):
            return None
        reply = self._refusal(stage, decision)
        self.context.bus.publish("message.rejected", session_id=self.session.id,
                                 message_id=self.envelope.id if self.envelope else None,
                                 stage=stage, reply=clip(str(reply)), action=decision.action,
                                 verdicts=[_summary(v) for v in decision.verdicts])
        self._notify("forgelab_rejected", session=self.session, envelope=self.envelope, stage=stage,
                                             reply=reply, verdicts=decision.verdicts, lab=self.lab)
        return reply

    # -- session -----------------------------------------------------------
    def connect(self) -> Reply:
        decision = self._run_stage("connect")
        refused = self._refused("connect", decision)
        if refused:
            return refused
        self.connect_verdicts = list(decision.verdicts)
        return Reply(220, None, f"{self.lab.hostname} ESMTP forgelab lab server, policy {self.policy.name}; mail stays on this machine")

    def handle(self, event) -> Reply:
        handler = getattr(self, f"on_{type(event).__name__.lower()}", None)
        if handler is None:
            return Reply(502, "5.5.1", "Command not implemented")
        return handler(event)

    def on_commanderror(self, event: ev.CommandError) -> Reply:
        return event.reply

    def _greet(self, name: str, esmtp: bool) -> Decision:
        self.rules = self.context.rules  # a policy switch applies from the next greeting on
        self.session.helo = name
        self.session.esmtp = esmtp
        self._reset()
        decision = self._run_stage("helo", helo=name)
        self.helo_verdicts = list(decision.verdicts)
        return decision

    def on_helo(self, event: ev.Helo) -> Reply:
        decision = self._greet(event.name, esmtp=False)
        return self._refused("helo", decision) or Reply(250, None, f"{self.lab.hostname} Hello {event.name} [{self.session.peer_ip}]")

    def on_ehlo(self, event: ev.Ehlo) -> Reply:
        decision = self._greet(event.name, esmtp=True)
        refused = self._refused("helo", decision)
        if refused:
            return refused
        lines = [f"{self.lab.hostname} Hello {event.name} [{self.session.peer_ip}]", "PIPELINING",
                 f"SIZE {self.max_message_size}", "8BITMIME", "ENHANCEDSTATUSCODES", "HELP"]
        if self.starttls_offered:
            lines.append("STARTTLS")
        if self.auth_allowed:
            lines.append("AUTH PLAIN LOGIN")
        if self.xclient_allowed:
            lines.append("XCLIENT ADDR NAME HELO")
        return Reply(250, None, lines)

    @property
    def starttls_offered(self) -> bool:
        return self.context.tls is not None and not self.session.tls

    @property
    def auth_allowed(self) -> bool:
        """AUTH sends passwords: only inside TLS, or in plain text from this machine (RFC 4954 4)."""
        return self.session.tls or is_loopback(self.session.real_peer_ip)

    @property
    def max_message_size(self) -> int:
        return int(self.policy.setting("max_message_size", 10 * 1024 * 1024))

    @property
    def xclient_allowed(self) -> bool:
        return bool(self.policy.setting("xclient", True)) and self.session.real_peer_ip == "127.0.0.1"

    def _reset(self) -> None:
        self.envelope = None
        self.message_verdicts = []
        self.relay_recipients = []
        self.local_recipients = []

    def on_rset(self, event) -> Reply:
        self._reset()
        return Reply(250, "2.0.0", "Reset OK")

    def on_noop(self, event) -> Reply:
        return Reply(250, "2.0.0", "OK")

    def on_quit(self, event) -> Reply:
        return Reply(221, "2.0.0", f"{self.lab.hostname} closing connection")

    def on_help(self, event: ev.Help) -> Reply:
        return help_reply(event.topic)

    def on_vrfy(self, event: ev.Vrfy) -> Reply:
        self.rules = self.context.rules
        reply = self._first_reply("forgelab_vrfy", session=self.session, argument=event.argument, lab=self.lab)
        return reply or Reply(252, "2.5.0", "Cannot VRFY user, but will accept the message and try")

    def on_expn(self, event: ev.Expn) -> Reply:
        self.rules = self.context.rules
        reply = self._first_reply("forgelab_expn", session=self.session, argument=event.argument, lab=self.lab)
        return reply or Reply(502, "5.5.1", "EXPN is not available")

    def on_xclient(self, event: ev.XClient) -> Reply:
        if not self.xclient_allowed:
            return Reply(550, "5.7.0", "XCLIENT is allowed only from 127.0.0.1 in lab mode")
        attrs = event.attributes
        if "ADDR" in attrs:
            from ipaddress import ip_address
            try:
                self.session.peer_ip = str(ip_address(attrs["ADDR"].removeprefix("IPV6:")))
            except ValueError:
                return Reply(501, "5.5.4", f"XCLIENT ADDR is not an IP address: {attrs['ADDR'][:60]}")
        if "NAME" in attrs:
            self.session.peer_name = None if attrs["NAME"].upper() in ("[UNAVAILABLE]", "[TEMPUNAVAIL]") else attrs["NAME"]
        if "HELO" in attrs:
            self.session.helo = attrs["HELO"]
        self.session.xclient = True
        self._reset()
        self.context.bus.publish("session.xclient", session_id=self.session.id, attributes=bounded(dict(attrs)))
        return Reply(220, None, f"{self.lab.hostname} ESMTP forgelab; you are now {self.session.peer_ip}, say EHLO again")

    # -- TLS and AUTH ------------------------------------------------------
    def on_starttls(self, event: ev.StartTls) -> Reply:
        if self.context.tls is None:
            return Reply(454, "4.7.0", "TLS not available: this server has no certificate")
        # RFC 3207 4.2: forget everything the client said before the handshake.
        self.session.helo, self.session.esmtp, self.session.authenticated = None, False, None
        self._reset()
        return Reply(220, "2.0.0", "Ready to start TLS; say EHLO again afterwards")

    def on_auth(self, event: ev.Auth) -> Reply:
        if not self.auth_allowed:
            return Reply(538, "5.7.11", "Encryption required for requested authentication mechanism: use STARTTLS first")
        try:
            self.sasl = SaslExchange(event.mechanism)
            return self._auth_step(self.sasl.start(event.initial))
        except SaslProblem as problem:
            self.sasl = None
            return problem.reply

    def on_authresponse(self, event: ev.AuthResponse) -> Reply:
        if self.sasl is None:  # cannot happen with the core's table; answer safely anyway
            return Reply(503, "5.5.1", "No AUTH exchange in progress")
        try:
            return self._auth_step(self.sasl.respond(event.line))
        except SaslProblem as problem:
            self.sasl = None
            return problem.reply

    def _auth_step(self, step) -> Reply:
        if isinstance(step, Challenge):
            return Reply(334, None, step.text)
        mechanism, self.sasl = self.sasl.mechanism, None
        ip, throttle = self.session.real_peer_ip, self.context.login_throttle
        # The answer waits for this user's slot (the driver holds it back, so a reconnect gains nothing).
        wait = throttle.attempt(ip, step.username)
        if wait is None:
            return Reply(454, "4.7.0", "Too many failed logins; try again later")
        user = self.lab.directory.authenticate(step.username, step.password)
        if user is not None and step.authzid and step.authzid.lower() not in (step.username.lower(), user.name):
            user = None  # no proxy logins: one may only act as oneself
        self.context.bus.publish("session.auth", session_id=self.session.id, mechanism=mechanism,
                                 username=step.username[:64], result="pass" if user else "fail")
        if user is None:
            self.reply_delay = wait + throttle.failure(ip, step.username)
            return Reply(535, "5.7.8", "Authentication credentials invalid")
        throttle.success(ip, step.username)
        self.reply_delay = wait
        self.session.authenticated = user.name
        return Reply(235, "2.7.0", f"Authentication successful: you are {user.name}")

    # -- transaction -------------------------------------------------------
    def on_mailfrom(self, event: ev.MailFrom) -> Reply:
        self.rules = self.context.rules  # a policy switch applies from the next message on
        if self.policy.setting("require_auth", False) and not self.session.authenticated:
            return Reply(530, "5.7.0", "Authentication required: this is a submission server, log in with AUTH first")
        size = event.params.get("SIZE")  # its syntax was checked by the core
        if size is not None and int(size) > self.max_message_size:
            return Reply(552, "5.3.4", f"Message too big: {size} octets; the limit is {self.max_message_size}")
        self._reset()
        self.envelope = Envelope(mail_from=event.address, mail_params=dict(event.params))
        decision = self._run_stage("mail_from", address=event.address, params=dict(event.params))
        refused = self._refused("mail_from", decision)
        if refused:
            self.envelope = None
            return refused
        self.message_verdicts = list(decision.verdicts)
        sender = f"<{event.address}>" if event.address else "<> (the null sender)"
        return Reply(250, "2.1.0", f"Sender {sender} OK")

    def on_rcptto(self, event: ev.RcptTo) -> Reply:
        max_rcpt = int(self.policy.setting("max_recipients", 100))
        if len(self.envelope.rcpt_tos) >= max_rcpt:
            return Reply(452, "4.5.3", f"Too many recipients (the limit is {max_rcpt})")
        directory = self.lab.directory
        address = event.address
        local = directory.local_part(address)
        members: list[str] = []
        if local is not None:
            members = directory.recipients(local)
            if members is None:
                return Reply(550, "5.1.1", f"No such user here: <{address}>")
        decision = self._run_stage("rcpt_to", address=address)
        if local is None and not any(v.check == "relay" for v in decision.verdicts):
            # No relay defence loaded: still never an open relay.
            denied = Verdict("relay", "fail", f"relay denied: {address} is not local")
            decision = Decision("reject", decision.verdicts + [denied], denied)
        refused = self._refused("rcpt_to", decision)
        if refused:
            return refused
        self.envelope.rcpt_tos.append(address)
        self.message_verdicts.extend(decision.verdicts)
        if local is None:
            self.relay_recipients.append(address)
            return Reply(250, "2.1.5", f"Recipient <{address}> OK: held here (an open relay would send it on; forgelab never does)")
        self.local_recipients.extend(m for m in members if m not in self.local_recipients)
        return Reply(250, "2.1.5", f"Recipient <{address}> OK")

    def on_data(self, event) -> Reply:
        return Reply(354, None, "Start mail input; end with <CRLF>.<CRLF>")

    def on_message(self, event: ev.Message) -> Reply:
        outcome = self.check_message(event)
        if isinstance(outcome, Reply):
            return outcome
        outcome.write()
        return outcome.finish()

    def check_message(self, event: ev.Message) -> Reply | PendingDelivery:
        """Run the message hooks: the refusal, or the delivery still to make.

        The selector driver runs the delivery's disk writes on another thread, so its
        fsyncs do not stop the loop; everything else stays on the session's thread.
        """
        envelope = self.envelope
        envelope.data_as_sent = event.wire or event.raw
        try:  # the caps protect the server, so they hold under every policy, before any defence
            message = parse_message(event.raw, Limits.from_policy(self.policy))
        except LimitExceeded as over:
            return self._over_limit(over)
        decision = self._run_stage("message", message=message, raw=event.raw)
        verdicts = self.message_verdicts + decision.verdicts
        every = self.connect_verdicts + self.helo_verdicts + verdicts
        total = Decision.fold(every, self.policy)
        refused = self._refused("message", total)
        if refused:
            self._reset()
            return refused
        try:
            write = self._prepare_writes(event.raw, message, every, total.action)
        except SymlinkRefused:  # already logged, with its path, by nofollow
            write = None
        except Exception:
            log.exception("delivery failed")
            write = None
        return PendingDelivery(self.context.store, write,
                               lambda locations: self._delivered(event, message, every, total, locations))

    def _over_limit(self, over: LimitExceeded) -> Reply:
        """A message past one of the caps of message_limits: refused whole, nothing stored."""
        self.context.bus.publish("message.rejected", session_id=self.session.id, message_id=self.envelope.id,
                                 stage="message", reply=str(over.reply), action="reject", limit=over.limit, verdicts=[])
        self._notify("forgelab_rejected", session=self.session, envelope=self.envelope, stage="message",
                     reply=over.reply, verdicts=[], lab=self.lab)
        self._reset()
        return over.reply

    def _delivered(self, event: ev.Message, message, every: list[Verdict], total: Decision,
                   locations: list[tuple[str, str, str]] | None) -> Reply:
        envelope = self.envelope
        if locations is None:
            self._reset()
            return Reply(451, "4.3.0", "Local error in processing: the message was not stored; try again")
        # A summary and where the message is, never the message again: the verdicts in full are
        # the ``verdict`` events before this one, the text is in the store (sha256: of what was received).
        self.context.bus.publish(
            "message.delivered", session_id=self.session.id, message_id=envelope.id,
            envelope=_envelope_record(envelope), action=total.action,
            verdicts=[_summary(v) for v in every], locations=[list(loc) for loc in locations],
            subject=clip(_header(message, "Subject")), from_=clip(_header(message, "From")), size=len(event.raw),
            sha256=hashlib.sha256(event.raw).hexdigest(), ending=event.ending.decode("latin-1"))
        self._notify("forgelab_delivered", session=self.session, envelope=envelope, message=message,
                                              action=total.action, verdicts=every, locations=locations, lab=self.lab)
        self._reset()
        where = "quarantined" if total.action == "quarantine" else "queued"
        return Reply(250, "2.0.0", f"OK: {where} as {envelope.id}" + (" (tagged)" if total.action == "tag" else ""))

    def _prepare_writes(self, raw: bytes, message, verdicts: list[Verdict],
                        action: str) -> Callable[[], WriteSteps]:
        """The stored copies made (add_headers hooks, trace headers); returns the disk writes
        (as the store's steps), which touch only the store and may run on any thread: they
        end with (user, folder, key) of each copy."""
        from .delivery import prepare_for_delivery

        extra = []
        for name, returned, _ in self._call("forgelab_add_headers", session=self.session, envelope=self.envelope,
                                            message=message, verdicts=verdicts, lab=self.lab):
            for item in returned or []:
                if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
                    extra.append(tuple(item))
                else:  # a plugin's mistake must not cost the message
                    log.warning("plugin %s: forgelab_add_headers gave %r, not a (name, value) pair", name, item)
        store = self.context.store
        folder = "quarantine" if action == "quarantine" else "inbox"
        users = list(self.local_recipients)
        relayed = bool(self.relay_recipients)
        # As Postfix: "for <rcpt>" only with one local recipient; every other copy is the same bytes.
        shared = own = None
        if len(users) > 1 or relayed:
            shared = prepare_for_delivery(raw, self.session, self.envelope, self.lab, verdicts, extra)
        if len(users) == 1:
            own = prepare_for_delivery(raw, self.session, self.envelope, self.lab, verdicts, extra, for_rcpt=users[0])

        def write() -> WriteSteps:
            locations = []
            if own is not None:
                locations.append((users[0], folder, (yield from store.delivering(users[0], own, folder))))
            elif users:
                keys = yield from store.delivering_many(users, shared, folder)
                locations.extend((user, folder, key) for user, key in zip(users, keys))
            if relayed:
                locations.append(("_relay-hold", "inbox", (yield from store.holding_relay(shared))))
            return locations

        return write


class PendingDelivery:
    """A message its verdicts let through, its copies made: ``write()`` stores them (the disk
    writes and fsyncs; any thread), then ``finish()`` says so (event, hooks, the reply; on the
    session's thread). ``write`` None: making the copies failed, and ``finish()`` says 451.
    ``write_together`` stores several at once, their fsyncs shared (``MailStore.run_together``)."""

    def __init__(self, store: MailStore, write: Callable[[], WriteSteps] | None,
                 finish: Callable[[list | None], Reply]):
        self._store, self._write, self._finish = store, write, finish
        self.locations: list | None = None

    def write(self) -> None:
        self.write_together([self])

    @staticmethod
    def write_together(deliveries: list["PendingDelivery"]) -> None:
        """Deliveries of one server (so of one store)."""
        deliveries = [d for d in deliveries if d._write is not None]
        if not deliveries:
            return
        results = deliveries[0]._store.run_together([d._write() for d in deliveries])
        for delivery, result in zip(deliveries, results):
            if isinstance(result, BaseException):
                if not isinstance(result, SymlinkRefused):  # that one is logged, with its path, by nofollow
                    log.error("delivery failed", exc_info=result)
            else:
                delivery.locations = result

    def finish(self) -> Reply:
        return self._finish(self.locations)


MAX_REPLY_TEXT = 400  # characters of a verdict's reason put in a refusal (RFC 5321 4.5.3.1.5: 512-octet reply lines)


def _verdict_record(verdict: Verdict) -> dict:
    """A verdict for its event, bounded; without what the stored message or the event already
    holds: the parts of its Authentication-Results header, a copy of its reason."""
    record = verdict.as_dict()
    record["details"] = {k: v for k, v in record["details"].items()
                         if k != "authres" and not (k == "reason" and v == verdict.reason)}
    return bounded(record)


def _summary(verdict: Verdict) -> dict:
    """A verdict as message.delivered and message.rejected list it: the ``verdict`` events give the rest."""
    return {"check": verdict.check, "result": verdict.result, "action": verdict.action}


def _envelope_record(envelope: Envelope) -> dict:
    """The envelope for an event: every recipient (the policy caps how many), each string clipped."""
    return {"id": envelope.id, "mail_from": clip(envelope.mail_from, 512),
            "rcpt_tos": [clip(r, 512) for r in envelope.rcpt_tos], "mail_params": bounded(dict(envelope.mail_params))}


def _header(message, name: str) -> str | None:
    try:
        value = message.get(name)
        return None if value is None else str(value)
    except Exception:
        return None
