"""Plain records of an SMTP session and the message envelope being built in it."""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    """``s6b0b4046-12345-7``: prefix, the second it was made (hex), process id, counter.

    The pid keeps ids unique when ``serve --workers`` runs several processes on one store.
    """
    return f"{prefix}{int(time.time()):x}-{os.getpid()}-{next(_ids)}"


@dataclass
class Session:
    """Who is talking to us.

    ``peer_ip`` is the address SPF and iprev judge: the real peer address, or the one
    a trainer set with XCLIENT.
    """

    peer_ip: str
    peer_port: int = 0
    id: str = field(default_factory=lambda: new_id("s"))
    helo: str | None = None
    esmtp: bool = False
    tls: bool = False
    authenticated: str | None = None
    peer_name: str | None = None  # reverse name given by XCLIENT NAME=
    xclient: bool = False
    started: float = field(default_factory=time.time)
    real_peer_ip: str = ""  # the socket's peer, whatever XCLIENT says
    # Results one defence computed that another may reuse (e.g. SPF for DMARC).
    cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.real_peer_ip = self.real_peer_ip or self.peer_ip

    def as_dict(self) -> dict:
        return {"id": self.id, "peer_ip": self.peer_ip, "peer_port": self.peer_port, "helo": self.helo,
                "esmtp": self.esmtp, "tls": self.tls, "authenticated": self.authenticated,
                "xclient": self.xclient}


@dataclass
class Envelope:
    """One message's envelope: MAIL FROM (``""`` is the null sender) and the accepted RCPT TOs."""

    mail_from: str = ""
    mail_params: dict = field(default_factory=dict)
    rcpt_tos: list[str] = field(default_factory=list)
    id: str = field(default_factory=lambda: new_id("m"))
    # The DATA text exactly as sent, before dot-unstuffing (set at the end of DATA).
    data_as_sent: bytes = field(default=b"", repr=False)
    # Per-message results shared between defences (parse once, look up once).
    cache: dict = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        return {"id": self.id, "mail_from": self.mail_from, "rcpt_tos": list(self.rcpt_tos),
                "mail_params": dict(self.mail_params)}
