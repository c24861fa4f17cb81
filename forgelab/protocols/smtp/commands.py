"""The SMTP commands forgelab understands: syntax (drives HELP) and argument parsing."""
from __future__ import annotations

import re

from . import events as ev
from .replies import Reply

# verb -> (syntax shown by HELP, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "HELO": ("HELO <hostname>", "introduce yourself"),
    "EHLO": ("EHLO <hostname>", "introduce yourself and ask for the extensions"),
    "MAIL": ("MAIL FROM:<sender> [SIZE=<n>] [BODY=8BITMIME]", "start a message; <> is the null sender"),
    "RCPT": ("RCPT TO:<recipient>", "add a recipient; repeat for more"),
    "DATA": ("DATA", "send the message, end it with a line holding only a dot"),
    "RSET": ("RSET", "forget the current message"),
    "NOOP": ("NOOP", "do nothing"),
    "QUIT": ("QUIT", "close the session"),
    "HELP": ("HELP [<command>]", "this help"),
    "VRFY": ("VRFY <user>", "check whether a user exists"),
    "EXPN": ("EXPN <list>", "expand a mailing list"),
    "XCLIENT": ("XCLIENT ADDR=<ip> [NAME=<name>] [HELO=<name>]", "lab only, from 127.0.0.1: pretend to be another client"),
    "STARTTLS": ("STARTTLS", "switch to TLS"),
    "AUTH": ("AUTH <mechanism> [<initial response>]", "log in (PLAIN, LOGIN)"),
}


class SyntaxProblem(ValueError):
    def __init__(self, reply: Reply):
        super().__init__(reply.text)
        self.reply = reply


def _syntax(text: str, enhanced: str = "5.5.4") -> SyntaxProblem:
    return SyntaxProblem(Reply(501, enhanced, text))


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_STRING = rf"{_ATOM}(?:\.{_ATOM})*"
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*\.?"
_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"
MAILBOX_RE = re.compile(rf"^(?:{_DOT_STRING}|{_QUOTED})@(?:{_DOMAIN}|{_LITERAL})$")
_PARAM_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e]+))?$")


def parse_path(rest: str, keyword: str, allow_null: bool, strict: bool) -> tuple[str, dict, str]:
    """Parse ``FROM:<path> params`` (or ``TO:``) into (address, params, route).

    Accepts the worksheet's spelling without a colon (``MAIL FROM <>``) and a bare
    address without angle brackets, as many servers do.
    """
    m = re.match(rf"^{keyword}\s*:?\s*", rest, re.IGNORECASE)
    if not m:
        raise _syntax(f"Syntax: {COMMANDS['MAIL' if keyword == 'FROM' else 'RCPT'][0]}")
    rest = rest[m.end():]
    if rest.startswith("<"):
        end = _closing_bracket(rest)
        if end < 0:
            raise _syntax("Syntax error: the address has no closing '>'", "5.1.7" if keyword == "FROM" else "5.1.3")
        path, tail = rest[1:end], rest[end + 1:]
    else:
        path, _, tail = rest.partition(" ")
    route = ""
    if path.startswith("@"):  # obsolete source route: @a,@b:user@c (RFC 5321 4.1.2, ignored)
        route, colon, path = path.partition(":")
        if not colon:
            raise _syntax("Syntax error in the source route")
    code = "5.1.7" if keyword == "FROM" else "5.1.3"
    if not path:
        if allow_null and not route:
            return "", _params(tail), ""
        raise _syntax("A recipient address is required" if keyword == "TO" else "Syntax error in the address", code)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path) or " " in path and not path.startswith('"'):
        raise _syntax("Bad address syntax: control characters or spaces", code)
    if keyword == "TO" and path.lower() == "postmaster":  # RFC 5321 4.5.1: always accepted, no domain
        return path, _params(tail), route
    if strict and not MAILBOX_RE.match(path):
        raise _syntax(f"Bad address syntax: {path}", code)
    if "@" not in path and keyword == "FROM":
        raise _syntax(f"Bad address syntax: {path} has no domain", code)
    return path, _params(tail), route


def _closing_bracket(text: str) -> int:
    quoted = escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return i
    return -1


def _params(tail: str) -> dict:
    params = {}
    for word in tail.split():
        m = _PARAM_RE.match(word)
        if not m:
            raise _syntax(f"Bad ESMTP parameter: {word}", "5.5.4")
        params[m.group(1).upper()] = m.group(2) if m.group(2) is not None else True
    return params


# The ESMTP parameters of the extensions advertised (SIZE, 8BITMIME) and AUTH= (RFC 4954).
MAIL_PARAMS = {"SIZE", "BODY", "AUTH"}
RCPT_PARAMS: set[str] = set()


def _known_params(params: dict, known: set[str]) -> None:
    unknown = [name for name in params if name not in known]
    if unknown:  # RFC 5321 4.1.1.11: parameters not recognized
        raise SyntaxProblem(Reply(555, "5.5.4", f"Unsupported parameter {unknown[0][:40]}"))
    size, body = params.get("SIZE"), params.get("BODY")
    if size is not None and (size is True or not str(size).isdigit() or len(str(size)) > 20):
        raise _syntax("SIZE needs a number of octets")
    if body is not None and (body is True or str(body).upper() not in ("7BIT", "8BITMIME")):
        raise _syntax("BODY must be 7BIT or 8BITMIME")


def parse_xclient(rest: str) -> dict:
    attrs = {}
    for word in rest.split():
        name, eq, value = word.partition("=")
        if not eq or name.upper() not in {"ADDR", "NAME", "HELO", "PORT", "PROTO", "LOGIN", "DESTADDR", "DESTPORT"}:
            raise _syntax(f"Bad XCLIENT attribute: {word}")
        attrs[name.upper()] = value
    if not attrs:
        raise _syntax(f"Syntax: {COMMANDS['XCLIENT'][0]}")
    return attrs


def parse_command(line: str, strict_addresses: bool = True):
    """One command line (no line ending) -> an event, or raise SyntaxProblem / KeyError (unknown verb)."""
    verb, _, rest = line.strip().partition(" ")
    verb = verb.upper()
    rest = rest.strip()
    if verb not in COMMANDS:
        raise KeyError(verb)
    if verb in ("HELO", "EHLO"):
        if not rest or " " in rest:
            raise _syntax(f"Syntax: {COMMANDS[verb][0]}")
        return ev.Helo(rest) if verb == "HELO" else ev.Ehlo(rest)
    if verb == "MAIL":
        address, params, route = parse_path(rest, "FROM", allow_null=True, strict=strict_addresses)
        _known_params(params, MAIL_PARAMS)
        return ev.MailFrom(address, params, route)
    if verb == "RCPT":
        address, params, route = parse_path(rest, "TO", allow_null=False, strict=strict_addresses)
        _known_params(params, RCPT_PARAMS)
        return ev.RcptTo(address, params, route)
    if verb in ("DATA", "RSET", "QUIT", "STARTTLS"):
        if rest:
            raise _syntax(f"Syntax: {COMMANDS[verb][0]} (no arguments)")
        return {"DATA": ev.Data, "RSET": ev.Rset, "QUIT": ev.Quit, "STARTTLS": ev.StartTls}[verb]()
    if verb == "NOOP":
        return ev.Noop()
    if verb == "HELP":
        return ev.Help(rest)
    if verb in ("VRFY", "EXPN"):
        if not rest:
            raise _syntax(f"Syntax: {COMMANDS[verb][0]}")
        return ev.Vrfy(rest) if verb == "VRFY" else ev.Expn(rest)
    if verb == "XCLIENT":
        return ev.XClient(parse_xclient(rest))
    if verb == "AUTH":
        mechanism, _, initial = rest.partition(" ")
        if not mechanism:
            raise _syntax(f"Syntax: {COMMANDS['AUTH'][0]}")
        return ev.Auth(mechanism.upper(), initial.strip() or None)
    raise KeyError(verb)  # pragma: no cover - every verb is handled above


def help_reply(topic: str = "") -> Reply:
    topic = topic.strip().upper()
    if not topic:
        verbs = [v for v in COMMANDS if v not in ("XCLIENT", "STARTTLS", "AUTH")]
        return Reply(214, "2.0.0", ["Commands:", "  " + " ".join(verbs),
                                    "HELP <command> shows its syntax. End DATA with a line holding only a dot.",
                                    "End of HELP info"])
    if topic in COMMANDS:
        syntax, what = COMMANDS[topic]
        return Reply(214, "2.0.0", [f"Syntax: {syntax}", f"  {what}", "End of HELP info"])
    return Reply(504, "5.5.1", f"HELP: unknown command {topic[:40]}")
