"""What the web view knows from before it started: the tail of the JSONL event log."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

from ..events import decode

log = logging.getLogger(__name__)

MAX_HISTORY_BYTES = 8 * 1024 * 1024  # the newest part of events.jsonl that is read back


def earlier_records(path: Path, max_bytes: int = MAX_HISTORY_BYTES) -> Iterator[dict]:
    """The records at the end of the event log ``path``, oldest first: at most ``max_bytes``
    are read, a line cut by that window and lines that are not JSON objects are skipped."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(size - max_bytes, 0))
            data = f.read(max_bytes)
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError):
            log.warning("the event log %s could not be read back: %s", path, exc)
        return
    lines = data.split(b"\n")
    if size > max_bytes:
        lines = lines[1:]  # the first line may start mid-record
    for line in lines:
        try:
            record = decode(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record
