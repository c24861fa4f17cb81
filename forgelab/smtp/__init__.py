"""Sans-IO SMTP server protocol (RFC 5321): bytes in, events out, replies to bytes."""
from .replies import Reply

__all__ = ["Reply"]
