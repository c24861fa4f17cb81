"""The live web view: sessions, messages, verdicts, the attack matrix, the policy switch (docs/web.md)."""
from .index import EventIndex
from .server import WebServer

__all__ = ["EventIndex", "WebServer"]
