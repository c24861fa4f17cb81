"""What the web view knows from before it started: the tail of the JSONL event log."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Iterator

from ..core.events import decode, rotated

log = logging.getLogger(__name__)

MAX_HISTORY_BYTES = 8 * 1024 * 1024  # the newest part of the event log (events.jsonl and its rotations) read back
MAX_ROTATIONS = 100  # older files looked at, at most


def _tail(path: Path, max_bytes: int) -> tuple[bytes, bool] | None:
    """The last ``max_bytes`` of ``path`` (never through a symbolic link) and whether it was cut."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("the event log %s could not be read back: %s", path, exc)
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a directory planted there
        os.close(fd)
        log.warning("the event log %s could not be read back: not a regular file", path)
        return None
    with open(fd, "rb") as f:
        size = f.seek(0, 2)
        f.seek(max(size - max_bytes, 0))
        return f.read(max_bytes), size > max_bytes


def earlier_records(path: Path, max_bytes: int = MAX_HISTORY_BYTES) -> Iterator[dict]:
    """The records at the end of the event log ``path`` and, when it holds less than
    ``max_bytes``, of its rotated files before it (``events.jsonl.1``, ``.2`` ...), oldest
    first: at most ``max_bytes`` are read, a line cut by that window and lines that are not
    JSON objects are skipped."""
    parts: list[tuple[bytes, bool]] = []
    remaining = max_bytes
    for n in range(MAX_ROTATIONS + 1):
        part = _tail(path if n == 0 else rotated(path, n), remaining)
        if part is None:
            break
        parts.append(part)
        remaining -= len(part[0])
        if part[1] or remaining <= 0:
            break
    for data, cut in reversed(parts):
        lines = data.split(b"\n")
        if cut:
            lines = lines[1:]  # the first line may start mid-record
        for line in lines:
            try:
                record = decode(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record
