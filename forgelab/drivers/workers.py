"""``forgelab serve --workers N``: N-1 more processes serving SMTP on the same port.

One CPython process is bound by the GIL, so the main process (SMTP, POP3, web view,
terminal, JSONL log) starts worker processes (``python -m forgelab _smtp-worker CONFIG``,
``worker_process.py``)
that listen on the same SMTP address with SO_REUSEPORT; the kernel spreads the
connections between the processes. A worker has the same lab, store (data directory),
policy, plugins and TLS certificate, and nothing else: no POP3, no web view, no log.

The wire between the main process and a worker is one JSON object per line:

- worker -> main (the worker's stdout): every event of the worker's bus, as the JSONL log
  writes it, republished on the main bus with ``worker`` (its pid) and ``worker_seq`` added;
  plus ``worker.ready`` once it listens, ``worker.failed`` (``error``) if it cannot start,
  ``worker.policy`` (``name`` or ``error``) after each switch. Those three, and the worker's
  own ``policy.changed``, are kept between the processes (the main bus announced the switch).
  ``{"throttle": [KIND, IP, NAME, AFTER]}``: its login throttle gave a login of user NAME
  from IP a slot AFTER seconds from now (KIND ``attempt``, sent only for a name with
  counts), counted it failed (``failure``) or a right password (``success``); never an event.
- main -> worker (its stdin): ``{"policy": SOURCE}`` switches policy (``load_policy(SOURCE)``), its
  ``[server]`` limits for new connections included;
  ``{"throttle": [KIND, IP, NAME, AFTER]}`` is a change another process counted (the main's own, or a
  worker's passed on to every other worker); end of input (the main process stopped or died)
  stops the worker.

Shared: the login throttle (POP3 and SMTP AUTH). Each process keeps its own counts and applies
every other process's slots taken, failures and successes (``LoginThrottle.seen_elsewhere``):
a guesser whose connections land on different processes is slowed as by one process. The sharing is
eventually consistent: a change reaches the others a few tens of milliseconds later (a
worker's event lines are written every ``JsonlLog.FLUSH_DELAY``). Only the address and the
user name (at most 64 characters) and the slot's time cross the wire, never a password.

Per process, not shared: the connection caps (``max_connections``, ``max_connections_per_ip``).
"""
from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterable

from ..errors import WorkerError
from ..core.events import EventBus, decode
from ..core.policy import Policy

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0   # seconds a worker has to say it listens
SWITCH_TIMEOUT = 10.0  # seconds the workers have to take a new policy
STOP_TIMEOUT = 10.0    # seconds a worker has to stop after its stdin closes, before SIGTERM
# Records of the wire itself, never republished on the main bus.
WIRE_KINDS = ("worker.ready", "worker.failed", "worker.policy", "policy.changed")
WIRE_KINDS_BYTES = tuple(kind.encode() for kind in WIRE_KINDS)
THROTTLE_KINDS = ("attempt", "failure", "success")
MAX_THROTTLE_FIELD = 256  # characters of an address or user name on the wire (the throttle keeps 64)
SHARE_QUEUE = 10_000  # throttle changes waiting to be sent to the workers; more are dropped
# The first keys of a line as the worker's JsonlLog encodes every record: seq, ts, kind, then more.
_ENCODED_HEAD = re.compile(rb'\{"seq":(\d+),"ts":[0-9.e+-]+,"kind":"([a-z0-9_.-]+)",')


def max_workers() -> int:
    return (os.cpu_count() or 1) * 4


def check_workers(count: int, policy: Policy) -> None:
    """Raise WorkerError if ``count`` processes cannot serve ``policy`` here."""
    if count > 1 and not hasattr(socket, "SO_REUSEPORT"):
        raise WorkerError("--workers needs SO_REUSEPORT (Linux); use --workers 1 here")
    if count > 1 and not policy.source:
        raise WorkerError(f"--workers needs a policy loaded from a file or a shipped name, not {policy.name!r} made in memory")


def _hostport(address: tuple[str, int]) -> str:
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _path(value) -> str | None:
    return str(Path(value).resolve()) if value else None


def process_cpus(count: int) -> list[int | None]:
    """The CPU for each of ``count`` SMTP processes (the main one first), taken in turn from
    the CPUs we may use; all None where a process cannot be pinned or there is one CPU."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return [None] * count
    if len(cpus) < 2:
        return [None] * count
    return [cpus[i % len(cpus)] for i in range(count)]


def pin_to(cpu: int | None) -> None:
    """Run every thread of this process, and the threads they start later, on ``cpu`` alone.

    A CPython process runs Python on one CPU at a time anyway (the GIL); pinned, the hand-offs
    of the GIL between its threads stay on that CPU instead of waking threads on the others.
    """
    if cpu is None:
        return
    pinned: set[str] = set()
    for _ in range(3):  # again for a thread started meanwhile by one not pinned yet
        try:
            threads = set(os.listdir("/proc/self/task")) - pinned
        except OSError:
            return
        if not threads:
            return
        for tid in threads:
            try:
                os.sched_setaffinity(int(tid), {cpu})
            except (OSError, ValueError):  # a thread that just ended, or the CPU went away
                pass
        pinned |= threads


def worker_config(settings, data_dir: Path, address: tuple[str, int], policy: Policy) -> dict:
    """What a worker needs of the serve settings, as JSON: the bound SMTP address, not the asked one."""
    return {"smtp": _hostport(address), "data_dir": _path(data_dir), "users_file": _path(settings.users_file),
            "policy": policy.source, "plugins": list(settings.plugins), "zone_file": _path(settings.zone_file),
            "dns": settings.dns, "tls": bool(settings.tls), "tls_cert": _path(settings.tls_cert),
            "tls_key": _path(settings.tls_key), "driver": settings.driver, "event_log_rate": settings.event_log_rate}


def throttle_change(value) -> tuple[str, str, str, float] | None:
    """A ``[KIND, IP, NAME, AFTER]`` read from the wire as the throttle takes it, or None if it is not one."""
    if (isinstance(value, list) and len(value) == 4 and value[0] in THROTTLE_KINDS
            and all(isinstance(v, str) and len(v) <= MAX_THROTTLE_FIELD for v in value[1:3])
            and isinstance(value[3], (int, float)) and not isinstance(value[3], bool) and math.isfinite(value[3])):
        return value[0], value[1], value[2], float(value[3])
    return None


def throttle_line(kind: str, ip: str, name: str, after: float) -> bytes:
    """The wire line (without its newline) of one throttle change."""
    return json.dumps({"throttle": [kind, ip[:MAX_THROTTLE_FIELD], name[:MAX_THROTTLE_FIELD], round(after, 6)]}).encode()


class EventForwarder:
    """Reads one worker's JSON lines and republishes its events on the main bus; its throttle
    changes go to ``on_throttle(pid, (kind, ip, name, after))``, never on the bus."""

    def __init__(self, bus: EventBus, pid: int, on_throttle=None):
        self.bus = bus
        self.pid = pid
        self.on_throttle = on_throttle
        self.ready = threading.Event()  # set on worker.ready, worker.failed or end of output
        self.error: str | None = None
        self.address: list | None = None
        self.ended = False
        self.switches = 0
        self.switch_error: str | None = None
        self._switched = threading.Condition()

    def feed(self, line: bytes) -> None:
        head = _ENCODED_HEAD.match(line)
        if head and head[2] not in WIRE_KINDS_BYTES and line.endswith(b"}\n"):
            # Our own encoder's line: renumbered and passed on without decoding it (see publish_encoded).
            self.bus.publish_encoded(b'%b,"worker_seq":%b,"worker":%d}' % (line[head.end(1) + 1:-2], head[1], self.pid))
            return
        try:
            record = decode(line)
        except ValueError:
            log.warning("SMTP worker %d wrote a line that is not JSON: %r", self.pid, line[:200])
            return
        if isinstance(record, dict) and "throttle" in record:
            change = throttle_change(record["throttle"])
            if change and self.on_throttle:
                self.on_throttle(self.pid, change)
            return
        if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
            return
        kind = record.pop("kind")
        if kind in WIRE_KINDS:
            self._wire(kind, record)
            return
        record["worker_seq"] = record.pop("seq", None)
        record["worker"] = self.pid
        self.bus.publish(kind, **record)  # the worker's ts is kept; the main bus numbers it (seq)

    def _wire(self, kind: str, record: dict) -> None:
        if kind == "worker.ready":
            self.address = record.get("address")
            self.ready.set()
        elif kind == "worker.failed":
            self.error = str(record.get("error") or "failed")
            self.ready.set()
        elif kind == "worker.policy":
            with self._switched:
                self.switches += 1
                self.switch_error = record.get("error")
                self._switched.notify_all()

    def run(self, stream: Iterable[bytes]) -> None:
        """Feed every line of ``stream`` (the worker's stdout) until it ends."""
        try:
            for line in stream:
                if line.strip():
                    try:
                        self.feed(line)
                    except Exception:  # one odd record must not stop the forwarding
                        log.exception("SMTP worker %d: event not forwarded", self.pid)
        except (OSError, ValueError):
            pass
        finally:
            self.ended = True
            self.ready.set()
            with self._switched:
                self._switched.notify_all()

    def wait_switch(self, after: int, timeout: float) -> bool:
        with self._switched:
            return self._switched.wait_for(lambda: self.switches > after or self.ended, timeout)


class Worker:
    def __init__(self, proc: subprocess.Popen, forwarder: EventForwarder, thread: threading.Thread):
        self.proc, self.forwarder, self.thread = proc, forwarder, thread

    @property
    def pid(self) -> int:
        return self.proc.pid


class WorkerPool:
    """The worker processes of one ``Forgelab``: started, switched and stopped together."""

    def __init__(self, settings, data_dir: Path, address: tuple[str, int], bus: EventBus, throttle=None):
        self.settings = settings
        self.data_dir = Path(data_dir)
        self.address = address
        self.bus = bus
        self.throttle = throttle  # the main process's LoginThrottle, shared with the workers
        self.workers: list[Worker] = []
        self.stopping = False
        self._switch_lock = threading.Lock()
        self._write_lock = threading.Lock()  # one line at a time on the workers' stdin
        # Throttle changes to send: (line, pid of the worker it came from or None); a thread of
        # ours writes them, so no login waits on a worker's pipe.
        self._shared: queue.Queue = queue.Queue(SHARE_QUEUE)
        self._sender: threading.Thread | None = None
        self._dropped = False

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def start(self, count: int, policy: Policy, timeout: float = START_TIMEOUT) -> "WorkerPool":
        config = worker_config(self.settings, self.data_dir, self.address, policy)
        if self.throttle is not None:
            self._sender = threading.Thread(target=self._send_shared, name="forgelab-throttle-share", daemon=True)
            self._sender.start()
            self.throttle.on_change = lambda *change: self._share(throttle_line(*change), None)
        # One CPU per SMTP process, ours first (serve only: a program that embeds forgelab keeps its CPUs).
        cpus = process_cpus(count + 1) if self.settings.pin_cpus else [None] * (count + 1)
        try:
            for cpu in cpus[1:]:  # all start at once, then we wait for each
                self.workers.append(self._spawn(json.dumps({**config, "cpu": cpu})))
            deadline = time.monotonic() + timeout
            for worker in self.workers:
                if not worker.forwarder.ready.wait(max(deadline - time.monotonic(), 0)):
                    raise WorkerError(f"SMTP worker process {worker.pid} did not start within {timeout:g} s")
                if worker.forwarder.error or worker.forwarder.ended:
                    code = worker.proc.poll()
                    why = worker.forwarder.error or f"exited{f' with code {code}' if code is not None else ''}"
                    raise WorkerError(f"SMTP worker process {worker.pid} failed to start: {why}")
        except BaseException:
            self.stop()
            raise
        pin_to(cpus[0])
        return self

    def _spawn(self, config: str) -> Worker:
        # stderr is ours (a worker's warnings show in the terminal); stdout carries its events.
        # -P: the installed forgelab, whatever the current directory holds (without it, a folder
        # named forgelab there would be imported instead).
        proc = subprocess.Popen([sys.executable, "-P", "-m", "forgelab", "_smtp-worker", config],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        forwarder = EventForwarder(self.bus, proc.pid, self._from_worker)
        thread = threading.Thread(target=self._forward, args=(proc, forwarder),
                                  name=f"forgelab-worker-{proc.pid}", daemon=True)
        thread.start()
        return Worker(proc, forwarder, thread)

    def _forward(self, proc: subprocess.Popen, forwarder: EventForwarder) -> None:
        forwarder.run(proc.stdout)
        if not self.stopping and forwarder.ready.is_set() and not forwarder.error:
            code = proc.wait()
            log.error("SMTP worker process %d exited (code %s); the other processes go on serving", proc.pid, code)

    def _from_worker(self, pid: int, change: tuple[str, str, str, float]) -> None:
        """A worker's throttle counted a change: ours applies it, and every other worker's."""
        if self.throttle is not None:
            self.throttle.seen_elsewhere(*change)
            self._share(throttle_line(*change), pid)

    def _share(self, line: bytes, source: int | None) -> None:
        try:
            self._shared.put_nowait((line, source))
        except queue.Full:  # the workers do not read: their counts lag, ours still hold
            if not self._dropped:  # said once, not for every login
                self._dropped = True
                log.warning("login throttle changes not shared with the SMTP workers (they are not reading)")

    def _send_shared(self) -> None:
        while True:
            item = self._shared.get()
            if item is None:
                return
            line, source = item
            for worker in list(self.workers):
                if worker.pid != source:
                    self._write(worker, line + b"\n")

    def _write(self, worker: Worker, line: bytes) -> bool:
        with self._write_lock:
            try:
                worker.proc.stdin.write(line)
                worker.proc.stdin.flush()
                return True
            except (OSError, ValueError):
                return False

    def switch(self, policy: Policy, timeout: float = SWITCH_TIMEOUT) -> None:
        """Send ``policy`` to every worker and wait until each has taken it (or the timeout)."""
        line = (json.dumps({"policy": policy.source}) + "\n").encode()
        with self._switch_lock:
            sent = []
            for worker in self.workers:
                before = worker.forwarder.switches
                if not self._write(worker, line):
                    log.warning("SMTP worker process %d is gone: policy not switched there", worker.pid)
                    continue
                sent.append((worker, before))
            deadline = time.monotonic() + timeout
            for worker, before in sent:
                if not worker.forwarder.wait_switch(before, max(deadline - time.monotonic(), 0)):
                    log.warning("SMTP worker process %d did not confirm the switch to %s", worker.pid, policy.name)
                elif worker.forwarder.switch_error:
                    log.warning("SMTP worker process %d kept its policy: %s", worker.pid, worker.forwarder.switch_error)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Close each worker's stdin (it stops), then SIGTERM, then SIGKILL; wait for its last events."""
        self.stopping = True
        if self.throttle is not None:
            self.throttle.on_change = None
        if self._sender:
            try:
                self._shared.put_nowait(None)
            except queue.Full:
                pass
            self._sender.join(2)
        for worker in self.workers:
            try:
                worker.proc.stdin.close()
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            _end(worker.proc, max(deadline - time.monotonic(), 0.1))
        for worker in self.workers:
            worker.thread.join(5)
            try:
                worker.proc.stdout.close()
            except (OSError, ValueError):
                pass


def _end(proc: subprocess.Popen, grace: float) -> None:
    for step, wait in ((None, grace), (proc.terminate, 3.0), (proc.kill, 5.0)):
        if step:
            try:
                step()
            except OSError:
                return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
