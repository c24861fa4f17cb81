"""SASL PLAIN (RFC 4616) and LOGIN for SMTP AUTH (RFC 4954), without I/O.

    exchange = SaslExchange("PLAIN")
    step = exchange.start(initial)     # a Challenge (answer 334) or Credentials (check them)
    step = exchange.respond(line)      # the client's answer to the last 334

Malformed input raises ``SaslProblem`` carrying the reply to send; ``*`` from the
client raises it with ``501 5.0.0`` (cancelled).
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from .replies import Reply

MECHANISMS = ("PLAIN", "LOGIN")


class SaslProblem(ValueError):
    def __init__(self, reply: Reply):
        super().__init__(reply.text)
        self.reply = reply


@dataclass(frozen=True)
class Challenge:
    """Send ``334 <text>``; ``text`` is already base64 (``""`` for an empty challenge)."""

    text: str = ""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    authzid: str = ""


CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
_USERNAME = base64.b64encode(b"Username:").decode()
_PASSWORD = base64.b64encode(b"Password:").decode()


def _decode(text: str) -> str:
    if text == "=":  # RFC 4954 4: "=" is an empty initial response
        return ""
    try:
        return base64.b64decode(text.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise SaslProblem(Reply(501, "5.5.2", "Cannot decode the response: it must be base64 of UTF-8 text")) from None


class SaslExchange:
    def __init__(self, mechanism: str):
        mechanism = mechanism.upper()
        if mechanism not in MECHANISMS:
            raise SaslProblem(Reply(504, "5.5.4", f"Unrecognized authentication type; use {' or '.join(MECHANISMS)}"))
        self.mechanism = mechanism
        self._username: str | None = None

    def start(self, initial: str | None) -> Challenge | Credentials:
        if initial is None:
            return Challenge("" if self.mechanism == "PLAIN" else _USERNAME)
        return self.respond(initial)

    def respond(self, line: str) -> Challenge | Credentials:
        if line.strip() == "*":
            raise SaslProblem(CANCELLED)
        text = _decode(line)
        if self.mechanism == "PLAIN":
            return _plain(text)
        if self._username is None:
            self._username = text
            return Challenge(_PASSWORD)
        return Credentials(self._username, text)


def _plain(text: str) -> Credentials:
    parts = text.split("\x00")
    if len(parts) != 3 or not parts[1]:
        raise SaslProblem(Reply(501, "5.5.2", "PLAIN wants base64 of <authzid> NUL <user> NUL <password>"))
    authzid, username, password = parts
    return Credentials(username, password, authzid)
