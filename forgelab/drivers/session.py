"""What a driver needs of a protocol session (``smtp_session.SmtpSession`` is the one there is)."""
from __future__ import annotations

from typing import Protocol


class Session(Protocol):
    """What the loop needs of a session (``smtp_session.SmtpSession`` says what each means)."""
    done: bool
    starting_tls: bool
    more: bool
    delay: float
    deadline: float
    pending: object | None
    in_progress: bool

    def greet(self) -> bytes: ...
    def feed(self, data: bytes) -> bytes: ...
    def run(self) -> bytes: ...
    def timed_out(self) -> bytes: ...
    def shed(self, why: str) -> bytes: ...
    def close(self, reason: str | None = None) -> None: ...
