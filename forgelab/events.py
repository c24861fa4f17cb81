"""The event bus: every session step, verdict and delivery, for the terminal, the log and the web view."""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

Subscriber = Callable[[dict], None]


class EventBus:
    """Publish small dict records to every subscriber, in order, from any thread."""

    def __init__(self):
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._seq = 0

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(fn)
        return lambda: self.unsubscribe(fn)

    def unsubscribe(self, fn: Subscriber) -> None:
        with self._lock:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

    def publish(self, kind: str, **fields) -> dict:
        with self._lock:
            self._seq += 1
            record = {"seq": self._seq, "ts": time.time(), "kind": kind, **fields}
            subscribers = list(self._subscribers)
            # Deliver inside the lock so every subscriber sees records in seq order.
            for fn in subscribers:
                try:
                    fn(record)
                except Exception:  # a broken viewer must never break the mail server
                    log.exception("event subscriber %r failed", fn)
        return record


class JsonlLog:
    """Appends every event as one JSON line (``events.jsonl`` in the data directory)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8", buffering=1)

    def __call__(self, record: dict) -> None:
        self._file.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._file.close()
