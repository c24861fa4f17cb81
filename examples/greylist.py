"""Example plugin: greylisting (say "try again later" to a first-time sender).

A real MTA retries after a 4xx; much spamware does not. The first time a
(client address, sender, recipient) triple is seen, this returns ``temperror``;
from ``delay`` seconds later on, it passes. A policy decides what temperror does
(``strict`` answers ``451``).

    forgelab serve --policy strict --plugin examples/greylist.py
"""
import threading
import time

from forgelab import Verdict, hookimpl


class Greylist:
    name = "greylist"

    def __init__(self, settings: dict):
        self.delay = float(settings.get("delay", 60))
        self._first_seen: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    @hookimpl
    def forgelab_rcpt_to(self, session, envelope, address):
        triple = (session.peer_ip, envelope.mail_from.lower(), address.lower())
        now = time.monotonic()
        with self._lock:
            first = self._first_seen.setdefault(triple, now)
        waited = now - first
        if waited < self.delay:
            return Verdict(self.name, "temperror",
                           f"first time {envelope.mail_from or '<>'} -> {address} from {session.peer_ip}; retry in {self.delay - waited:.0f}s")
        return Verdict(self.name, "pass", f"seen before, {waited:.0f}s ago")


def forgelab_plugin(settings):
    return Greylist(settings)
