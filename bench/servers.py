"""The servers the bench starts: forgelab and aiosmtpd, each in its own process, and what
it measures of them (CPU seconds, peak and current RSS, threads) through /proc and psutil."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The shipped policies with only the connection caps raised, so 1,000 idle clients fit
# (the shipped default is 200) and 50 clients from one address are never refused.
POLICY = """\
description = "bench: the shipped {base} policy with connection caps raised"
extends = "{base}"

[server]
max_connections = 5000
max_connections_per_ip = 5000
"""

# The embedded lab's users plus the mailboxes the bench writes to: smtp-source names its
# recipients rcpt, or 1rcpt..10rcpt with -r 10; pop1k and pop20k hold the POP3 maildrops.
USERS = """\
domains = ["corp.example"]
[users.alice]
name = "Alice Liddell"
password = "rabbit-hole"
[users.rcpt]
name = "Bench Recipient"
password = "bench"
{numbered}
[users.pop1k]
name = "POP3 bench, 1,000 messages"
password = "bench"
[users.pop20k]
name = "POP3 bench, 20,000 messages"
password = "bench"
"""


# The sender of the signed (observe) traffic: a domain of the bench's own whose SPF names
# 127.0.0.1, the address every generator connects from (smtp-source cannot bind another),
# with a DKIM key and DMARC p=reject, so SPF, DKIM and DMARC all pass. It joins the lab
# zone in a copy that the observe server is started with (--zone).
SENDER_DOMAIN = "loadtest.example"
SENDER_HELO = f"mail.{SENDER_DOMAIN}"


def bench_world(work: Path) -> tuple[Path, Path]:
    """Write the lab zone plus the sending domain and its new DKIM key; (zone file, keys folder)."""
    from forgelab.auth.keys import keygen
    from forgelab.lab import LAB_DIR

    keys = work / "keys"
    pair = keygen(SENDER_DOMAIN, "bench", keys)
    zone = work / "bench.zone"
    zone.write_text((LAB_DIR / "lab.zone").read_text() + f"""
; ---- {SENDER_DOMAIN}: the bench's signed traffic, sent from 127.0.0.1 (bench/servers.py)
{SENDER_HELO}. IN A 127.0.0.1
{SENDER_HELO}. IN TXT "v=spf1 a -all"
{SENDER_DOMAIN}. IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.{SENDER_DOMAIN}. IN TXT "v=DMARC1; p=reject"
{pair.record_path.read_text().strip()}
""")
    return zone, keys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_banner(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"no SMTP banner on port {port} within {timeout} s")



def wait_for_workers(main: psutil.Process, port: int, count: int, timeout: float = 30.0) -> None:
    """Until ``count`` children of ``main`` listen on ``port`` (``serve --workers``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listening = 0
        for child in main.children():
            try:
                listening += any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                                 for c in child.net_connections(kind="tcp"))
            except psutil.Error:
                pass
        if listening >= count:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{count} SMTP worker process(es) not listening on {port} within {timeout} s")

class ServerProcess:
    """One server process; stop() ends it (SIGTERM, then SIGKILL) and only it."""

    name = "server"

    def __init__(self, argv: list[str], port: int, log_path: Path):
        self.port = port
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.ps = psutil.Process(self.proc.pid)
        try:
            wait_for_banner(port, proc=self.proc)
        except Exception:
            self.stop()
            raise

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def _status(self, field: str) -> int:
        return _status_of(self.proc.pid, field)

    def rss(self) -> int:
        return self._status("VmRSS")

    def peak_rss(self) -> int:
        return self._status("VmHWM")

    def reset_peak(self) -> None:
        _reset_peak_of(self.proc.pid)

    def threads(self) -> int:
        return self.ps.num_threads()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


class ForgelabServer(ServerProcess):
    """``forgelab serve`` (the web view off: it is not what is measured); with ``workers`` > 1
    its CPU time, memory and threads include the worker processes."""

    def __init__(self, work: Path, policy: str, workers: int = 1, zone: Path | None = None, driver: str = "threads"):
        self.name = f"forgelab {policy} ({driver}, {workers} process{'es' if workers > 1 else ''})"
        self.workers = workers
        work.mkdir(parents=True, exist_ok=True)
        policy_file = work / f"bench-{policy}.toml"
        policy_file.write_text(POLICY.format(base=policy))
        users = work / "users.toml"
        numbered = "".join(f'[users.{i}rcpt]\nname = "Bench Recipient {i}"\npassword = "bench"\n' for i in range(1, 11))
        users.write_text(USERS.format(numbered=numbered))
        self.data = work / "data"
        self.pop3_port = free_port()
        port = free_port()
        argv = [sys.executable, "-m", "forgelab", "serve", "--smtps", "off", "--pop3s", "off", "--quiet", "--web", "off", "--smtp", f"127.0.0.1:{port}",
                "--pop3", f"127.0.0.1:{self.pop3_port}", "--data", str(self.data),
                "--policy", str(policy_file), "--users", str(users)]
        if workers > 1:
            argv += ["--workers", str(workers)]
        if driver != "threads":
            argv += ["--driver", driver]
        if zone is not None:
            argv += ["--zone", str(zone)]
        super().__init__(argv, port, work / "server.log")
        if workers > 1:
            self._wait_for_workers(workers - 1)

    def _wait_for_workers(self, count: int, timeout: float = 30.0) -> None:
        """Until ``count`` worker processes listen on the SMTP port too: the main process answers
        the banner first, and a worker still loading the lab would leave it all the load."""
        wait_for_workers(self.ps, self.port, count, timeout)

    def _processes(self) -> list[psutil.Process]:
        return [self.ps, *self.ps.children(recursive=True)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self._processes():
            try:
                t = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total

    # With workers, memory and threads are the sum over every process (the peak: the sum of peaks).
    def _status(self, field: str) -> int:
        return sum(_status_of(proc.pid, field) for proc in self._processes())

    def reset_peak(self) -> None:
        for proc in self._processes():
            _reset_peak_of(proc.pid)

    def threads(self) -> int:
        total = 0
        for proc in self._processes():
            try:
                total += proc.num_threads()
            except psutil.NoSuchProcess:
                continue
        return total


class AiosmtpdServer(ServerProcess):
    """aiosmtpd's own command line with its Maildir handler (stdlib mailbox, no fsync)."""

    def __init__(self, work: Path):
        self.name = "aiosmtpd"
        work.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                "-c", "aiosmtpd.handlers.Mailbox", str(work / "Maildir")]
        super().__init__(argv, port, work / "server.log")


def _status_of(pid: int, field: str) -> int:
    """A kB field of /proc/PID/status (VmRSS, VmHWM) in bytes; 0 for a process that is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak_of(pid: int) -> None:
    try:  # Linux: writing 5 resets the peak RSS (VmHWM) to the current RSS
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def mb(octets: int) -> float:
    return round(octets / 1024 / 1024, 1)


def os_name() -> str:
    return f"{os.uname().sysname} {os.uname().release}, {os.cpu_count()} CPUs"
