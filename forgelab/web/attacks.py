"""Runs the attack catalogue (``forgelab attacks run``) in a background thread for the page."""
from __future__ import annotations

import dataclasses
import threading
import time
import traceback


def _plain(value):
    """An Outcome (whatever its shape) as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


class MatrixJob:
    """One run at a time; ``status()`` is what ``GET /api/attacks`` answers."""

    MAX_PROGRESS = 500

    def __init__(self):
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._state = {"state": "idle", "started": None, "finished": None, "progress": [],
                       "matrix": None, "outcomes": None, "error": None, "policies": None, "only": None}

    def status(self) -> dict:
        with self._lock:
            return {**self._state, "progress": list(self._state["progress"])}

    def start(self, policies: list[str] | None = None, only: list[str] | None = None) -> bool:
        """Start a run; False when one is already running."""
        with self._lock:
            if self._state["state"] == "running":
                return False
            self._state = {"state": "running", "started": time.time(), "finished": None, "progress": [],
                           "matrix": None, "outcomes": None, "error": None, "policies": policies, "only": only}
            self._thread = threading.Thread(target=self._run, args=(policies, only), name="forgelab-web-attacks",
                                            daemon=True)
            self._thread.start()
            return True

    def _progress(self, *args, **kwargs) -> None:
        text = " ".join(str(a) for a in args) + "".join(f" {k}={v}" for k, v in kwargs.items())
        with self._lock:
            progress = self._state["progress"]
            progress.append(text[:500])
            del progress[:-self.MAX_PROGRESS]

    def _run(self, policies, only) -> None:
        try:
            from ..attacks.runner import matrix_text, run_catalogue
        except ImportError as exc:
            self._finish(error=f"the attack runner is not available: {exc}")
            return
        try:
            outcomes = run_catalogue(policies=policies, only=only, progress=self._progress)
            self._finish(matrix=matrix_text(outcomes), outcomes=_plain(list(outcomes)))
        except Exception as exc:  # shown on the page: a run that fails says why
            self._finish(error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")

    def _finish(self, **fields) -> None:
        with self._lock:
            self._state.update(state="error" if fields.get("error") else "done", finished=time.time(), **fields)

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
