"""Every POP3 sequencing rule in one table: state x command -> next state (RFC 1939 3-6).

A command missing from its state's row is answered -ERR and changes nothing. Where the
next state depends on the answer (a wrong password), a ``Step`` names both outcomes;
the connection moves when the server sends its reply. ``ONCE_PER_SESSION`` lists the
commands that may succeed only once (STLS), whatever the state.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    GREETING = "GREETING"                      # connected, banner not sent yet
    AUTHORIZATION = "AUTHORIZATION"            # who are you?
    AUTHORIZATION_PASS = "AUTHORIZATION_PASS"  # USER got +OK: PASS may follow
    TRANSACTION = "TRANSACTION"                # logged in, maildrop locked
    UPDATE = "UPDATE"                          # QUIT in TRANSACTION: deleting, reply pending
    CLOSED = "CLOSED"


@dataclass(frozen=True)
class Step:
    """Where a command leads: ``ok`` after +OK, ``err`` after -ERR, ``during`` while it runs."""

    ok: State
    err: State
    during: State | None = None


def _stay(state: State) -> Step:
    return Step(state, state)


AUTH, AUTH_PASS, TRANS, CLOSED = State.AUTHORIZATION, State.AUTHORIZATION_PASS, State.TRANSACTION, State.CLOSED

# The greeting is the server's first reply: +OK opens AUTHORIZATION, -ERR (server busy) closes.
GREETING = Step(ok=AUTH, err=CLOSED)

TABLE: dict[State, dict[str, Step]] = {
    State.GREETING: {},
    AUTH: {
        "USER": Step(ok=AUTH_PASS, err=AUTH),
        "APOP": Step(ok=TRANS, err=AUTH),
        "CAPA": _stay(AUTH),
        "STLS": _stay(AUTH),  # RFC 2595 4: only before logging in
        "QUIT": Step(ok=CLOSED, err=CLOSED),
    },
    AUTH_PASS: {
        "PASS": Step(ok=TRANS, err=AUTH),
        "USER": Step(ok=AUTH_PASS, err=AUTH),  # a second USER starts over
        "CAPA": _stay(AUTH_PASS),
        "STLS": Step(ok=AUTH, err=AUTH_PASS),  # the USER before it is forgotten
        "QUIT": Step(ok=CLOSED, err=CLOSED),
    },
    TRANS: {
        "STAT": _stay(TRANS),
        "LIST": _stay(TRANS),
        "RETR": _stay(TRANS),
        "DELE": _stay(TRANS),
        "NOOP": _stay(TRANS),
        "RSET": _stay(TRANS),
        "TOP": _stay(TRANS),
        "UIDL": _stay(TRANS),
        "CAPA": _stay(TRANS),
        # Only a QUIT here deletes anything (RFC 1939 6); the session ends either way.
        "QUIT": Step(ok=CLOSED, err=CLOSED, during=State.UPDATE),
    },
    State.UPDATE: {},
    CLOSED: {},
}


# Commands that succeed once per session; after +OK they are refused in any state.
ONCE_PER_SESSION: dict[str, str] = {"STLS": "TLS is already active"}
