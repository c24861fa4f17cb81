"""A whole forgelab: lab world, store, event bus, SMTP and POP3 servers, started and stopped together."""
from __future__ import annotations

import logging
import os
import resource
from dataclasses import dataclass
from pathlib import Path

from . import nofollow
from .dns import Resolver
from .events import EventBus, JsonlLog
from .lab import Lab, load_lab
from .login_throttle import LoginThrottle
from .pipeline import ServerContext
from .policy import Policy, load_policy
from .server.base import Limits, parse_hostport
from .server.pop3 import Pop3Server
from .server.smtp import SmtpServer
from .store import MailStore
from .tls import lab_server_context
from .workers import PooledContext, WorkerPool, check_workers


log = logging.getLogger(__name__)

EVENT_LOG_MAX = 64 * 1024 * 1024  # bytes of events.jsonl before it is rotated (serve --event-log-max)
EVENT_LOG_KEEP = 3                # rotated files kept: events.jsonl.1 ... .3 (serve --event-log-keep)
EVENT_LOG_RATE = 128 * 1024       # bytes a second of records per client address (serve --event-log-rate)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "forgelab"


@dataclass
class Settings:
    smtp: str = "127.0.0.1:1025"
    pop3: str = "127.0.0.1:1110"
    data_dir: Path | None = None
    users_file: Path | None = None
    policy: str | Policy = "observe"
    plugins: tuple[str, ...] = ()
    zone_file: Path | None = None
    dns: str = "lab"
    event_log: bool = True
    tls: bool = True  # offer STARTTLS; with no cert given, a lab certificate is made in data_dir/tls
    tls_cert: Path | None = None
    tls_key: Path | None = None
    web: str | None = None  # HOST:PORT of the web view, None for none
    workers: int = 1  # SMTP processes; more than 1 starts worker processes on the same port (workers.py)
    driver: str = "threads"  # SMTP socket driver: threads or selector (server/smtp.py)
    pin_cpus: bool = False  # with workers: each SMTP process on a CPU of its own (workers.pin_to); serve sets it
    event_log_max: int = EVENT_LOG_MAX  # 0: never rotated
    event_log_keep: int = EVENT_LOG_KEEP
    event_log_rate: int = EVENT_LOG_RATE  # 0: no budget; each worker process applies its own


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
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        try:
            path.chmod(0o700)
            log.warning("data directory %s was mode %o: made 0700", path, mode)
        except OSError as exc:
            log.warning("data directory %s is mode %o and could not be made 0700: %s", path, mode, exc)
    return path


def attach_resolver(lab: Lab, settings: Settings) -> None:
    if settings.dns == "system":
        lab.resolver = Resolver.system()
    else:
        lab.resolver = Resolver.lab(settings.zone_file) if settings.zone_file else Resolver.lab()


# Policy key -> LoginThrottle setting; the defaults are LoginThrottle's own.
THROTTLE_KEYS = {"login_free_failures": "free_failures", "login_user_free_failures": "user_free_failures",
                 "login_delay": "delay", "login_max_delay": "max_delay",
                 "login_ip_free_failures": "ip_free_failures", "login_ip_max_delay": "ip_max_delay"}


def login_throttle(policy: Policy) -> LoginThrottle:
    return LoginThrottle(**{name: type(getattr(LoginThrottle, name))(policy.setting(key, getattr(LoginThrottle, name)))
                            for key, name in THROTTLE_KEYS.items()})


def server_limits(policy: Policy) -> Limits:
    default = Limits()
    return Limits(idle_timeout=float(policy.setting("idle_timeout", default.idle_timeout)),
                  session_timeout=float(policy.setting("session_timeout", default.session_timeout)),
                  max_connections=int(policy.setting("max_connections", default.max_connections)),
                  max_per_ip=int(policy.setting("max_connections_per_ip", default.max_per_ip)),
                  shed_idle_after=float(policy.setting("shed_idle_after", default.shed_idle_after)),
                  min_data_rate=float(policy.setting("min_data_rate", default.min_data_rate)),
                  max_errors=int(policy.setting("max_errors", default.max_errors)),
                  max_commands=int(policy.setting("max_commands", default.max_commands)))


def server_context(settings: Settings, data_dir: Path, bus: EventBus,
                   context_class: type[ServerContext] = ServerContext) -> ServerContext:
    """The lab with its DNS, the policy and its plugins, the store, the lab certificate and the
    login throttle: what a process serving SMTP needs (``Forgelab``, and each worker of ``--workers``)."""
    lab = load_lab(settings.users_file)
    attach_resolver(lab, settings)
    policy = settings.policy if isinstance(settings.policy, Policy) else load_policy(settings.policy)
    tls = lab_server_context(data_dir, lab.hostname, settings.tls_cert, settings.tls_key) if settings.tls else None
    return context_class(lab, MailStore(data_dir / "mail"), bus, policy, settings.plugins, tls=tls,
                         login_throttle=login_throttle(policy))


class Forgelab:
    def __init__(self, settings: Settings, bus: EventBus | None = None):
        self.settings = settings
        self.data_dir = private_data_dir(Path(settings.data_dir or default_data_dir()))
        for inside in ("mail", "tls", "events.jsonl", "spool"):  # the directory may be a symlink (the user's choice); what is inside must not
            if (self.data_dir / inside).is_symlink():
                raise nofollow.refuse(self.data_dir / inside)
        self.bus = bus or EventBus()
        self.workers = None
        # With workers, a policy switch must reach them too (PooledContext.set_policy). The lab
        # certificate is made here, before any worker process starts: they load the same one.
        self.context = server_context(settings, self.data_dir, self.bus,
                                      PooledContext if settings.workers > 1 else ServerContext)
        self.context.spool.clear()  # what a server that died in the middle of DATA left; before any worker starts
        self.lab: Lab = self.context.lab
        self.store = self.context.store
        self.tls = self.context.tls
        policy = self.context.rules.policy
        check_workers(settings.workers, policy)
        # One throttle for POP3 logins and SMTP AUTH: a guesser gains nothing by switching.
        throttle = self.context.login_throttle
        limits = server_limits(policy)
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
        self.web = None
        if settings.web:
            from .web import WebServer

            # Made before the servers start: it subscribes to the bus and must see every event.
            self.web = WebServer(self, *parse_hostport(settings.web))

    def start(self) -> "Forgelab":
        started = []
        try:
            for server in (self.smtp, self.pop3, self.web):
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
        self.smtp.stop()
        self.pop3.stop()
        if self._log:
            self.bus.unsubscribe(self._log)
            self._log.close()

    def __enter__(self) -> "Forgelab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
