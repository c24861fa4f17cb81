"""``SmtpPipeline``: one per SMTP session, ``handle(event) -> Reply``, one method per event.

In the flow (socket -> driver -> protocol core -> PIPELINE -> hooks -> policy -> outcome ->
store and events), the driver (``server/smtp_session.py``) hands each event the protocol core
(``forgelab/smtp``) parsed to ``handle``, and sends back the reply. A stage event (connect,
HELO/EHLO, MAIL FROM, RCPT TO, the message) runs its hooks (``stages``), folds the verdicts
with the policy (``decide``), publishes them and, when refused, the refusal; a message let
through is stored (``deliver``) before its 250. The other events (AUTH, STARTTLS, XCLIENT,
VRFY, RSET, ...) are answered here. Every reply is worded in ``replies``.
"""
from __future__ import annotations

import hashlib
import logging
from ipaddress import ip_address
from typing import Callable

from ..event_records import MessageDelivered, MessageRejected, SessionAuth, SessionXclient, VerdictGiven
from ..event_values import envelope_summary, source_kept, verdict_detail, verdict_summary
from ..delivery import folded_start
from ..events import bounded, clip
from ..message import parse_message
from ..message_limits import LimitExceeded, Limits
from ...store.nofollow import SymlinkRefused
from ..policy import Policy
from ..loopback import is_loopback
from ..networks import allows, parse_networks
from ..session import Envelope, Session
from ...protocols.smtp import Reply, events as ev, help_reply
from ...protocols.smtp.sasl import Challenge, SaslExchange, SaslProblem
from ...store import WriteSteps
from ...verdicts import Verdict
from . import replies
from .context import ServerContext
from .decide import Decision
from .deliver import PendingDelivery, added_headers, prepare_writes
from .stages import STAGE_HOOKS, call_each, first_reply, run_all, stage_verdicts

log = logging.getLogger("forgelab.core.pipeline")
XCLIENT_LAB_CLIENT = parse_networks(["127.0.0.1"], "")  # whom `xclient = true` lets in


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

    # -- hooks, policy, outcome ------------------------------------------------------
    def _call(self, hook_name: str, **kwargs):
        """Each implementation of a hook on its own (``stages.call_each``)."""
        return call_each(self.rules.pm, hook_name, kwargs)

    def _run_stage(self, stage: str, **kwargs) -> Decision:
        """A stage's hooks, their verdicts published, folded with the policy."""
        kwargs.setdefault("session", self.session)
        kwargs.setdefault("lab", self.lab)
        kwargs.setdefault("envelope", self.envelope)
        verdicts = stage_verdicts(self._call(STAGE_HOOKS[stage], **kwargs))
        message_id = self.envelope.id if self.envelope else None
        for verdict in verdicts:
            self.context.bus.publish(VerdictGiven(self.session.id, message_id, stage, verdict_detail(verdict),
                                                  self.policy.action_for(verdict)))
        return Decision.fold(verdicts, self.policy)

    def _refused(self, stage: str, decision: Decision, mail: dict | None = None) -> Reply | None:
        """The refusal when ``decision`` refuses (published, and told to the ``forgelab_rejected`` hooks);
        ``mail``: what the event keeps of a message refused at DATA (``_refused_mail``)."""
        if not decision.refused:
            return None
        reply = replies.refusal(stage, decision)
        self.context.bus.publish(MessageRejected(
            self.session.id, self.envelope.id if self.envelope else None, stage, str(reply), decision.action,
            decision.deciding_check, [verdict_summary(v) for v in decision.verdicts], **(mail or {})))
        run_all(self._call("forgelab_rejected", session=self.session, envelope=self.envelope, stage=stage,
                           reply=reply, verdicts=decision.verdicts, lab=self.lab))
        return reply

    # -- session -----------------------------------------------------------
    def connect(self) -> Reply:
        decision = self._run_stage("connect")
        refused = self._refused("connect", decision)
        if refused:
            return refused
        self.connect_verdicts = list(decision.verdicts)
        return replies.greeting(self.lab.hostname, self.policy.name)

    def handle(self, event) -> Reply:
        handler = getattr(self, f"on_{type(event).__name__.lower()}", None)
        if handler is None:
            return replies.NOT_IMPLEMENTED
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
        return self._refused("helo", decision) or replies.hello(self.lab.hostname, event.name, self.session.peer_ip)

    def on_ehlo(self, event: ev.Ehlo) -> Reply:
        decision = self._greet(event.name, esmtp=True)
        return self._refused("helo", decision) or replies.ehlo(
            self.lab.hostname, event.name, self.session.peer_ip, self.max_message_size,
            starttls=self.starttls_offered, auth=self.auth_allowed, xclient=self.xclient_allowed)

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
        return allows(self.policy.setting("xclient", True), self.session.real_peer_ip, XCLIENT_LAB_CLIENT)

    def _reset(self) -> None:
        self.envelope = None
        self.message_verdicts = []
        self.relay_recipients = []
        self.local_recipients = []

    def on_rset(self, event) -> Reply:
        self._reset()
        return replies.RESET_OK

    def on_noop(self, event) -> Reply:
        return replies.NOOP_OK

    def on_quit(self, event) -> Reply:
        return replies.closing(self.lab.hostname)

    def on_help(self, event: ev.Help) -> Reply:
        return help_reply(event.topic)

    def on_vrfy(self, event: ev.Vrfy) -> Reply:
        self.rules = self.context.rules
        reply = first_reply(self._call("forgelab_vrfy", session=self.session, argument=event.argument, lab=self.lab))
        return reply or replies.CANNOT_VRFY

    def on_expn(self, event: ev.Expn) -> Reply:
        self.rules = self.context.rules
        reply = first_reply(self._call("forgelab_expn", session=self.session, argument=event.argument, lab=self.lab))
        return reply or replies.NO_EXPN

    def on_xclient(self, event: ev.XClient) -> Reply:
        if not self.xclient_allowed:
            return replies.XCLIENT_REFUSED
        attrs = event.attributes
        if "ADDR" in attrs:
            try:
                self.session.peer_ip = str(ip_address(attrs["ADDR"].removeprefix("IPV6:")))
            except ValueError:
                return replies.xclient_bad_address(attrs["ADDR"])
        if "NAME" in attrs:
            self.session.peer_name = None if attrs["NAME"].upper() in ("[UNAVAILABLE]", "[TEMPUNAVAIL]") else attrs["NAME"]
        if "HELO" in attrs:
            self.session.helo = attrs["HELO"]
        self.session.xclient = True
        self._reset()
        self.context.bus.publish(SessionXclient(self.session.id, bounded(dict(attrs))))
        return replies.xclient_done(self.lab.hostname, self.session.peer_ip)

    # -- TLS and AUTH ------------------------------------------------------
    def on_starttls(self, event: ev.StartTls) -> Reply:
        if self.context.tls is None:
            return replies.NO_TLS
        # RFC 3207 4.2: forget everything the client said before the handshake.
        self.session.helo, self.session.esmtp, self.session.authenticated = None, False, None
        self._reset()
        return replies.START_TLS

    def on_auth(self, event: ev.Auth) -> Reply:
        if not self.auth_allowed:
            return replies.AUTH_NEEDS_TLS
        try:
            self.sasl = SaslExchange(event.mechanism)
            return self._auth_step(self.sasl.start(event.initial))
        except SaslProblem as problem:
            self.sasl = None
            return problem.reply

    def on_authresponse(self, event: ev.AuthResponse) -> Reply:
        if self.sasl is None:  # cannot happen with the core's table; answer safely anyway
            return replies.NO_AUTH_EXCHANGE
        try:
            return self._auth_step(self.sasl.respond(event.line))
        except SaslProblem as problem:
            self.sasl = None
            return problem.reply

    def _auth_step(self, step) -> Reply:
        if isinstance(step, Challenge):
            return replies.auth_challenge(step.text)
        mechanism, self.sasl = self.sasl.mechanism, None
        ip, throttle = self.session.real_peer_ip, self.context.login_throttle
        # The answer waits for this user's slot (the driver holds it back, so a reconnect gains nothing).
        wait = throttle.attempt(ip, step.username)
        if wait is None:
            return replies.TOO_MANY_LOGINS
        user = self.lab.directory.authenticate(step.username, step.password)
        if user is not None and step.authzid and step.authzid.lower() not in (step.username.lower(), user.name):
            user = None  # no proxy logins: one may only act as oneself
        self.context.bus.publish(SessionAuth(self.session.id, mechanism, step.username[:64],
                                             "pass" if user else "fail"))
        if user is None:
            self.reply_delay = wait + throttle.failure(ip, step.username)
            return replies.AUTH_INVALID
        throttle.success(ip, step.username)
        self.reply_delay = wait
        self.session.authenticated = user.name
        return replies.auth_ok(user.name)

    # -- transaction -------------------------------------------------------
    def on_mailfrom(self, event: ev.MailFrom) -> Reply:
        self.rules = self.context.rules  # a policy switch applies from the next message on
        if self.policy.setting("require_auth", False) and not self.session.authenticated:
            return replies.AUTH_REQUIRED
        size = event.params.get("SIZE")  # its syntax was checked by the core
        if size is not None and int(size) > self.max_message_size:
            return replies.too_big(size, self.max_message_size)
        self._reset()
        self.envelope = Envelope(mail_from=event.address, mail_params=dict(event.params))
        decision = self._run_stage("mail_from", address=event.address, params=dict(event.params))
        refused = self._refused("mail_from", decision)
        if refused:
            self.envelope = None
            return refused
        self.message_verdicts = list(decision.verdicts)
        return replies.sender_ok(event.address)

    def on_rcptto(self, event: ev.RcptTo) -> Reply:
        max_rcpt = int(self.policy.setting("max_recipients", 100))
        if len(self.envelope.rcpt_tos) >= max_rcpt:
            return replies.too_many_recipients(max_rcpt)
        directory = self.lab.directory
        address = event.address
        local = directory.local_part(address)
        members: list[str] = []
        if local is not None:
            members = directory.recipients(local)
            if members is None:
                return replies.no_such_user(address)
        decision = self._run_stage("rcpt_to", address=address)
        if local is None:
            decision = decision.never_relay(address)
        refused = self._refused("rcpt_to", decision)
        if refused:
            return refused
        self.envelope.rcpt_tos.append(address)
        self.message_verdicts.extend(decision.verdicts)
        if local is None:
            self.relay_recipients.append(address)
        else:
            self.local_recipients.extend(m for m in members if m not in self.local_recipients)
        return replies.recipient_ok(address, relayed=local is None)

    def on_data(self, event) -> Reply:
        return replies.START_DATA

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
            return self._refused_whole(over.reply, over.limit, _refused_mail(None, event.raw))
        if folded_start(event.raw) and self.policy.setting("header_start") == "strict":
            return self._refused_whole(replies.FOLDED_START, "header_start", _refused_mail(message, event.raw))
        decision = self._run_stage("message", message=message, raw=event.raw)
        every = self.connect_verdicts + self.helo_verdicts + self.message_verdicts + decision.verdicts
        total = Decision.fold(every, self.policy)
        refused = self._refused("message", total, _refused_mail(message, event.raw) if total.refused else None)
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

    def _prepare_writes(self, raw: bytes, message, verdicts: list[Verdict],
                        action: str) -> Callable[[], WriteSteps]:
        """The copies made, headers added (``deliver.prepare_writes``); returns their disk writes."""
        extra = added_headers(self._call("forgelab_add_headers", session=self.session, envelope=self.envelope,
                                         message=message, verdicts=verdicts, lab=self.lab))
        return prepare_writes(self.context.store, raw, self.session, self.envelope, self.lab, verdicts, extra,
                              action, list(self.local_recipients), bool(self.relay_recipients))

    def _refused_whole(self, reply: Reply, limit: str, mail: dict) -> Reply:
        """A message past one of the caps of message_limits, or malformed: refused whole, before any
        defence, nothing stored; ``limit`` is the policy key that refused it."""
        self.context.bus.publish(MessageRejected(self.session.id, self.envelope.id, "message", str(reply),
                                                 "reject", None, [], limit=limit, **mail))
        run_all(self._call("forgelab_rejected", session=self.session, envelope=self.envelope, stage="message",
                           reply=reply, verdicts=[], lab=self.lab))
        self._reset()
        return reply

    def _delivered(self, event: ev.Message, message, every: list[Verdict], total: Decision,
                   locations: list[tuple[str, str, str]] | None) -> Reply:
        envelope = self.envelope
        if locations is None:
            self._reset()
            return replies.NOT_STORED
        # A summary and where the message is, never the message again: the verdicts in full are
        # the ``verdict`` events before this one, the text is in the store (sha256: of what was received).
        self.context.bus.publish(MessageDelivered(
            self.session.id, envelope.id, envelope_summary(envelope), total.action, total.deciding_check,
            [verdict_summary(v) for v in every], [list(loc) for loc in locations],
            clip(_header(message, "Subject")), clip(_header(message, "From")), len(event.raw),
            hashlib.sha256(event.raw).hexdigest(), event.ending.decode("latin-1")))
        run_all(self._call("forgelab_delivered", session=self.session, envelope=envelope, message=message,
                           action=total.action, verdicts=every, locations=locations, lab=self.lab))
        self._reset()
        return replies.stored(envelope.id, total.action)


def _refused_mail(message, raw: bytes) -> dict:
    """What the ``message.rejected`` event keeps of a message refused at DATA, so the web view
    still shows it: its From and Subject (when it was parsed) and the start of its source."""
    return {"subject": clip(_header(message, "Subject")), "from_": clip(_header(message, "From")),
            "source": source_kept(raw)}


def _header(message, name: str) -> str | None:
    try:
        value = message.get(name)
        return None if value is None else str(value)
    except Exception:
        return None
