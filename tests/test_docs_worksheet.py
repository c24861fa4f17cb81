"""docs/worksheet.md matches what the server really says: every session block is replayed."""
import re
import socket
import time
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "worksheet.md"
VARIABLE = [
    (re.compile(r"m[0-9a-f]+(?:-\d+)+"), "<id>"),  # m<time>-<pid>-<n> (docs may show m<time>-<n>)
    (re.compile(r"<\d+\.\d+@([^>]+)>"), r"<timestamp@\1>"),
    (re.compile(r"\d+ octets"), "<n> octets"),
    (re.compile(r"^\+OK (\d+) \d+$"), r"+OK \1 <n>"),
]


def normalise(line: str) -> str:
    for pattern, replacement in VARIABLE:
        line = pattern.sub(replacement, line)
    return line


def blocks():
    text = DOC.read_text()
    return [(m.group(1), m.group(2).splitlines()) for m in re.finditer(r"```session (smtp|pop3)\n(.*?)```", text, re.DOTALL)]


def received_lines(sock: socket.socket, buffer: bytearray, count_hint: int = 1, quiet: float = 0.3) -> list[str]:
    """Read until the server has been quiet for a moment."""
    sock.settimeout(quiet)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            if buffer.count(b"\r\n") >= count_hint:
                break
            continue
        if not chunk:
            break
        buffer += chunk
    lines = bytes(buffer).decode().split("\r\n")
    buffer[:] = lines.pop().encode()
    return lines


def matches(expected: list[str], got: list[str]) -> bool:
    """Line by line after normalising; ``...`` skips any lines up to the next expected one."""
    i, skipping = 0, False
    for want in expected:
        if want == "...":
            skipping = True
            continue
        while skipping and i < len(got) and normalise(got[i]) != normalise(want):
            i += 1
        skipping = False
        if i >= len(got) or normalise(got[i]) != normalise(want):
            return False
        i += 1
    return i == len(got)


@pytest.mark.parametrize("number", range(len(blocks())))
def test_worksheet_block_replays(forgelab_server, number):
    lab = forgelab_server(policy="observe")
    kinds = [kind for kind, _ in blocks()]
    # POP3 blocks need the worksheet's message in alice's mailbox first.
    if kinds[number] == "pop3":
        import smtplib
        with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
            client.helo("some.where.com")
            client.sendmail("", ["alice@corp.example"], b"From: womble@wimbledon.com\r\nTo: fred@flintstone.org\r\n"
                            b"Subject: Greetings\r\nDate: Mon, 17 Jun 96 11:24 PDT\r\n\r\nHello!!\r\n. Count the dots\r\n")
    kind, lines = blocks()[number]
    address = lab.smtp.address if kind == "smtp" else lab.pop3.address
    with socket.create_connection(address, timeout=10) as sock:
        buffer = bytearray()
        expected: list[str] = []
        pending_client: list[str] = []

        def flush():
            if pending_client:
                sock.sendall("".join(line + "\r\n" for line in pending_client).encode())
                pending_client.clear()
            if expected:
                got = received_lines(sock, buffer, count_hint=len([e for e in expected if e != "..."]))
                assert matches(expected, got), f"expected {expected!r}\n got {got!r}"
                expected.clear()

        for line in lines:
            if line.startswith("C:"):
                if expected:
                    flush()
                pending_client.append(line[3:] if len(line) > 2 else "")
            elif line.startswith("S:"):
                if pending_client:
                    sock.sendall("".join(l + "\r\n" for l in pending_client).encode())
                    pending_client.clear()
                expected.append(line[3:] if len(line) > 2 else "")
        flush()
