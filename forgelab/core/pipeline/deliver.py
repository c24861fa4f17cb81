"""Delivery: the stored copies of a message its verdicts let through, and their disk writes.

In the flow (... -> outcome -> STORE and events): the ``forgelab_add_headers`` hooks and the
trace headers (``Received``, ``Authentication-Results``, ``X-Forgelab-Verdict``, made by
``forgelab/core/delivery.py``) go on top of the message; each local recipient gets a copy in their
inbox (or quarantine), a relayed one goes to the relay hold. The writes run as the store's
steps, possibly on another thread and shared with other messages' fsyncs; only then does the
session answer 250 (``PendingDelivery``), so a 250 means the mail is on disk.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable

from ...lab import Lab
from ...store.nofollow import SymlinkRefused
from ..session import Envelope, Session
from ...protocols.smtp import Reply
from ...store import MailStore, WriteSteps
from ...verdicts import Verdict
from .stages import Called

log = logging.getLogger("forgelab.core.pipeline")


def added_headers(called: Iterable[Called]) -> list[tuple[str, str]]:
    """The (name, value) pairs the ``forgelab_add_headers`` implementations gave; anything else
    is logged and left out (a plugin's mistake must not cost the message)."""
    extra = []
    for name, returned, _ in called:
        for item in returned or []:
            if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
                extra.append(tuple(item))
            else:
                log.warning("plugin %s: forgelab_add_headers gave %r, not a (name, value) pair", name, item)
    return extra


def prepare_writes(store: MailStore, raw: bytes, session: Session, envelope: Envelope, lab: Lab,
                   verdicts: list[Verdict], extra: list[tuple[str, str]], action: str,
                   users: list[str], relayed: bool) -> Callable[[], WriteSteps]:
    """The stored copies made; returns the disk writes (as the store's steps), which touch only
    the store and may run on any thread: they end with (user, folder, key) of each copy.

    :param users: the local recipients (user names, lists expanded); ``relayed``: some were not local.
    """
    from ..delivery import prepare_for_delivery

    folder = "quarantine" if action == "quarantine" else "inbox"
    # As Postfix: "for <rcpt>" only with one local recipient; every other copy is the same bytes.
    shared = own = None
    if len(users) > 1 or relayed:
        shared = prepare_for_delivery(raw, session, envelope, lab, verdicts, extra)
    if len(users) == 1:
        own = prepare_for_delivery(raw, session, envelope, lab, verdicts, extra, for_rcpt=users[0])

    def write() -> WriteSteps:
        locations = []
        if own is not None:
            locations.append((users[0], folder, (yield from store.delivering(users[0], own, folder))))
        elif users:
            keys = yield from store.delivering_many(users, shared, folder)
            locations.extend((user, folder, key) for user, key in zip(users, keys))
        if relayed:
            locations.append(("_relay-hold", "inbox", (yield from store.holding_relay(shared))))
        return locations

    return write


class PendingDelivery:
    """A message its verdicts let through, its copies made: ``write()`` stores them (the disk
    writes and fsyncs; any thread), then ``finish()`` says so (event, hooks, the reply; on the
    session's thread). ``write`` None: making the copies failed, and ``finish()`` says 451.
    ``write_together`` stores several at once, their fsyncs shared (``MailStore.run_together``)."""

    def __init__(self, store: MailStore, write: Callable[[], WriteSteps] | None,
                 finish: Callable[[list | None], Reply]):
        self._store, self._write, self._finish = store, write, finish
        self.locations: list | None = None

    def write(self) -> None:
        self.write_together([self])

    @staticmethod
    def write_together(deliveries: list["PendingDelivery"]) -> None:
        """Deliveries of one server (so of one store)."""
        deliveries = [d for d in deliveries if d._write is not None]
        if not deliveries:
            return
        results = deliveries[0]._store.run_together([d._write() for d in deliveries])
        for delivery, result in zip(deliveries, results):
            if isinstance(result, BaseException):
                if not isinstance(result, SymlinkRefused):  # that one is logged, with its path, by nofollow
                    log.error("delivery failed", exc_info=result)
            else:
                delivery.locations = result

    def finish(self) -> Reply:
        return self._finish(self.locations)
