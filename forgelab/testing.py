"""A pytest plugin for forgelab plugin authors (registered through the ``pytest11`` entry point).

    def test_my_defence(forgelab_server):
        lab = forgelab_server(policy="strict", plugins=["my_defence.py"])
        with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
            client.sendmail("a@shop.example", ["alice@corp.example"], b"Subject: hi\\r\\n\\r\\nhi\\r\\n")
        assert any(e["verdict"]["check"] == "my-defence" for e in lab.recorded("verdict"))
"""
from __future__ import annotations

import threading

import pytest


class EventRecorder:
    """Keeps every event of the bus, for assertions."""

    def __init__(self):
        self.events: list[dict] = []
        self._cond = threading.Condition()

    def __call__(self, record: dict) -> None:
        with self._cond:
            self.events.append(record)
            self._cond.notify_all()

    def of(self, kind: str) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e["kind"] == kind]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0) -> list[dict]:
        """Block until ``count`` events of ``kind`` arrived (the server may still be writing the last reply)."""
        with self._cond:
            self._cond.wait_for(lambda: len([e for e in self.events if e["kind"] == kind]) >= count, timeout)
            return [e for e in self.events if e["kind"] == kind]


@pytest.fixture
def forgelab_server(tmp_path_factory):
    """A factory: ``forgelab_server(policy="observe", plugins=(), **settings) -> Forgelab``.

    Starts SMTP and POP3 on free 127.0.0.1 ports with a fresh data directory; every
    server started is stopped after the test. ``lab.recorded(kind)`` lists events seen.
    """
    from .app import Forgelab, Settings

    started = []

    def start(policy="observe", plugins=(), **settings):
        data_dir = settings.pop("data_dir", None) or tmp_path_factory.mktemp("forgelab")
        app = Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=data_dir, policy=policy,
                                plugins=tuple(plugins), **settings))
        recorder = EventRecorder()
        app.bus.subscribe(recorder)
        app.recorder = recorder
        app.recorded = recorder.of
        app.start()
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()
