"""A whole forgelab: lab world, store, event bus, SMTP and POP3 servers, started and stopped together."""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import resource
import threading
from dataclasses import fields
from pathlib import Path
from typing import Callable

from .store import nofollow
from . import speedups
from .lab.dns import Resolver
from .errors import ConfigError, DataDirError
from .core.events import EventBus, JsonlLog
from .lab import Lab, load_lab
from .core.login_throttle import LoginThrottle
from .core.pipeline import ServerContext
from .core.policy import Policy, load_policy
from .drivers.connection import Limits
from .drivers.listening import parse_hostport
from .drivers.pop3 import Pop3Server
from .drivers.smtp import SmtpServer
from .settings import Settings
from .store import MailStore
from .lab.tls import lab_server_context
from .drivers.workers import WorkerPool, check_workers

__all__ = ["Forgelab", "LabContext", "Settings", "server_context", "server_limits"]

log = logging.getLogger(__name__)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "forgelab"


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (workers inherit it):
    the usual soft 1,024 is what a thousand held web connections used to exhaust. Returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else hard  # the kernel refuses an infinite one
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("the open-files limit stays %s: %s", soft, exc)
    return soft


def private_data_dir(path: Path) -> Path:
    """``path`` made (0700), or made 0700 if others could enter it: it holds everyone's mail and the event log."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(exc.errno, f"data directory {path} cannot be made: {exc.strerror or exc}; "
                                      "give another with --data") from None
    if not path.is_dir():
        raise DataDirError(0, f"data directory {path} is not a directory; give another with --data")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        try:
            path.chmod(0o700)
            log.warning("data directory %s was mode %o: made 0700", path, mode)
        except OSError as exc:
            log.warning("data directory %s is mode %o and could not be made 0700: %s", path, mode, exc)
    return path


LOCK_NAME = ".lock"


class DataDirLock:
    """``DATA/.lock`` under ``flock`` for as long as this lab runs: a second lab on the same data
    directory stops with the first one's pid. The kernel drops the lock when the process ends,
    so a killed lab leaves nothing stale behind. Worker processes never take it (nor inherit it)."""

    def __init__(self, data_dir: Path):
        fd = nofollow.open_fd(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = "".join(c for c in os.pread(fd, 32, 0).decode("ascii", "replace") if c.isdigit()) or "unknown"
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataDirError(exc.errno, f"data directory {data_dir}: cannot lock {LOCK_NAME}: "
                                              f"{exc.strerror or exc}") from None
            raise DataDirError(errno.EBUSY, f"data directory {data_dir} is in use by another forgelab (pid {pid}); "
                                            "stop that one, or give another with --data") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def attach_resolver(lab: Lab, settings: Settings) -> None:
    if settings.dns == "system":
        lab.resolver = Resolver.system()
    else:
        lab.resolver = Resolver.lab(settings.zone_file) if settings.zone_file else Resolver.lab()


# LoginThrottle setting -> the [server] key that sets it.
THROTTLE_KEYS = {"free_failures": "login_free_failures", "user_free_failures": "login_user_free_failures",
                 "delay": "login_delay", "max_delay": "login_max_delay",
                 "ip_free_failures": "login_ip_free_failures", "ip_max_delay": "login_ip_max_delay"}
# Limits field -> the [server] key that sets it, where the names differ.
LIMIT_KEYS = {"max_per_ip": "max_connections_per_ip"}


def throttle_settings(settings: Settings, policy: Policy) -> dict:
    """The LoginThrottle settings under ``policy``."""
    effective = settings.for_policy(policy)
    return {name: getattr(effective, key) for name, key in THROTTLE_KEYS.items()}


def login_throttle(settings: Settings, policy: Policy) -> LoginThrottle:
    return LoginThrottle(**throttle_settings(settings, policy))


def server_limits(settings: Settings, policy: Policy) -> Limits:
    """The drivers' limits under ``policy``: each Limits field a [server] key sets (settings.py)."""
    effective = settings.for_policy(policy)
    keys = {f.name: LIMIT_KEYS.get(f.name, f.name) for f in fields(Limits)}
    return Limits(**{name: getattr(effective, key) for name, key in keys.items() if hasattr(effective, key)})


class LabContext(ServerContext):
    """The context of a running lab. A policy switch (web view, API, a worker's wire) also gives
    the servers the new policy's ``[server]`` limits, for the connections that come after it
    (``servers``), and the login throttle its settings (its counts stay), and passes the switch
    on to the worker processes (``pool``)."""

    def __init__(self, *args, settings: Settings = Settings(), **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.servers: tuple = ()  # each has a ``limits`` attribute that new connections take
        self.pool: WorkerPool | None = None
        self._switching = threading.Lock()  # one switch at a time: main and workers never end on different policies

    def set_policy(self, policy: Policy) -> None:
        if self.pool and not policy.source:
            raise ConfigError(f"policy {policy.name!r} has no file the worker processes could load; "
                              "load it from a file or a shipped name")
        with self._switching:
            super().set_policy(policy)  # first: a policy whose plugins cannot load changes nothing
            limits = server_limits(self.settings, policy)
            for server in self.servers:
                server.limits = limits
            for name, value in throttle_settings(self.settings, policy).items():
                setattr(self.login_throttle, name, value)
            if self.pool:
                self.pool.switch(policy)


def server_context(settings: Settings, data_dir: Path, bus: EventBus) -> LabContext:
    """The lab with its DNS, the policy and its plugins, the store, the lab certificate and the
    login throttle: what a process serving SMTP needs (``Forgelab``, and each worker of ``--workers``)."""
    lab = load_lab(settings.users_file)
    attach_resolver(lab, settings)
    policy = settings.policy if isinstance(settings.policy, Policy) else load_policy(settings.policy)
    tls = lab_server_context(data_dir, lab.hostname, settings.tls_cert, settings.tls_key) if settings.tls else None
    return LabContext(lab, MailStore(data_dir / "mail"), bus, policy, settings.plugins, tls=tls,
                      login_throttle=login_throttle(settings, policy), settings=settings)


class Forgelab:
    """A lab: its world, store, event bus and servers, started and stopped together.

    :param web_view: makes the web view, ``web_view(lab, host, port)`` (``forgelab.web.WebServer``),
        when ``settings.web`` gives its address. Passed in, not imported: the web view is a
        consumer of the lab, and the lab never imports it.
    """

    def __init__(self, settings: Settings, bus: EventBus | None = None,
                 web_view: Callable[["Forgelab", str, int], object] | None = None):
        speedups.install()  # unless FORGELAB_SPEEDUPS=0: docs/performance.md
        self.settings = settings
        self.data_dir = private_data_dir(Path(settings.data_dir or default_data_dir()))
        for inside in ("mail", "tls", "events.jsonl", "spool"):  # the directory may be a symlink (the user's choice); what is inside must not
            if (self.data_dir / inside).is_symlink():
                raise nofollow.refuse(self.data_dir / inside)
        if settings.web and web_view is None:
            raise ConfigError(f"settings.web is {settings.web!r} but no web_view was given: "
                              "pass web_view=forgelab.web.WebServer, or web=None")
        self.data_lock = DataDirLock(self.data_dir)  # before anything in it is made or read
        try:
            self._make(settings, bus, web_view)
        except BaseException:
            self.data_lock.release()
            raise

    def _make(self, settings: Settings, bus: EventBus | None, web_view) -> None:
        self.bus = bus or EventBus()
        self.workers = None
        # The lab certificate is made here, before any worker process starts: they load the same one.
        self.context = server_context(settings, self.data_dir, self.bus)
        self.context.spool.clear()  # what a server that died in the middle of DATA left; before any worker starts
        self.lab: Lab = self.context.lab
        self.store = self.context.store
        self.tls = self.context.tls
        policy = self.context.rules.policy
        check_workers(settings.workers, policy)
        # One throttle for POP3 logins and SMTP AUTH: a guesser gains nothing by switching.
        throttle = self.context.login_throttle
        limits = server_limits(settings, policy)
        self._log = JsonlLog(self.data_dir / "events.jsonl", max_bytes=settings.event_log_max,
                             keep=settings.event_log_keep, rate=settings.event_log_rate) if settings.event_log else None
        if self._log:
            self.bus.subscribe(self._log)
        smtp_host, smtp_port = parse_hostport(settings.smtp)
        pop3_host, pop3_port = parse_hostport(settings.pop3)
        self.smtp = SmtpServer(self.context, smtp_host, smtp_port, limits, reuse_port=settings.workers > 1,
                               driver=settings.driver)
        self.pop3 = Pop3Server(self.store, self.lab.directory, self.bus, pop3_host, pop3_port, limits, tls=self.tls,
                               throttle=throttle)
        # The implicit-TLS ports (RFC 8314): in this process only, also with --workers.
        self.smtps = self.pop3s = None
        if (settings.smtps or settings.pop3s) and self.tls is None:
            raise ConfigError("the implicit-TLS ports (smtps, pop3s) need TLS: set them off, or turn tls on")
        if settings.smtps:
            self.smtps = SmtpServer(self.context, *parse_hostport(settings.smtps), limits, implicit_tls=True)
        if settings.pop3s:
            self.pop3s = Pop3Server(self.store, self.lab.directory, self.bus, *parse_hostport(settings.pop3s), limits,
                                    tls=self.tls, throttle=throttle, implicit_tls=True)
        # A policy switch gives them its limits.
        self.context.servers = tuple(s for s in (self.smtp, self.pop3, self.smtps, self.pop3s) if s)
        # Made before the servers start: it subscribes to the bus and must see every event.
        self.web = web_view(self, *parse_hostport(settings.web)) if settings.web else None

    def start(self) -> "Forgelab":
        started = []
        try:
            for server in (self.smtp, self.pop3, self.smtps, self.pop3s, self.web):
                if server:
                    server.start()
                    started.append(server)
            if self.settings.workers > 1:
                # After our SMTP socket is bound: the workers join its real port (it may have been 0).
                self.workers = WorkerPool(self.settings, self.data_dir, self.smtp.address, self.bus,
                                          self.context.login_throttle)
                self.context.pool = self.workers
                self.workers.start(self.settings.workers - 1, self.context.rules.policy)
        except Exception:
            for server in reversed(started):
                server.stop()
            raise
        return self

    def stop(self) -> None:
        if self.workers:  # first: their last events still reach the log and the web view
            self.workers.stop()
        if self.web:
            self.web.stop()
        for server in (self.smtp, self.pop3, self.smtps, self.pop3s):
            if server:
                server.stop()
        if self._log:
            self.bus.unsubscribe(self._log)
            self._log.close()
        self.data_lock.release()

    def __enter__(self) -> "Forgelab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
