"""What a trainer may do to a stored message from the web view: delete it, release it from
Quarantine. Each changes the store durably (``MailStore.delete_at``, ``MailStore.release``)
and is published as an event, which the web view's index reads like any other."""
from __future__ import annotations

from ..core.event_records import MessageDeleted, MessageReleased


def delete_message(store, bus, message_id: str, locations: list) -> list[list[str]]:
    """Remove every stored copy; the copies removed (published as ``message.deleted``)."""
    removed = [list(location) for location in locations if store.delete_at(tuple(location))]
    bus.publish(MessageDeleted(message_id, removed))
    return removed


def release_message(store, bus, message_id: str, locations: list) -> list[list[str]] | None:
    """Move every quarantined copy into its user's inbox; the copies moved (published as
    ``message.released``), or None when no quarantined copy is left (nothing is published)."""
    moved, now = [], []
    for location in map(list, locations):
        user, folder, key = location
        if folder == "quarantine":
            try:
                now.append(list(store.release(user, key)))
                moved.append(location)
                continue
            except KeyError:
                pass  # gone already
        now.append(location)
    if not moved:
        return None
    bus.publish(MessageReleased(message_id, moved, now))
    return moved
