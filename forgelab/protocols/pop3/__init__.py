"""POP3 (RFC 1939, CAPA from RFC 2449): a sans-IO core and the service that answers it.

``Pop3Connection`` turns bytes into events and replies into bytes, with every sequencing
rule in ``state.TABLE``; ``Pop3Service`` checks logins and works the maildrop.
"""
from ...core.login_throttle import LoginThrottle
from ...core.printable import printable
from .connection import MAX_LINE, Pop3Connection, hint
from .errors import CommandError, LocalProtocolError, Pop3Error
from .events import NEED_DATA
from .replies import Pop3Reply
from .service import Pop3Service
from .state import TABLE, State

__all__ = ["MAX_LINE", "NEED_DATA", "TABLE", "CommandError", "LocalProtocolError", "LoginThrottle",
           "Pop3Connection", "Pop3Error", "Pop3Reply", "Pop3Service", "State", "hint", "printable"]
