"""One worker process of ``serve --workers N`` (``python -m forgelab _smtp-worker CONFIG``).

It serves SMTP on the main process's port with the same lab, store, policy and plugins, and
speaks the wire ``workers.py`` describes: its events on stdout, control lines on stdin. A
policy switch from the main process goes through ``LabContext.set_policy``, as a switch in
the main process does, so the new policy's ``[server]`` limits reach this SMTP server too.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import IO

from ..app import LabContext, Settings, server_context, server_limits
from ..core.event_records import WorkerFailed, WorkerPolicy, WorkerReady
from ..core.events import EventBus, JsonlLog
from ..core.log_budget import LogBudget
from .. import speedups
from ..core.policy import load_policy
from .listening import parse_hostport
from .smtp import SmtpServer
from .workers import pin_to, throttle_change, throttle_line


def worker_main(config_text: str, stdin: IO[bytes] | None = None) -> int:
    """Run one SMTP worker until its stdin ends or SIGTERM; returns the exit code."""
    speedups.install(process=True)  # as serve does for the main process (FORGELAB_SPEEDUPS is inherited)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the main process stops us
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Our stdout carries the events; anything else printed goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    try:  # room for bursts of events: a full pipe would stop our SMTP loop until the main process reads
        fcntl.fcntl(out.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    except (AttributeError, OSError):  # not Linux, not a pipe, or over the system's limit
        pass
    os.dup2(2, 1)
    stdin = stdin or sys.stdin.buffer
    bus = EventBus()
    stream = JsonlLog(stream=out)
    bus.subscribe(stream)
    smtp = None
    try:
        config = json.loads(config_text)
        stream.budget = LogBudget(config["event_log_rate"]) if config.get("event_log_rate") else None  # before any session
        pin_to(config.get("cpu"))
        settings = Settings(smtp=config["smtp"], data_dir=Path(config["data_dir"]),
                            users_file=_opt_path(config.get("users_file")), policy=config["policy"],
                            plugins=tuple(config.get("plugins", ())), zone_file=_opt_path(config.get("zone_file")),
                            dns=config.get("dns", "lab"), event_log=False, tls=bool(config.get("tls", True)),
                            tls_cert=_opt_path(config.get("tls_cert")), tls_key=_opt_path(config.get("tls_key")),
                            driver=config.get("driver", "threads"))
        context = server_context(settings, settings.data_dir, bus)
        policy = context.rules.policy
        smtp = SmtpServer(context, *parse_hostport(settings.smtp), server_limits(settings, policy), reuse_port=True,
                          driver=settings.driver).start()
        context.servers = (smtp,)  # a policy switch gives it the new policy's limits
    except Exception as exc:  # said once, on the wire: the main process makes it one line for the user
        bus.publish(WorkerFailed(os.getpid(), str(exc) or type(exc).__name__))
        stream.close()
        return 1
    # Our throttle's changes go to the main process, which passes them on (never an event).
    context.login_throttle.on_change = lambda *change: stream(throttle_line(*change))
    bus.publish(WorkerReady(os.getpid(), list(smtp.address)))
    bus.flush()  # the main process waits for this
    reader = threading.Thread(target=_read_control, args=(stdin, context, bus, stop), name="forgelab-control",
                              daemon=True)
    reader.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        smtp.stop()
        bus.unsubscribe(stream)
        stream.close()
    return 0


def _opt_path(value) -> Path | None:
    return Path(value) if value else None


def _read_control(stdin: IO[bytes], context: LabContext, bus: EventBus, stop: threading.Event) -> None:
    """Control lines from the main process; end of input stops the worker."""
    try:
        for line in stdin:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("policy"):
                try:
                    policy = load_policy(message["policy"])
                    context.set_policy(policy)
                except Exception as exc:
                    bus.publish(WorkerPolicy(error=str(exc) or type(exc).__name__))
                else:
                    bus.publish(WorkerPolicy(name=policy.name))
                bus.flush()  # the main process waits for this answer
            elif isinstance(message, dict) and "throttle" in message:
                change = throttle_change(message["throttle"])
                if change:
                    context.login_throttle.seen_elsewhere(*change)
    except (OSError, ValueError):
        pass
    finally:
        stop.set()
