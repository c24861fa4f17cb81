"""Every reply the pipeline words, by name: constants for fixed ones, a function where text varies.

In the flow (... -> policy -> OUTCOME -> store and events), a reply is what the client reads
of the outcome. A refusal names the check that decided it and why (``550 5.7.1 [spf] ...``),
then each other failing check on a line of its own, ranked (``Decision.ranked``); the protocol
core's own replies (syntax, sequence) live in ``forgelab/protocols/smtp/replies.py``, which
also makes every line 7-bit and at most 512 octets.
"""
from __future__ import annotations

from ...protocols.smtp import Reply
from .decide import Decision

MAX_REFUSAL_LINES = 10  # lines of a refusal; the checks past them are counted on the last

# Rejections before DATA answer 550/451 for that command; after DATA for the message.
REJECT = {"connect": (554, "5.7.1"), "helo": (550, "5.7.1"), "mail_from": (550, "5.7.1"),
          "rcpt_to": (550, "5.7.1"), "message": (550, "5.7.1")}

NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
RESET_OK = Reply(250, "2.0.0", "Reset OK")
NOOP_OK = Reply(250, "2.0.0", "OK")
START_DATA = Reply(354, None, "Start mail input; end with <CRLF>.<CRLF>")
CANNOT_VRFY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept the message and try")
NO_EXPN = Reply(502, "5.5.1", "EXPN is not available")
XCLIENT_REFUSED = Reply(550, "5.7.0", "XCLIENT is allowed only from 127.0.0.1 in lab mode")
NO_TLS = Reply(454, "4.7.0", "TLS not available: this server has no certificate")
START_TLS = Reply(220, "2.0.0", "Ready to start TLS; say EHLO again afterwards")
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism: use STARTTLS first")
NO_AUTH_EXCHANGE = Reply(503, "5.5.1", "No AUTH exchange in progress")
TOO_MANY_LOGINS = Reply(454, "4.7.0", "Too many failed logins; try again later")
AUTH_INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required: this is a submission server, log in with AUTH first")
NOT_STORED = Reply(451, "4.3.0", "Local error in processing: the message was not stored; try again")


FOLDED_START = Reply(554, "5.6.0", "Malformed header: its first line starts with whitespace, a fold with no field "
                     "to continue; some programs drop it, others read it as a field, and a header added above it "
                     "would swallow it (this policy refuses it: header_start = strict)")


def greeting(hostname: str, policy: str) -> Reply:
    return Reply(220, None, f"{hostname} ESMTP forgelab lab server, policy {policy}; mail stays on this machine")


def closing(hostname: str) -> Reply:
    return Reply(221, "2.0.0", f"{hostname} closing connection")


def hello(hostname: str, name: str, peer_ip: str) -> Reply:
    return Reply(250, None, f"{hostname} Hello {name} [{peer_ip}]")


def ehlo(hostname: str, name: str, peer_ip: str, max_size: int, *, starttls: bool, auth: bool,
         xclient: bool) -> Reply:
    """The EHLO reply: the greeting line, then every extension offered to this client."""
    lines = [f"{hostname} Hello {name} [{peer_ip}]", "PIPELINING", f"SIZE {max_size}", "8BITMIME",
             "ENHANCEDSTATUSCODES", "HELP"]
    if starttls:
        lines.append("STARTTLS")
    if auth:
        lines.append("AUTH PLAIN LOGIN")
    if xclient:
        lines.append("XCLIENT ADDR NAME HELO")
    return Reply(250, None, lines)


def xclient_bad_address(given: str) -> Reply:
    return Reply(501, "5.5.4", f"XCLIENT ADDR is not an IP address: {given[:60]}")


def xclient_done(hostname: str, peer_ip: str) -> Reply:
    return Reply(220, None, f"{hostname} ESMTP forgelab; you are now {peer_ip}, say EHLO again")


def auth_challenge(text: str) -> Reply:
    return Reply(334, None, text)


def auth_ok(user: str) -> Reply:
    return Reply(235, "2.7.0", f"Authentication successful: you are {user}")


def too_big(size, limit: int) -> Reply:
    return Reply(552, "5.3.4", f"Message too big: {size} octets; the limit is {limit}")


def sender_ok(address: str) -> Reply:
    sender = f"<{address}>" if address else "<> (the null sender)"
    return Reply(250, "2.1.0", f"Sender {sender} OK")


def too_many_recipients(limit: int) -> Reply:
    return Reply(452, "4.5.3", f"Too many recipients (the limit is {limit})")


def no_such_user(address: str) -> Reply:
    return Reply(550, "5.1.1", f"No such user here: <{address}>")


def recipient_ok(address: str, relayed: bool) -> Reply:
    if relayed:
        return Reply(250, "2.1.5", f"Recipient <{address}> OK: held here (an open relay would send it on; forgelab never does)")
    return Reply(250, "2.1.5", f"Recipient <{address}> OK")


def stored(message_id: str, action: str) -> Reply:
    """The 250 after DATA: the message is on disk (in quarantine, or tagged, if the policy said so)."""
    where = "quarantined" if action == "quarantine" else "queued"
    return Reply(250, "2.0.0", f"OK: {where} as {message_id}" + (" (tagged)" if action == "tag" else ""))


def refusal(stage: str, decision: Decision) -> Reply:
    """A refusal names the check that decided it and its reason first (``550 5.7.1 [spf] ...``),
    then the other failing checks, ranked, one a line, no reason twice (``refusal_lines``);
    a tempfail is 451 (421 at connect), 4.3.0 when a defence itself failed."""
    verdict = decision.deciding
    text = refusal_lines(decision)
    if decision.action == "tempfail":
        enhanced = "4.3.0" if verdict.result == "temperror" else "4.7.1"
        return Reply(421 if stage == "connect" else 451, enhanced, text)
    code, enhanced = REJECT[stage]
    return Reply(code, enhanced, text)


def refusal_lines(decision: Decision) -> list[str]:
    """``[check] reason`` for the deciding verdict, then for each other failing one, ranked;
    checks that gave the same reason share its line (``[dkim, arc] ...``); at most
    ``MAX_REFUSAL_LINES``, the last counting the rest."""
    ranked = [decision.deciding] + [v for v in decision.ranked if v is not decision.deciding]
    reasons: dict[str, list[str]] = {}  # reason -> the checks that gave it, in rank order
    for verdict in ranked:
        checks = reasons.setdefault(verdict.reason or verdict.result, [])
        if verdict.check not in checks:
            checks.append(verdict.check)
    lines = [f"[{', '.join(checks)}] {reason}" for reason, checks in reasons.items()]
    if len(lines) > MAX_REFUSAL_LINES:
        more = len(lines) - MAX_REFUSAL_LINES + 1
        lines = lines[:MAX_REFUSAL_LINES - 1] + [f"... and {more} more failing checks (the web view lists every verdict)"]
    return lines
