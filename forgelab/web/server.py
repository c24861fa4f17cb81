"""The web view's server: uvicorn on its own thread and event loop, beside the mail servers."""
from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from ..drivers.listening import listening_socket
from .app import create_app
from .streams import MAX_STREAMS, STREAM_BUFFER, Streams
from .attacks import MatrixJob
from .connections import MAX_CONNECTIONS, MAX_REQUEST_HEAD, REQUEST_TIMEOUT, WRITE_TIMEOUT, ConnectionGuard
from .history import earlier_records
from .index import EventIndex

log = logging.getLogger(__name__)

ACCEPT_BATCH = 32    # connections accepted in one turn of the web loop
LISTEN_QUEUE = 1024  # connections the kernel holds until the web loop accepts them


class WebServer:
    """``WebServer(lab_app, host, port).start()`` serves the live view of ``lab_app`` (a ``Forgelab``).

    It subscribes to the lab's event bus when constructed, so create it before mail arrives.
    ``port=0`` picks a free port; ``.address`` tells which. The limits (connections.py,
    streams.py) hold a class of hostile clients off: ``max_connections`` open at once,
    ``request_timeout`` for a request to arrive, ``write_timeout`` for a client that does not
    read, ``max_streams`` event streams of ``stream_buffer`` bytes each.
    """

    def __init__(self, lab_app, host: str = "127.0.0.1", port: int = 8025, index: EventIndex | None = None, *,
                 max_connections: int = MAX_CONNECTIONS, request_timeout: float = REQUEST_TIMEOUT,
                 write_timeout: float = WRITE_TIMEOUT, max_streams: int = MAX_STREAMS,
                 stream_buffer: int = STREAM_BUFFER):
        self.lab_app = lab_app
        self.host, self.port = host, port
        self.index = index or EventIndex()
        self.job = MatrixJob()
        self.guard = ConnectionGuard(max_connections, request_timeout, write_timeout)
        self.streams = Streams(max_streams, stream_buffer)
        if index is None and lab_app.settings.event_log:  # the sessions and mail of earlier runs, too
            lab_app.bus.flush()
            self.index.replay(earlier_records(lab_app.data_dir / "events.jsonl"))
        self._unsubscribe = lab_app.bus.subscribe(self.index)
        self.app = create_app(lab_app, self.index, self.job, bind_host=host, streams=self.streams)
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._sock is not None, "web server not started"
        return self._sock.getsockname()[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def _bind(self) -> socket.socket:
        sock = listening_socket("web view", self.host, self.port)
        sock.set_inheritable(True)
        return sock

    def start(self, timeout: float = 10.0) -> "WebServer":
        # Bind here, in the caller's thread, so "port in use" is a clear error at start-up.
        self._sock = self._bind()
        config = uvicorn.Config(self.app, http=self.guard.protocol(), log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2, timeout_keep_alive=5,
                                h11_max_incomplete_event_size=MAX_REQUEST_HEAD, backlog=ACCEPT_BATCH)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="forgelab-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the web view did not start")
            time.sleep(0.02)
        # asyncio accepts up to ``backlog`` connections in a row before the guard sees any: a
        # small batch keeps a flood from taking every descriptor first; the kernel queue stays long.
        self._sock.listen(LISTEN_QUEUE)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.job.close(timeout)  # a run started from the page ends with the page, and none starts now
        self._unsubscribe()
        self.streams.close_all()  # event streams end now instead of holding the shutdown
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the web view did not stop within %s s", timeout)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> "WebServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
