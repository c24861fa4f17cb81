"""One lab per data directory: DATA/.lock under flock; a second serve stops with the first one's pid."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from forgelab.app import Forgelab, Settings
from forgelab.errors import DataDirError

pytestmark = pytest.mark.timeout(120)


def serve(data, *args) -> list[str]:
    return [sys.executable, "-u", "-m", "forgelab", "serve", "--data", str(data), "--smtp", "127.0.0.1:0",
            "--pop3", "127.0.0.1:0", "--smtps", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--web", "off", *args]


class Running:
    """``forgelab serve`` in its own process, until its banner is out."""

    def __init__(self, data, *args):
        self.proc = subprocess.Popen(serve(data, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True)
        self.banner = []
        while not any(line.startswith("  data:") for line in self.banner):
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("serve exited: " + "".join(self.banner))
            self.banner.append(line)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.proc.stdout.close()


def test_a_second_serve_on_the_same_data_directory_exits_2_naming_the_first(tmp_path):
    data = tmp_path / "data"
    first = Running(data)
    try:
        second = subprocess.run(serve(data, "--quiet"), capture_output=True, text=True, timeout=60)
        assert first.proc.poll() is None  # the first one serves on
    finally:
        first.stop()
    assert second.returncode == 2, second.stderr
    error = second.stderr.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    assert str(data) in error and f"pid {first.proc.pid}" in error
    again = Running(data)  # released on exit: the next one starts
    again.stop()


def test_a_killed_serve_leaves_no_lock_behind(tmp_path):
    data = tmp_path / "data"
    first = Running(data)
    first.stop(signal.SIGKILL)
    assert (data / ".lock").read_text().strip() == str(first.proc.pid)  # the file stays, its lock does not
    Running(data).stop()


def test_worker_processes_of_the_same_serve_do_not_trip_the_lock(tmp_path):
    lab = Running(tmp_path / "data", "--workers", "2")
    try:
        assert any("SMTP processes: 2" in line for line in lab.banner), lab.banner
    finally:
        lab.stop()
    assert lab.proc.returncode == 0


def test_the_serve_banner_names_the_ca_and_a_line_to_verify_with(tmp_path):
    lab = Running(tmp_path / "data")
    lab.stop()
    text = "".join(lab.banner)
    ca = tmp_path / "data" / "tls" / "ca.pem"
    port = re.search(r"SMTPS\s+127\.0\.0\.1:(\d+)\s+implicit TLS", text)[1]
    assert re.search(r"POP3S\s+127\.0\.0\.1:\d+\s+implicit TLS", text)
    assert f"TLS CA {ca}" in text and f"curl --cacert {ca} smtps://127.0.0.1:{port}" in text


def test_in_one_process_a_second_lab_is_refused_until_the_first_stops(tmp_path):
    settings = Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=tmp_path / "d")
    first = Forgelab(settings).start()
    try:
        with pytest.raises(DataDirError, match=f"pid {os.getpid()}"):
            Forgelab(settings)
    finally:
        first.stop()
    Forgelab(settings).start().stop()


def test_the_lock_file_is_never_reached_through_a_symlink(tmp_path):
    data = tmp_path / "d"
    data.mkdir(mode=0o700)
    (data / ".lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataDirError, match="symlink"):
        Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=data))
    assert not (tmp_path / "elsewhere").exists()
