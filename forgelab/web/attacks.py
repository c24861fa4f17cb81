"""The attack catalogue, run from the page in a background thread, one run at a time.

Two runs: ``matrix`` is ``forgelab attacks run`` (every entry under each chosen policy,
each policy on its own throw-away server); ``send`` plays every entry against the
running server, so each attack arrives on the live page with its verdicts. Stopping the
web view stops a run after the attack being played (``MatrixJob.close``).
"""
from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


def _describe(outcome) -> str:
    """One progress line for an Outcome."""
    caught = f" [{', '.join(outcome.caught_by)}]" if outcome.caught_by else ""
    mark = "" if outcome.ok else "  ! not as the catalogue expects"
    return f"{outcome.policy:<8} {outcome.attack}: {outcome.outcome}{caught}{mark}"


def _one_line(exc: BaseException) -> str:
    """What the page shows of a failure: its kind and the first line of its message, no traceback."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    first = text.strip().splitlines()[0] if text.strip() else ""
    shown = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return (shown[:300] + "…" if len(shown) > 300 else shown) + " (details in the server's log)"


class Cancelled(Exception):
    """Raised into a run (from its progress callback) when the web view stops."""


class MatrixJob:
    """``status()`` is what ``GET /api/attacks`` answers."""

    MAX_ITEMS = 2000

    def __init__(self):
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._closed = False  # the web view stopped: no run starts again
        self._state = self._fresh("idle", None, None, None)

    @staticmethod
    def _fresh(state, mode, policies, only) -> dict:
        return {"state": state, "mode": mode, "started": time.time() if state == "running" else None,
                "finished": None, "progress": [], "outcomes": [], "sent": [], "matrix": None, "error": None,
                "policies": policies, "only": only}

    def status(self) -> dict:
        with self._lock:
            return {**self._state, "progress": list(self._state["progress"]),
                    "outcomes": list(self._state["outcomes"]), "sent": list(self._state["sent"])}

    def start(self, policies: list[str] | None = None, only: list[str] | None = None) -> bool:
        """Run the matrix; False when a run is already going."""
        return self._launch("matrix", self._matrix, policies, only)

    def start_send(self, address: tuple[str, int], only: list[str] | None = None) -> bool:
        """Send every catalogue entry to the server at ``address``; False when a run is already going."""
        return self._launch("send", lambda policies, only: self._send(address, only), None, only)

    def _launch(self, mode, target, policies, only) -> bool:
        with self._lock:
            if self._state["state"] == "running" or self._closed:
                return False
            self._state = self._fresh("running", mode, policies, only)
            self._cancel.clear()
            self._thread = threading.Thread(target=self._guarded, args=(target, policies, only),
                                            name=f"forgelab-web-{mode}", daemon=True)
            self._thread.start()
            return True

    def _add(self, key: str, item) -> None:
        with self._lock:
            items = self._state[key]
            items.append(item)
            del items[:-self.MAX_ITEMS]

    def _progress(self, outcome) -> None:
        self._stop_if_cancelled()
        self._add("progress", _describe(outcome))
        self._add("outcomes", outcome.as_dict())

    def _stop_if_cancelled(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("stopped: the web view was stopped")

    def _guarded(self, target, policies, only) -> None:
        try:
            fields = target(policies, only)
        except Cancelled as exc:
            fields = {"error": str(exc)}
        except ImportError as exc:
            fields = {"error": f"the attack runner is not available: {exc}"}
        except Exception as exc:  # the page gets one line saying why; the traceback goes to the server's log
            log.exception("the %s run from the web view failed", self._state["mode"])
            fields = {"error": _one_line(exc)}
        with self._lock:
            self._state.update(state="error" if fields.get("error") else "done", finished=time.time(), **fields)

    def _matrix(self, policies, only) -> dict:
        from ..attacks.runner import matrix_text, run_catalogue

        outcomes = run_catalogue(policies=policies, only=only, progress=self._progress)
        return {"matrix": matrix_text(outcomes), "outcomes": [o.as_dict() for o in outcomes]}

    def _send(self, address, only) -> dict:
        from ..attacks.catalogue import all_entries
        from ..attacks.runner import can_bind, play

        host, port = address[:2]
        entries = [a for a in all_entries() if not only or a.id in only]
        for attack in entries:
            self._stop_if_cancelled()
            result, _ = play(attack, host, port, bind=can_bind(attack.script.source_ip))
            if attack.script.probes:  # VRFY/EXPN probes: the replies are the answer
                summary = "; ".join(str(r) for r in result)[:300]
            else:
                summary = f"{result.outcome}: {result.reply or result.error or ''}"
            self._add("sent", {"attack": attack.id, "title": attack.title, "class": attack.cls,
                               "legit": attack.legit, "result": summary[:500]})
            self._add("progress", f"sent {attack.id}: {summary[:200]}")
        return {}

    def close(self, timeout: float | None = None) -> None:
        """Stop a run after the attack it is playing (each policy's throw-away server stops too),
        and start none from now on: the web view is stopping."""
        with self._lock:
            self._closed = True
        self._cancel.set()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
