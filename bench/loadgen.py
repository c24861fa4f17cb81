"""A small SMTP load generator, for when Postfix's smtp-source is not installed.

Like ``smtp-source -s C -m N``: C concurrent clients, a new connection per message,
commands one at a time (no pipelining): HELO, MAIL FROM, RCPT TO (xR), DATA, the
message, QUIT. It can also bind a source address and send a prepared message file
(``--message-file``, as ``smtp-source -F``), e.g. a DKIM-signed one.

Run as its own process so its CPU is not the server's:

    python bench/loadgen.py --port 1025 --messages 2000 --concurrency 10 --size 2048

Prints one JSON object: sent, ok, failed, seconds, rate (accepted messages per second).
Every loop is bounded: by the message count and by ``--timeout`` (wall seconds).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from email.utils import formatdate, make_msgid
from pathlib import Path


def make_message(size: int, sender: str, rcpt: str, sign_domain: str | None = None, keys_dir=None) -> bytes:
    """A plain text message of about ``size`` octets (CRLF lines), optionally DKIM-signed
    with the key(s) held for ``sign_domain`` in ``keys_dir`` (default: the lab's)."""
    head = (f"From: Bench Sender <{sender}>\r\nTo: <{rcpt}>\r\nSubject: forgelab bench\r\n"
            f"Date: {formatdate(localtime=False)}\r\nMessage-ID: {make_msgid('bench')}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
    line = b"La de da de da, the quick brown fox jumps over the lazy dog 0123456789.\r\n"
    body = (line * (max(size - len(head), 0) // len(line) + 1))[: max(size - len(head), 2)]
    body = body[: body.rfind(b"\r\n") + 2] if b"\r\n" in body else b"\r\n"
    message = head + body
    if sign_domain:
        from forgelab.auth.keys import LAB_KEYS, sign

        message = sign(message, sign_domain, keys_dir=keys_dir or LAB_KEYS)
    return message


def dot_stuff(message: bytes) -> bytes:
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\r\n.", b"\r\n..")


class Stats:
    def __init__(self):
        self.sent = self.ok = self.failed = 0
        self.errors: dict[str, int] = {}

    def error(self, what: str) -> None:
        self.failed += 1
        self.errors[what] = self.errors.get(what, 0) + 1


async def _reply(reader: asyncio.StreamReader) -> int:
    """Read one (possibly multi-line) reply; its code."""
    while True:
        line = await reader.readline()
        if len(line) < 4:
            raise ConnectionError(f"short reply {line[:40]!r}")
        if line[3:4] != b"-":
            return int(line[:3])


async def _one(args, payload: bytes, rcpts: list[bytes], stats: Stats) -> None:
    local = (args.source_ip, 0) if args.source_ip else None
    reader, writer = await asyncio.open_connection(args.host, args.port, local_addr=local)
    try:
        if await _reply(reader) != 220:
            stats.error("banner")
            return
        steps = [b"HELO " + args.helo.encode() + b"\r\n", b"MAIL FROM:<" + args.sender.encode() + b">\r\n"]
        steps += [b"RCPT TO:<" + r + b">\r\n" for r in rcpts]
        for command in steps:
            writer.write(command)
            code = await _reply(reader)
            if code >= 400:
                stats.error(command.split(b":")[0].split()[0].decode() + f" {code}")
                return
        writer.write(b"DATA\r\n")
        if await _reply(reader) != 354:
            stats.error("DATA")
            return
        writer.write(payload)
        code = await _reply(reader)
        if code == 250:
            stats.ok += 1
        else:
            stats.error(f"message {code}")
        writer.write(b"QUIT\r\n")
        await _reply(reader)
    finally:
        writer.close()


async def _worker(args, payload, rcpts, stats, deadline, counter) -> None:
    while next(counter) < args.messages and time.monotonic() < deadline:
        stats.sent += 1
        try:
            await asyncio.wait_for(_one(args, payload, rcpts, stats), timeout=max(deadline - time.monotonic(), 0.01))
        except (OSError, ConnectionError, asyncio.TimeoutError, ValueError) as exc:
            stats.error(type(exc).__name__)


def recipients(template: str, count: int) -> list[bytes]:
    """``{n}`` in the template is numbered 1..count, as smtp-source numbers recipients."""
    if "{n}" in template:
        return [template.replace("{n}", str(i)).encode() for i in range(1, count + 1)]
    return [template.encode()] * count


async def run(args) -> dict:
    import itertools

    rcpts = recipients(args.rcpt, args.rcpts)
    if args.message_file:  # CRLF or LF lines, as smtp-source -F reads them
        message = b"\r\n".join(args.message_file.read_bytes().replace(b"\r\n", b"\n").split(b"\n"))
        message = message if message.endswith(b"\r\n") else message + b"\r\n"
    else:
        message = make_message(args.size, args.sender, rcpts[0].decode())
    payload = dot_stuff(message) + b"\r\n.\r\n"
    stats = Stats()
    counter = itertools.count()
    start = time.monotonic()
    deadline = start + args.timeout
    await asyncio.gather(*(_worker(args, payload, rcpts, stats, deadline, counter)
                           for _ in range(args.concurrency)))
    seconds = time.monotonic() - start
    return {"sent": stats.sent, "ok": stats.ok, "failed": stats.failed, "errors": stats.errors,
            "seconds": round(seconds, 3), "rate": round(stats.ok / seconds, 1) if seconds else 0.0,
            "message_octets": len(message)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--size", type=int, default=2048, help="message size in octets")
    p.add_argument("--rcpts", type=int, default=1, help="recipients per message")
    p.add_argument("--rcpt", default="alice@corp.example", help="recipient; {n} is numbered 1..rcpts")
    p.add_argument("--sender", default="bench@news.example")
    p.add_argument("--source-ip", help="bind this local address (SPF sees it as the client)")
    p.add_argument("--helo", default="bench.example", help="the HELO name (smtp-source -M)")
    p.add_argument("--message-file", type=Path, help="send this message instead of a generated one (smtp-source -F)")
    p.add_argument("--timeout", type=float, default=120.0, help="stop after this many seconds")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
