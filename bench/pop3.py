"""POP3 part of the bench: fill maildrops, then time STAT, LIST and RETR over a raw socket.

The client reads in 64 KiB chunks and looks for the terminating ``CRLF.CRLF`` itself, so
its own cost per message stays small next to the server's.
"""
from __future__ import annotations

import socket
import time

from forgelab.store import MailStore


def fill(data_dir, user: str, count: int, message: bytes) -> None:
    """Deliver ``count`` copies straight into the store (no fsync: this is set-up, not measured)."""
    store = MailStore(data_dir / "mail", fsync=False)
    have = len(store.list(user))
    for _ in range(count - have):
        store.deliver(user, message)


class Client:
    def __init__(self, port: int, timeout: float = 30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = bytearray()
        self.line()

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("POP3 server closed the connection")
        self.buf += data

    def line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            self._more()
        out = bytes(self.buf[:i])
        del self.buf[:i + 2]
        if not out.startswith(b"+OK"):
            raise ConnectionError(f"POP3 error: {out[:80]!r}")
        return out

    def multi(self) -> int:
        """Read a multi-line answer (after its +OK line); returns its length in octets."""
        self.line()
        while (i := self.buf.find(b"\r\n.\r\n")) < 0 and not self.buf.startswith(b".\r\n"):
            self._more()
        end = 3 if self.buf.startswith(b".\r\n") else i + 5
        del self.buf[:end]
        return end

    def cmd(self, text: str, multi: bool = False):
        self.sock.sendall(text.encode() + b"\r\n")
        return self.multi() if multi else self.line()

    def close(self) -> None:
        try:
            self.cmd("QUIT")
        finally:
            self.sock.close()


def measure(server, user: str, retr_count: int, repeat_small: int = 200) -> dict:
    """Login, STAT/LIST n/RETR timings for one maildrop; RETR spread evenly over it."""
    t0 = time.perf_counter()
    c = Client(server.pop3_port)
    c.cmd(f"USER {user}")
    c.cmd("PASS bench")
    login = time.perf_counter() - t0
    try:
        count = int(c.cmd("STAT").split()[1])
        t = time.perf_counter()
        for _ in range(repeat_small):
            c.cmd("STAT")
        stat_us = (time.perf_counter() - t) / repeat_small * 1e6
        t = time.perf_counter()
        for i in range(repeat_small):
            c.cmd(f"LIST {1 + i * count // repeat_small}")
        list_one_us = (time.perf_counter() - t) / repeat_small * 1e6
        t = time.perf_counter()
        c.cmd("LIST", multi=True)
        list_all_ms = (time.perf_counter() - t) * 1000
        step = max(count // retr_count, 1)
        numbers = list(range(1, count + 1, step))[:retr_count]
        cpu0 = server.cpu_seconds()
        t = time.perf_counter()
        octets = 0
        for n in numbers:
            octets += c.cmd(f"RETR {n}", multi=True)
        seconds = time.perf_counter() - t
        cpu = server.cpu_seconds() - cpu0
    finally:
        c.close()
    return {"user": user, "messages": count, "login_ms": round(login * 1000, 1),
            "stat_us": round(stat_us), "list_one_us": round(list_one_us), "list_all_ms": round(list_all_ms, 1),
            "retr": len(numbers), "retr_per_s": round(len(numbers) / seconds, 1),
            "retr_us": round(seconds / len(numbers) * 1e6), "retr_cpu_us": round(cpu / len(numbers) * 1e6),
            "mb_per_s": round(octets / seconds / 1e6, 1)}
