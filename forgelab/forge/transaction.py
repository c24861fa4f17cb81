"""One forged transaction driven to its end: MAIL, RCPT, DATA, lock-step or pipelined."""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .client import ForgeClient, ForgeError, Reply, WireEntry
from .wire import CRLF, END_OF_DATA

# Exit statuses of ``forgelab forge`` (and ForgeResult.exit_status).
EXIT_ACCEPTED = 0
EXIT_ERROR = 1      # could not connect, timed out, the server hung up, a local error
EXIT_REJECTED = 3   # a 5xx reply refused the message (at any stage)
EXIT_TEMPFAILED = 4  # a 4xx reply: try again later


@dataclass
class Transaction:
    """Everything one forged message needs. ``mail_from_arg``/``rcpt_args``, when given,
    are sent verbatim after ``MAIL FROM:``/``RCPT TO:`` (no brackets added)."""

    mail_from: str = ""
    rcpts: Sequence[str] = ()
    message: bytes = b""
    helo: str = "forge.forgelab"
    esmtp: bool = True
    xclient: str | None = None
    mail_params: str = ""
    mail_from_arg: str | None = None
    rcpt_args: Sequence[str] | None = None
    stuff: bool = True
    end: bytes = END_OF_DATA
    pipeline: bool = False
    auth: tuple[str, str] | None = None  # (user, password): AUTH PLAIN after the greeting

    def auth_line(self) -> bytes:
        user, password = self.auth
        token = base64.b64encode(f"\0{user}\0{password}".encode("utf-8")).decode()
        return f"AUTH PLAIN {token}".encode() + CRLF

    def mail_line(self) -> bytes:
        arg = self.mail_from_arg if self.mail_from_arg is not None else f"<{self.mail_from}>"
        return f"MAIL FROM:{arg}".encode("utf-8") + (f" {self.mail_params}".encode() if self.mail_params else b"") + CRLF

    def rcpt_lines(self) -> list[bytes]:
        args = self.rcpt_args if self.rcpt_args is not None else [f"<{r}>" for r in self.rcpts]
        return [f"RCPT TO:{a}".encode("utf-8") + CRLF for a in args]


@dataclass
class ForgeResult:
    """How the transaction ended: ``outcome`` is accepted, rejected, tempfailed or error."""

    outcome: str
    stage: str
    reply: Reply | None = None
    error: str | None = None
    transcript: list[WireEntry] = field(default_factory=list)
    extra_replies: list[Reply] = field(default_factory=list)
    local_address: tuple[str, int] | None = None

    @property
    def exit_status(self) -> int:
        return {"accepted": EXIT_ACCEPTED, "rejected": EXIT_REJECTED,
                "tempfailed": EXIT_TEMPFAILED}.get(self.outcome, EXIT_ERROR)


def _refused(stage: str, reply: Reply, client: ForgeClient) -> ForgeResult:
    outcome = "tempfailed" if 400 <= reply.code < 500 else "rejected"
    return ForgeResult(outcome, stage, reply, transcript=client.transcript)


def _greet(client: ForgeClient, tx: Transaction) -> Reply:
    return client.ehlo(tx.helo) if tx.esmtp else client.helo(tx.helo)


def _xclient_then_greet(client: ForgeClient, tx: Transaction) -> ForgeResult | None:
    """XCLIENT straight after the banner, then EHLO: a greeting sent first would be judged as
    coming from our real address (spf-helo fails the lab's names from 127.0.0.1). A server that
    wants EHLO before XCLIENT (Postfix answers 503) gets one first, and XCLIENT again."""
    reply = client.xclient(tx.xclient)
    if reply.code == 503:
        greet = _greet(client, tx)
        if not greet.positive:
            return _refused("helo", greet, client)
        reply = client.xclient(tx.xclient)
    if not reply.positive:
        return _refused("xclient", reply, client)
    greet = _greet(client, tx)
    return None if greet.positive else _refused("helo", greet, client)


def run_transaction(client: ForgeClient, tx: Transaction) -> ForgeResult:
    """Drive one transaction on a connected client (banner already read); QUIT at the end.

    With ``tx.xclient``: XCLIENT first, then EHLO/HELO (see :func:`_xclient_then_greet`)."""
    if tx.xclient:
        refused = _xclient_then_greet(client, tx)
        if refused is not None:
            return refused
    else:
        greet = _greet(client, tx)
        if not greet.positive:
            return _refused("helo", greet, client)
    if tx.auth:
        client.send_raw(tx.auth_line())
        reply = client.read_reply()
        if not reply.positive:
            return _refused("auth", reply, client)
    if tx.pipeline:
        result = _pipelined(client, tx)
    else:
        result = _lockstep(client, tx)
    replies = client.quit()
    result.extra_replies = [r for r in replies if r.code not in (221, 421)]
    result.transcript = client.transcript
    result.local_address = client.local_address
    return result


def _lockstep(client: ForgeClient, tx: Transaction) -> ForgeResult:
    client.send_raw(tx.mail_line())
    reply = client.read_reply()
    if not reply.positive:
        return _refused("mail_from", reply, client)
    accepted = 0
    last = reply
    for line in tx.rcpt_lines():
        client.send_raw(line)
        last = client.read_reply()
        accepted += last.positive
    if not accepted:
        return _refused("rcpt_to", last, client)
    first, final = client.data(tx.message, tx.stuff, tx.end)
    if final is None:
        return _refused("data", first, client)
    if not final.positive:
        return _refused("message", final, client)
    return ForgeResult("accepted", "message", final, transcript=client.transcript)


def _pipelined(client: ForgeClient, tx: Transaction) -> ForgeResult:
    """RFC 2920: MAIL, every RCPT and DATA in one write, then the replies in order."""
    rcpts = tx.rcpt_lines()
    client.send_raw(tx.mail_line() + b"".join(rcpts) + b"DATA" + CRLF)
    mail = client.read_reply()
    rcpt_replies = client.read_replies(len(rcpts))
    data = client.read_reply()
    if not mail.positive:
        return _refused("mail_from", mail, client)
    if not any(r.positive for r in rcpt_replies):
        return _refused("rcpt_to", rcpt_replies[-1] if rcpt_replies else data, client)
    if data.code != 354:
        return _refused("data", data, client)
    client.send_raw(ForgeClient.payload(tx.message, tx.stuff, tx.end))
    final = client.read_reply()
    if not final.positive:
        return _refused("message", final, client)
    return ForgeResult("accepted", "message", final, transcript=client.transcript)


def send(host: str, port: int, tx: Transaction, *, source_ip: str | None = None, timeout: float = 10.0,
         on_wire: Callable[[WireEntry], None] | None = None) -> ForgeResult:
    """Connect, run ``tx``, hang up. Never raises for network trouble: ``outcome="error"``."""
    client = ForgeClient(host, port, source_ip=source_ip, timeout=timeout, on_wire=on_wire)
    try:
        banner = client.connect()
        if not banner.positive:
            return _refused("connect", banner, client)
        return run_transaction(client, tx)
    except ForgeError as exc:
        return ForgeResult("error", "network", None, str(exc), client.transcript, local_address=client.local_address)
    finally:
        client.close()
