"""Every SMTP sequencing rule, in one table.

``TRANSITIONS[(state, event type)]`` is the state after a positive (2xx/3xx) reply
to that event. A pair missing from the table is out of sequence: ``503 5.5.1``.
After a negative reply the state stays, except that the end of a message (accepted
or not) always returns to READY. ``MessageText`` (a part of a big message) needs no reply
and moves no state. ``ONCE_PER_SESSION`` lists the commands that may
succeed only once (STARTTLS, AUTH), whatever the state.
"""
from __future__ import annotations

from enum import Enum

from . import events as ev


class State(Enum):
    GREETING = "greeting"  # banner sent, no HELO/EHLO yet
    READY = "ready"  # HELO/EHLO done, no transaction
    MAIL = "mail"  # MAIL FROM accepted, no recipient yet
    RCPT = "rcpt"  # at least one RCPT TO accepted
    DATA = "data"  # receiving message text
    AUTH = "auth"  # inside an AUTH exchange (334 challenges)
    CLOSED = "closed"


S = State
_ANYWHERE = (S.GREETING, S.READY, S.MAIL, S.RCPT)

TRANSITIONS: dict[tuple[State, type], State] = {
    # HELO/EHLO may come again at any time and reset the transaction (RFC 5321 4.1.4).
    **{(s, ev.Helo): S.READY for s in _ANYWHERE},
    **{(s, ev.Ehlo): S.READY for s in _ANYWHERE},
    (S.READY, ev.MailFrom): S.MAIL,
    (S.MAIL, ev.RcptTo): S.RCPT,
    (S.RCPT, ev.RcptTo): S.RCPT,
    (S.RCPT, ev.Data): S.DATA,
    (S.DATA, ev.Message): S.READY,
    # A MessageEnd (a spooled message) is answered as the Message it becomes
    # (SmtpConnection.spooled_message), or refused: never accepted as it is.
    # RSET clears the transaction but not the greeting.
    (S.GREETING, ev.Rset): S.GREETING,
    **{(s, ev.Rset): S.READY for s in (S.READY, S.MAIL, S.RCPT)},
    **{(s, ev.Noop): s for s in _ANYWHERE},
    **{(s, ev.Help): s for s in _ANYWHERE},
    **{(s, ev.Vrfy): s for s in _ANYWHERE},
    **{(s, ev.Expn): s for s in _ANYWHERE},
    **{(s, ev.Quit): S.CLOSED for s in _ANYWHERE},
    # XCLIENT and STARTTLS start over: the client must greet again.
    (S.GREETING, ev.XClient): S.GREETING,
    (S.READY, ev.XClient): S.GREETING,
    (S.READY, ev.StartTls): S.GREETING,
    (S.READY, ev.Auth): S.READY,
    (S.AUTH, ev.AuthResponse): S.READY,
}

# Commands that succeed once per session; after that they are out of sequence (503) whatever
# the state. STARTTLS starts the session over (RFC 3207 4.2), so a login may happen again.
ONCE_PER_SESSION: dict[type, str] = {
    ev.StartTls: "TLS is already active",
    ev.Auth: "Already authenticated: AUTH is once per session (RFC 4954 4)",
}
FORGETS = {ev.StartTls: (ev.Auth,)}

# States a negative reply leaves; everything else stays where it was.
AFTER_FAILURE: dict[type, State] = {
    ev.Message: S.READY,
    ev.MessageEnd: S.READY,
    ev.AuthResponse: S.READY,
    ev.Quit: S.CLOSED,
}


def next_state(state: State, event_type: type, positive: bool, intermediate: bool = False) -> State:
    if intermediate:  # 334 to AUTH: the exchange goes on
        return S.AUTH
    if positive:
        return TRANSITIONS[(state, event_type)]
    return AFTER_FAILURE.get(event_type, state)


def allowed(state: State, event_type: type) -> bool:
    return (state, event_type) in TRANSITIONS


def done_after(done: frozenset, event_type: type, positive: bool) -> frozenset:
    """The once-per-session commands that have succeeded, after a final reply to ``event_type``
    (an AUTH exchange ends with the reply to its last response)."""
    kind = ev.Auth if event_type is ev.AuthResponse else event_type
    if not positive or kind not in ONCE_PER_SESSION:
        return done
    return (done - set(FORGETS.get(kind, ()))) | {kind}
