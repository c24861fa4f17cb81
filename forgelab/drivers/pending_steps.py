"""The selector driver's delivery thread: the steps a session leaves pending, run off the loop.

A step a session leaves ``pending`` (SMTP: the delivery of a message, whose fsyncs take
longer than everything else in a session) runs here while the loop serves the other
connections; steps queued meanwhile run in one go, so messages that arrive together share
their disk commits.
"""
from __future__ import annotations

import os
import queue
import socket
import threading
from collections import deque
from typing import Callable, TypeVar

Client = TypeVar("Client")  # the loop's record of a connection; it has ``session``


def _yield_to_the_loop() -> None:
    """A delivery thread whose fsync returns waits for the loop to pause, instead of taking
    the CPU from it only to wait for the GIL the loop holds (SCHED_BATCH: no wake-up
    preemption; Linux, best effort). Measured: the loop's forced switches a third of before."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass



class PendingSteps:
    """The thread that runs pending steps: every step queued meanwhile in one go (``answer``;
    for SMTP, deliveries whose fsyncs are shared), then hands them back to the loop with one
    wake-up. It replaced four threads with a step each: fewer disk commits and GIL
    hand-offs when messages arrive together (docs/performance.md)."""

    def __init__(self, name: str, wake: socket.socket, answer: Callable[[list], None]):
        self._wake = wake
        self._answer = answer
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        self._done: deque[tuple[Client, BaseException | None]] = deque()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-delivery", daemon=True)
        self._thread.start()

    def submit(self, client: Client) -> None:
        self._todo.put(client)

    def _run(self) -> None:
        _yield_to_the_loop()
        while True:
            batch = [self._todo.get()]
            while True:
                try:
                    batch.append(self._todo.get_nowait())
                except queue.Empty:
                    break
            clients = [client for client in batch if client is not None]
            if clients and not self._stopping:  # stopping: nobody would answer, so nothing is run
                try:
                    self._answer([client.session for client in clients])
                    error = None
                except Exception as exc:
                    error = exc
                self._done.extend((client, error) for client in clients)
                try:
                    self._wake.send(b"a")
                except OSError:  # the buffer is full of wake-ups already, or we are stopping
                    pass
            if None in batch:
                return
            batch = clients = error = None  # not kept (their sessions) while we wait for the next

    def take(self) -> list[tuple[Client, BaseException | None]]:
        """The steps done since the last call, each with what it raised (on the loop thread)."""
        done = []
        while self._done:
            done.append(self._done.popleft())
        return done

    def stop(self) -> None:
        """Start no more steps; wait for the running ones to end."""
        self._stopping = True
        self._todo.put(None)
        self._thread.join()
