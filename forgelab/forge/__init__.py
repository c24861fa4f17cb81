"""A forging SMTP client (in the spirit of swaks) that sends exactly the bytes it is given.

    client = ForgeClient("127.0.0.1", 1025, source_ip="127.0.66.1")
    client.connect()                       # the banner, as a Reply
    client.command("EHLO mail.phish.example")
    client.send_raw(b"MAIL FROM:<(any@bank.example>\\r\\n")   # verbatim, no checks
    client.read_reply()

or one whole transaction with :func:`send`. Nothing here "fixes" what it is told to
send: no dot-stuffing unless asked, no line-ending repair, no address validation.
Every byte in and out is kept in ``client.transcript`` for display.
"""
from __future__ import annotations

from .client import ForgeClient, ForgeError, Reply, WireEntry
from .message import build_message, dkim_sign
from .transaction import (EXIT_ACCEPTED, EXIT_ERROR, EXIT_REJECTED, EXIT_TEMPFAILED, ForgeResult, Transaction,
                          run_transaction, send)
from .wire import (CRLF, END_OF_DATA, LINE_ENDINGS, dot_stuff, escape_bytes, parse_escapes, set_line_endings,
                   split_wire_lines)

__all__ = ["CRLF", "END_OF_DATA", "EXIT_ACCEPTED", "EXIT_ERROR", "EXIT_REJECTED", "EXIT_TEMPFAILED", "LINE_ENDINGS",
           "ForgeClient", "ForgeError", "ForgeResult", "Reply", "Transaction", "WireEntry", "build_message",
           "dkim_sign", "dot_stuff", "escape_bytes", "parse_escapes", "run_transaction", "send", "set_line_endings",
           "split_wire_lines"]
