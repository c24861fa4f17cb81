"""Sans-IO SMTP server protocol (RFC 5321): bytes in, events out, replies to bytes."""
from . import events
from .commands import COMMANDS, help_reply
from .connection import SmtpConnection, SmtpLimits
from .events import NEED_DATA, PAUSED
from .replies import Reply
from .state import State

__all__ = ["COMMANDS", "NEED_DATA", "PAUSED", "Reply", "SmtpConnection", "SmtpLimits", "State", "events", "help_reply"]
