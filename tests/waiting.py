"""Waiting in tests for something another thread or process does, bounded in time."""
import time


def wait_for(predicate, timeout: float = 10.0, what: str = "the condition"):
    """``predicate()``'s first true value, asked every 0.05 s; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
