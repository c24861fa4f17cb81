"""POP3 command syntax: each verb's syntax string next to its argument parser.

Parsers check only the shape of the arguments (a number, a name); whether a message
exists or a password is right is the service's business.
"""
from __future__ import annotations

import re
from typing import Callable

from . import events as ev
from .errors import CommandError
from .replies import Pop3Reply

_NUMBER = re.compile(r"^[0-9]+$")  # a line is at most 255 octets, so int() stays cheap
_DIGEST = re.compile(r"^[0-9A-Fa-f]{32}$")

# Capability list for CAPA (RFC 2449); APOP has no tag, the greeting timestamp announces it.
CAPABILITIES = ("TOP", "USER", "UIDL", "PIPELINING", "RESP-CODES", "AUTH-RESP-CODE",
                "EXPIRE NEVER", "IMPLEMENTATION forgelab")


def _bad(text: str) -> CommandError:
    return CommandError(Pop3Reply.err(text))


def _number(verb: str, arg: str, what: str = "message number") -> int:
    if not _NUMBER.match(arg):
        raise _bad(f"{verb}: {what} must be a number written in digits, such as {verb} 1" if what == "message number" else f"{verb}: {what} must be a number written in digits")
    return int(arg)


def _args(verb: str, args: list[str], low: int, high: int) -> list[str]:
    if not low <= len(args) <= high:
        raise _bad(f"syntax: {SYNTAX[verb]}")
    return args


def _user(rest: str) -> ev.Event:
    (name,) = _args("USER", rest.split(), 1, 1)
    return ev.User(name)


def _pass(rest: str) -> ev.Event:
    if not rest:
        raise _bad(f"syntax: {SYNTAX['PASS']}")
    return ev.Pass(rest)


def _apop(rest: str) -> ev.Event:
    name, digest = _args("APOP", rest.split(), 2, 2)
    if not _DIGEST.match(digest):
        raise _bad("APOP: the digest is 32 hex digits (MD5 of timestamp and secret)")
    return ev.Apop(name, digest.lower())


def _bare(event: type[ev.Event], verb: str) -> Callable[[str], ev.Event]:
    def parse(rest: str) -> ev.Event:
        _args(verb, rest.split(), 0, 0)
        return event()
    return parse


def _optional_msg(event: type[ev.Event], verb: str) -> Callable[[str], ev.Event]:
    def parse(rest: str) -> ev.Event:
        args = _args(verb, rest.split(), 0, 1)
        return event(_number(verb, args[0])) if args else event()
    return parse


def _msg(event: type[ev.Event], verb: str) -> Callable[[str], ev.Event]:
    def parse(rest: str) -> ev.Event:
        (msg,) = _args(verb, rest.split(), 1, 1)
        return event(_number(verb, msg))
    return parse


def _top(rest: str) -> ev.Event:
    msg, lines = _args("TOP", rest.split(), 2, 2)
    return ev.Top(_number("TOP", msg), _number("TOP", lines, "line count"))


# verb -> (syntax shown in hints, parser of the text after the verb)
COMMANDS: dict[str, tuple[str, Callable[[str], ev.Event]]] = {
    "USER": ("USER name", _user),
    "PASS": ("PASS password", _pass),
    "APOP": ("APOP name digest", _apop),
    "STAT": ("STAT", _bare(ev.Stat, "STAT")),
    "LIST": ("LIST [msg]", _optional_msg(ev.List, "LIST")),
    "RETR": ("RETR msg", _msg(ev.Retr, "RETR")),
    "DELE": ("DELE msg", _msg(ev.Dele, "DELE")),
    "NOOP": ("NOOP", _bare(ev.Noop, "NOOP")),
    "RSET": ("RSET", _bare(ev.Rset, "RSET")),
    "TOP": ("TOP msg lines", _top),
    "UIDL": ("UIDL [msg]", _optional_msg(ev.Uidl, "UIDL")),
    "CAPA": ("CAPA", _bare(ev.Capa, "CAPA")),
    "STLS": ("STLS", _bare(ev.Stls, "STLS")),
    "QUIT": ("QUIT", _bare(ev.Quit, "QUIT")),
}
SYNTAX = {verb: syntax for verb, (syntax, _) in COMMANDS.items()}


def parse(verb: str, rest: str) -> ev.Event:
    """The event for a known ``verb`` (upper case) and the text after it; CommandError if malformed."""
    return COMMANDS[verb][1](rest)
