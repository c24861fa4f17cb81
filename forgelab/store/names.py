"""Maildir file names: what a stored message's name says, and the order of a folder.

A name follows the Maildir convention plus Dovecot's size fields, so a listing needs no stat
and the stdlib ``mailbox.Maildir`` reads the same folders::

    <sec>.M<usec>P<pid>Q<counter>.<host>,S=<stored octets>,W=<POP3 wire octets>[:2,<flags>]

The key of a message is its file name without the ``:2,...`` info part.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path

_NAME = re.compile(r"^(\d+)\.M(\d+)P(\d+)Q(\d+)\.")
STORED_SIZE = re.compile(r",S=(\d+)")
WIRE_SIZE = re.compile(r",W=(\d+)")
_UID_OK = re.compile(r"^[\x21-\x7e]{1,70}$")


def safe_host() -> str:
    """This machine's name as a Maildir name part: Maildir names split on "." "," ":" "/"."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])
    return host[:24] or "localhost"


def order_key(name: str) -> tuple:
    """Delivery order of a Maildir file name: time, microseconds, counter, then the name."""
    m = _NAME.match(name)
    if m:
        return (int(m[1]), int(m[2]), int(m[4]), name)
    digits = re.match(r"\d*", name)[0]
    return (int(digits or 0), 0, 0, name)


def key_of(name: str) -> str:
    """The message's key: its file name without the ``:2,<flags>`` info part."""
    return name.split(":", 1)[0]


def size_in_name(name: str, pattern: re.Pattern) -> int | None:
    """The size field ``pattern`` (``STORED_SIZE`` or ``WIRE_SIZE``) of a name, None without one."""
    m = pattern.search(key_of(name))
    return int(m[1]) if m else None


def uid_of(key: str) -> str:
    """A stable POP3 unique-id (RFC 1939 UIDL) for a maildir key: printable, at most 70 chars."""
    base = key.split(",", 1)[0]
    return base if _UID_OK.match(base) else hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()


def check_key(key: str) -> str:
    """``key`` if it can only name a file inside a folder (ValueError otherwise)."""
    if not key or "/" in key or "\0" in key or key.startswith("."):
        raise ValueError(f"invalid message key {key!r}")
    return key


def entries(maildir: Path) -> list[tuple[str, Path]]:
    """(name, path) of every message in new/ and cur/, in delivery order."""
    found = []
    for part in ("new", "cur"):
        try:
            names = os.listdir(maildir / part)
        except FileNotFoundError:
            continue
        found.extend((n, maildir / part / n) for n in names if not n.startswith("."))
    found.sort(key=lambda e: order_key(e[0]))
    return found
