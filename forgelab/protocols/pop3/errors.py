"""POP3 core errors; a command error carries the -ERR reply to send back."""
from __future__ import annotations

from .replies import Pop3Reply


class Pop3Error(Exception):
    """Base of every error the POP3 core raises."""


class CommandError(Pop3Error):
    """A client command the core refuses; ``reply`` is the -ERR to send, the session goes on."""

    def __init__(self, reply: Pop3Reply):
        super().__init__(reply.text)
        self.reply = reply


class LocalProtocolError(Pop3Error):
    """The server side used the core wrongly (replied twice, read before replying)."""
