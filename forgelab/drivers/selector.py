"""A one-thread TCP server: every plain-text connection on one selector loop (``serve --driver selector``).

In CPython a thread per connection pays for each blocking call with a GIL hand-off between
threads, which costs more than the protocol work itself under load (docs/performance.md).
Here one thread waits on every socket at once and runs each session's step to the end, so
nothing is handed between threads. Sessions are the same objects the threaded driver runs
(``SmtpSession``); only the socket handling differs. A session that starts TLS is handed
to a thread of its own (``handover``), where the blocking code of the threaded driver
serves it on.

A step a session leaves ``pending`` (a delivery) runs on one delivery thread
(``pending_steps.py``), its connection not read meanwhile. Hooks run on the loop thread, so
a hook that blocks holds every plain-text connection up.

Caps, the idle and session limits and shutdown live here, as in ``threaded.ThreadedServer``.
"""
from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from typing import Callable

from .connection import Connection, Limits, close_socket
from .listening import ListeningServer, listening_socket
from .pending_steps import PendingSteps
from .session import Session
from .waiting_room import Waiter

log = logging.getLogger(__name__)

SWEEP_SECONDS = 0.1  # how often idle and session limits, held-back replies and waiting newcomers are checked (at most)


def _raiser(error: BaseException) -> Callable[[], bytes]:
    def step() -> bytes:
        raise error
    return step


class _Client:
    __slots__ = ("conn", "session", "out", "last_io", "writing", "busy", "wake_at")

    def __init__(self, conn: Connection, session: Session):
        self.conn = conn
        self.session = session
        self.out = b""  # reply bytes the socket has not taken yet
        self.last_io = time.monotonic()
        self.writing = False  # waiting for the socket to take ``out``; reads stop meanwhile
        self.busy = False  # out of the selector: a pending step runs elsewhere, or a reply is held back
        self.wake_at: float | None = None  # when the held-back reply is due (session.delay)


class SelectorServer(ListeningServer):
    """Accepts on ``host:port``; ``open_session(conn)`` makes the session of each connection.

    :param handover: runs on a thread of its own for a session that starts TLS, with the
        socket blocking again; it serves the rest of the session and returns when it ends.
    :param answer_pending: runs the ``pending`` steps of several sessions at once, on the
        delivery thread (SMTP: ``SmtpSession.answer_together``).
    """

    def __init__(self, name: str, host: str, port: int, open_session: Callable[[Connection], Session],
                 handover: Callable[[Connection, Session], None], busy: bytes, limits: Limits | None = None, *,
                 reuse_port: bool = False, answer_pending: Callable[[list], None]):
        super().__init__(name, host, port, busy, limits, reuse_port)
        self.open_session = open_session
        self.handover = handover
        self._selector: selectors.BaseSelector | None = None
        self._clients: dict[int, _Client] = {}  # by file descriptor; the loop thread's alone
        self._active = 0  # connections, with the TLS ones handed over (under _lock)
        self._handed: dict[threading.Thread, Connection] = {}  # TLS sessions, each on a thread of its own
        self._wake_r, self._wake_w = socket.socketpair()
        self.answer_pending = answer_pending
        self._pending: PendingSteps | None = None
        self._accept_again: float | None = None  # accepting paused after a failure, until then

    @property
    def active_connections(self) -> int:
        with self._lock:
            return self._active

    def start(self) -> "SelectorServer":
        self._sock = listening_socket(self.name, self._host, self._port, reuse_port=self.reuse_port)
        self._sock.setblocking(False)
        self._wake_r.setblocking(False)
        self._pending = PendingSteps(self.name, self._wake_w, self.answer_pending)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._sock, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._wake_r)
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-selector", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        next_sweep = time.monotonic() + min(SWEEP_SECONDS, self.limits.idle_timeout / 4)
        try:
            while not self._stopping.is_set():
                for key, mask in self._selector.select(max(next_sweep - time.monotonic(), 0)):
                    try:
                        if key.data is None:
                            self._accept()
                        elif key.data is self._wake_r:
                            self._take_answers()
                        elif mask & selectors.EVENT_WRITE:
                            self._flush(key.data)
                        else:
                            self._read(key.data)
                    except Exception:  # one connection's trouble must not stop the others
                        log.exception("%s: selector step failed", self.name)
                        if isinstance(key.data, _Client):
                            self._close(key.data, "server error")
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + min(SWEEP_SECONDS, self.limits.idle_timeout / 4)  # limits change at a policy switch
        except Exception:
            log.exception("%s: the selector loop failed", self.name)
        finally:
            self._refuse_waiting()
            for client in list(self._clients.values()):
                self._close(client, "server stopping")
            self._selector.close()

    def _accept(self) -> None:
        for _ in range(64):  # a burst of clients, then back to the ones already connected
            try:
                sock, addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. out of file descriptors: pause accepting, or the loop would spin
                log.warning("%s: accept failed", self.name, exc_info=True)
                self._selector.unregister(self._sock)
                self._accept_again = time.monotonic() + 0.1
                return
            self._arrive(sock, addr)

    def _candidates(self) -> list[Connection]:
        return self._sheddable()

    def _count_in(self, waiter: Waiter) -> None:
        self._active += 1
        self._per_ip[waiter.peer_ip] += 1

    def _start(self, waiter: Waiter, counted: None, victim: Connection | None) -> None:
        sock, addr, peer_ip = waiter.sock, waiter.addr, waiter.peer_ip
        if victim is not None:
            self._shed(victim)
        sock.setblocking(False)
        local = sock.getsockname()
        conn = Connection(sock, peer_ip, addr[1], local[0], local[1], rate_window=self.limits.shed_idle_after,
                          limits=self.limits)
        try:
            session = self.open_session(conn)
        except Exception:
            log.exception("%s: session for %s could not start", self.name, peer_ip)
            self._release(conn)
            sock.close()
            return
        client = _Client(conn, session)
        self._clients[sock.fileno()] = client
        self._selector.register(sock, selectors.EVENT_READ, client)
        self._step(client, session.greet)

    def _read(self, client: _Client) -> None:
        try:
            data = client.conn.sock.recv(self.limits.read_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._close(client, f"connection error: {exc.strerror or exc}")
            return
        client.last_io = time.monotonic()
        client.conn.received(len(data), client.last_io)
        self._step(client, lambda: client.session.feed(data))

    def _step(self, client: _Client, step: Callable[[], bytes]) -> None:
        """Run one session step and send what it returns."""
        try:
            out = step()
        except Exception:
            log.exception("%s: connection from %s failed", self.name, client.conn.peer_ip)
            self._close(client, "server error")
            return
        client.out += out
        if client.session.pending is not None:
            self._answer_elsewhere(client)
            return
        self._flush(client)

    def _answer_elsewhere(self, client: _Client) -> None:
        """Answer the pending step on a message thread; the connection waits out of the selector."""
        self._selector.unregister(client.conn.sock)
        client.busy = True
        self._pending.submit(client)

    def _take_answers(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        for client, error in self._pending.take():
            if self._clients.get(client.conn.sock.fileno()) is not client:
                continue  # closed meanwhile (stopping)
            client.busy = False
            self._selector.register(client.conn.sock, selectors.EVENT_READ, client)
            self._step(client, client.session.run if error is None else _raiser(error))

    def _flush(self, client: _Client) -> None:
        while True:
            if not self._send(client):
                return
            session = client.session
            if session.delay > 0:  # a reply held back (a failed login): the sweep wakes the client
                self._selector.unregister(client.conn.sock)
                client.busy = True
                client.wake_at = time.monotonic() + session.delay
                return
            if not session.more or session.done or session.pending is not None:
                break
            try:  # the socket took every reply so far: the next part of a long pipelined batch
                client.out = session.run()
            except Exception:
                log.exception("%s: connection from %s failed", self.name, client.conn.peer_ip)
                self._close(client, "server error")
                return
            if session.pending is not None:
                self._answer_elsewhere(client)
                return
        if client.session.done:
            self._close(client)
        elif client.session.starting_tls:
            self._hand_over(client)

    def _send(self, client: _Client) -> bool:
        """Send what the socket takes of ``out``; True once all of it went."""
        sock = client.conn.sock
        while client.out:
            try:
                sent = sock.send(client.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._close(client, f"connection error: {exc.strerror or exc}")
                return
            client.out = client.out[sent:]
            client.last_io = client.conn.turn_since = time.monotonic()
        if client.out:  # the client is slow to read: wait for room, read nothing meanwhile
            if not client.writing:
                client.writing = True
                self._selector.modify(sock, selectors.EVENT_WRITE, client)
            return False
        if client.writing:
            client.writing = False
            self._selector.modify(sock, selectors.EVENT_READ, client)
        return True

    def _sweep(self, now: float) -> None:
        if self._accept_again is not None and now >= self._accept_again:
            self._accept_again = None
            self._selector.register(self._sock, selectors.EVENT_READ, None)
        if self._room:
            self._let_in()
        for client in list(self._clients.values()):
            if client.busy:
                if client.wake_at is not None and now >= client.wake_at:
                    client.busy, client.wake_at = False, None
                    self._selector.register(client.conn.sock, selectors.EVENT_READ, client)
                    self._step(client, client.session.run)
                continue
            if now - client.last_io >= client.conn.limits.idle_timeout or now >= client.session.deadline:
                if client.writing:  # it does not even read our replies: no 421 to send
                    self._close(client, "idle timeout")
                else:
                    self._step(client, client.session.timed_out)

    def _sheddable(self) -> list[Connection]:
        """Every connection with what ``choose_shed`` needs to know (under ``_lock``, on the loop
        thread): ours wait for the client when nothing of theirs runs or is unsent; a TLS one
        when its thread waits in ``recv``."""
        conns = list(self._handed.values())
        for client in self._clients.values():
            conn = client.conn
            conn.waiting = not (client.busy or client.writing)
            conn.in_progress = client.session.in_progress
            conns.append(conn)
        return conns

    def _shed(self, conn: Connection) -> None:
        """Close a connection ``_make_room`` chose (no longer counted): ours at once after the
        goodbye, as far as the socket takes it; a TLS one by waking its thread, which says it."""
        client = self._clients.get(conn.sock.fileno())
        if client is None or client.conn is not conn:
            conn.wake_to_shed(conn.shed)
            return
        try:
            conn.sock.send(client.session.shed(conn.shed))
        except OSError:
            pass
        self._close(client)

    def _hand_over(self, client: _Client) -> None:
        conn = client.conn
        self._selector.unregister(conn.sock)
        del self._clients[conn.sock.fileno()]
        conn.sock.setblocking(True)
        thread = threading.Thread(target=self._serve_handed, args=(conn, client.session),
                                  name=f"{self.name}-tls", daemon=True)
        with self._lock:
            self._handed[thread] = conn
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: drop this client
            log.error("%s: cannot start a thread for %s", self.name, conn.peer_ip)
            with self._lock:
                self._handed.pop(thread, None)
            client.session.close("server busy")
            self._release(conn)
            conn.sock.close()

    def _serve_handed(self, conn: Connection, session: Session) -> None:
        try:
            self.handover(conn, session)
        except Exception:
            log.exception("%s: connection from %s failed", self.name, conn.peer_ip)
        finally:
            session.close()
            close_socket(conn.sock)
            self._release(conn)
            with self._lock:
                self._handed.pop(threading.current_thread(), None)

    def _close(self, client: _Client, reason: str | None = None) -> None:
        sock = client.conn.sock
        if self._clients.pop(sock.fileno(), None) is None:
            return
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        client.session.close(reason)
        sock.close()
        self._release(client.conn)
        client.busy = False

    def _release(self, conn: Connection) -> None:
        with self._lock:
            self._uncount(conn)

    def _count(self) -> int:
        return self._active

    def _uncount(self, conn: Connection) -> None:
        if conn.uncounted:  # shed (``_make_room``) before it ended
            return
        conn.uncounted = True
        self._active -= 1
        self._per_ip[conn.peer_ip] -= 1
        if self._per_ip[conn.peer_ip] <= 0:
            del self._per_ip[conn.peer_ip]

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection, wait for the loop and the TLS threads."""
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread:
            self._thread.join(timeout)
        if self._pending:
            self._pending.stop()
        if self._sock:
            self._sock.close()
        with self._lock:
            handed = list(self._handed.values())
            threads = list(self._handed)
        for conn in handed:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(timeout)
        self._wake_r.close()
        self._wake_w.close()
