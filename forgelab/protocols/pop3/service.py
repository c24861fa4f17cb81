"""The business behind POP3 events: logins against the directory, the maildrop, the replies.

The sans-IO core decides what a line means and whether it may come now; this class
decides what the answer is. One ``Pop3Service`` per session; logins go through the
server's ``LoginThrottle`` (``forgelab/core/login_throttle.py``, shared with SMTP AUTH).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from typing import Callable

from ...lab.directory import Directory, User
from ...core.login_throttle import LoginThrottle
from ...store import Maildrop, MaildropLocked, MailStore, MessageDeleted, NoSuchMessage
from . import events as ev
from . import replies as r
from .commands import CAPABILITIES
from .replies import Pop3Reply
from .wire import top


def _messages(count: int) -> str:
    return f"{count} message" if count == 1 else f"{count} messages"


_stamp_lock = threading.Lock()
_last_stamp = 0


def apop_timestamp(hostname: str) -> str:
    """A greeting timestamp ``<pid.clock@host>`` that is different for every session (RFC 1939 7)."""
    global _last_stamp
    with _stamp_lock:
        _last_stamp = max(time.time_ns(), _last_stamp + 1)
        clock = _last_stamp
    return f"<{os.getpid()}.{clock}@{hostname}>"


class Pop3Service:
    """Answers the events of one POP3 session.

    :param store: where the maildrops live.
    :param directory: users and their passwords.
    :param peer_ip: the client address, for the login throttle.
    :param hostname: the host named in the greeting timestamp.
    :param throttle: shared by every session of a server; None for no throttling.
    :param sleep: how to wait out a throttled login (the session's own thread waits).
    """

    def __init__(self, store: MailStore, directory: Directory, *, peer_ip: str = "127.0.0.1",
                 hostname: str = "localhost", throttle: LoginThrottle | None = None,
                 sleep: Callable[[float], object] = time.sleep, tls_available: bool = False):
        self.store = store
        self.tls_available = tls_available
        self.tls_active = False  # set by the driver once the STLS handshake is done
        self.directory = directory
        self.peer_ip = peer_ip
        self.throttle = throttle
        self.sleep = sleep
        self.timestamp = apop_timestamp(hostname)
        self.user: User | None = None
        self.maildrop: Maildrop | None = None
        self._name: str | None = None  # from USER, waiting for PASS

    def greeting(self) -> Pop3Reply:
        return Pop3Reply.ok(f"forgelab POP3 server ready {self.timestamp}")

    def handle(self, event: ev.Event) -> Pop3Reply:
        handler = getattr(self, f"_on_{type(event).__name__.lower()}")
        return handler(event)

    def close(self) -> None:
        """End of session, however it ended: release the maildrop lock, delete nothing."""
        if self.maildrop is not None:
            self.maildrop.close()

    # -- AUTHORIZATION ---------------------------------------------------------------------

    def _on_rejected(self, event: ev.Rejected) -> Pop3Reply:
        return event.reply

    def _on_capa(self, event: ev.Capa) -> Pop3Reply:
        stls = ("STLS",) if self.tls_available and not self.tls_active else ()
        return Pop3Reply.listing("capability list follows", CAPABILITIES + stls)

    def _on_stls(self, event: ev.Stls) -> Pop3Reply:
        if not self.tls_available:
            return Pop3Reply.err("[SYS/PERM] TLS not available: this server has no certificate")
        if self.tls_active:  # the implicit-TLS port (RFC 8314): TLS from the first byte
            return Pop3Reply.err("TLS is already active")
        self._name = None  # RFC 2595 4: nothing said before the handshake counts
        return Pop3Reply.ok("Begin TLS negotiation")

    def _on_user(self, event: ev.User) -> Pop3Reply:
        # The same answer for every name: USER must not tell who exists.
        self._name = event.name
        return Pop3Reply.ok("send PASS")

    def _on_pass(self, event: ev.Pass) -> Pop3Reply:
        name, self._name = self._name, None
        return self._login(name or "", lambda: self.directory.authenticate(name or "", event.password))

    def _on_apop(self, event: ev.Apop) -> Pop3Reply:
        def check() -> User | None:
            user = self.directory.user(event.name)
            secret = (user.password if user else None) or os.urandom(16).hex()
            expected = hashlib.md5((self.timestamp + secret).encode()).hexdigest()
            good = hmac.compare_digest(expected, event.digest) and user is not None and user.password is not None
            return user if good else None
        return self._login(event.name, check)

    def _login(self, name: str, check: Callable[[], User | None]) -> Pop3Reply:
        """Wait for ``name``'s slot in the throttle (this session's thread waits), then check."""
        if self.throttle:
            wait = self.throttle.attempt(self.peer_ip, name)
            if wait is None:
                return r.TOO_MANY_FAILURES
            if wait > 0:
                self.sleep(wait)
        user = check()
        if user is None:
            if self.throttle:
                wait = self.throttle.failure(self.peer_ip, name)
                if wait > 0:
                    self.sleep(wait)
            return r.AUTH_FAILED
        if self.throttle:
            self.throttle.success(self.peer_ip, name)
        try:
            self.maildrop = self.store.open_maildrop(user.name)
        except MaildropLocked:
            return r.IN_USE
        except OSError:  # e.g. a symlink in the maildrop (logged by the store): refused, never followed
            return Pop3Reply.err("[SYS/TEMP] maildrop not available now; try later")
        self.user = user
        count, octets = self.maildrop.stat()
        return Pop3Reply.ok(f"{user.name}'s maildrop has {_messages(count)} ({octets} octets)")

    def _on_quit(self, event: ev.Quit) -> Pop3Reply:
        if not event.update or self.maildrop is None:
            return Pop3Reply.ok("forgelab POP3 server signing off")
        left = self.maildrop.stat()[0]
        removed, failed = self.maildrop.commit()
        if failed:
            return Pop3Reply.err(f"[SYS/PERM] some deleted messages not removed ({failed} failed)")
        return Pop3Reply.ok(f"forgelab POP3 server signing off ({removed} deleted, {left} left)")

    # -- TRANSACTION -----------------------------------------------------------------------

    def _message(self, n: int) -> Pop3Reply | None:
        """None if message ``n`` may be used, else the -ERR saying why not."""
        try:
            self.maildrop.size(n)
        except NoSuchMessage:
            return r.NO_SUCH_MESSAGE
        except MessageDeleted:
            return Pop3Reply.err(f"message {n} already deleted")
        return None

    def _on_stat(self, event: ev.Stat) -> Pop3Reply:
        count, octets = self.maildrop.stat()
        return Pop3Reply.ok(f"{count} {octets}")

    def _on_list(self, event: ev.List) -> Pop3Reply:
        md = self.maildrop
        if event.msg is not None:
            return self._message(event.msg) or Pop3Reply.ok(f"{event.msg} {md.size(event.msg)}")
        count, octets = md.stat()
        return Pop3Reply.listing(f"{_messages(count)} ({octets} octets)", (f"{n} {md.size(n)}" for n in md.numbers()))

    def _on_uidl(self, event: ev.Uidl) -> Pop3Reply:
        md = self.maildrop
        if event.msg is not None:
            return self._message(event.msg) or Pop3Reply.ok(f"{event.msg} {md.uid(event.msg)}")
        return Pop3Reply.listing("unique-id listing follows", (f"{n} {md.uid(n)}" for n in md.numbers()))

    def _retrieve(self, n: int) -> bytes | Pop3Reply:
        """Message ``n``, or the error reply that says why not."""
        refused = self._message(n)
        if refused:
            return refused
        try:
            return self.maildrop.retrieve(n)
        except OSError:
            return Pop3Reply.err(f"message {n} is no longer available")

    def _on_retr(self, event: ev.Retr) -> Pop3Reply:
        data = self._retrieve(event.msg)
        if isinstance(data, Pop3Reply):
            return data
        return Pop3Reply.ok(f"{self.maildrop.size(event.msg)} octets", body=data)

    def _on_top(self, event: ev.Top) -> Pop3Reply:
        data = self._retrieve(event.msg)
        if isinstance(data, Pop3Reply):
            return data
        return Pop3Reply.ok("top of message follows", body=top(data, event.lines))

    def _on_dele(self, event: ev.Dele) -> Pop3Reply:
        refused = self._message(event.msg)
        if refused:
            return refused
        self.maildrop.delete(event.msg)
        return Pop3Reply.ok(f"message {event.msg} deleted")

    def _on_noop(self, event: ev.Noop) -> Pop3Reply:
        return Pop3Reply.ok()

    def _on_rset(self, event: ev.Rset) -> Pop3Reply:
        self.maildrop.reset()
        count, octets = self.maildrop.stat()
        return Pop3Reply.ok(f"maildrop has {_messages(count)} ({octets} octets)")
