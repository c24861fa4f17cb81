"""What every SMTP session of one server shares: the lab, the store, the event bus and the rules.

Made once per server (``app.server_context``); each ``SmtpPipeline`` reads it. The rules (a
policy and the plugin manager built from it) are swapped whole when the policy changes, so a
session takes the current ones at its next greeting or message and never sees half a switch.
"""
from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass

import pluggy

from ..event_records import PolicyChanged
from ..events import EventBus
from ...lab import Lab
from ..login_throttle import LoginThrottle
from ..policy import Policy
from ..registry import build_plugin_manager
from ...store.spool import Spool


@dataclass
class Rules:
    """A policy and the plugin manager built from it; swapped whole when the policy changes."""

    policy: Policy
    pm: pluggy.PluginManager
    plugins: tuple[str, ...] = ()

    @classmethod
    def build(cls, policy: Policy, plugins: tuple[str, ...]) -> "Rules":
        return cls(policy, build_plugin_manager(policy, plugins), tuple(plugins))


class ServerContext:
    """What every SMTP session shares: the lab, the store, the event bus, the current rules.

    ``tls`` is the server context STARTTLS uses (None: STARTTLS is not offered);
    ``login_throttle`` slows down repeated AUTH failures per user name (shared with POP3);
    ``spool`` keeps big messages' text while DATA goes on (default: ``spool`` beside the store).
    """

    def __init__(self, lab: Lab, store, bus: EventBus | None = None, policy: Policy | None = None,
                 plugins: tuple[str, ...] = (), tls: ssl.SSLContext | None = None, login_throttle=None,
                 spool: Spool | None = None):
        from ..policy import load_policy

        self.lab = lab
        self.store = store
        self.bus = bus or EventBus()
        self.tls = tls
        self.login_throttle = login_throttle or LoginThrottle()
        self.spool = spool or Spool(store.root.parent / "spool")
        self._lock = threading.Lock()
        self.stopping = threading.Event()  # set when the server stops: ends throttle waits at once
        self._rules = Rules.build(policy or load_policy("observe"), plugins)

    @property
    def rules(self) -> Rules:
        with self._lock:
            return self._rules

    def set_policy(self, policy: Policy) -> None:
        """Switch policy for every message that starts from now on (plugins are rebuilt)."""
        rules = Rules.build(policy, self._rules.plugins)
        with self._lock:
            self._rules = rules
        self.bus.publish(PolicyChanged(policy.name, policy.description))
