"""Every server setting in one place: its default, the values it takes and what it means.

Two kinds, one frozen record (``Settings``):

- how a lab runs (``flag``): the options of ``forgelab serve`` (where to listen, the data
  directory, the driver, ...). The command line takes its defaults and help from here (cli.py).
- how the server behaves (``key``): the keys of a policy's ``[server]`` table
  (docs/policies.md). The policy loader checks them against ``KEYS`` (policy.py), and a
  policy that does not set one gets the default written here (``Policy.setting``).

``settings.for_policy(policy)`` is the record with the policy's ``[server]`` table applied;
the drivers' ``Limits`` and the login throttle are made from it (app.py), at start and at
each policy switch.

To add a setting: one field below, ``name: type = key(default, "what it means")`` (or
``flag(...)``), then read it where it is used.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MB = 1024 * 1024


# The choices of a key that takes true, false or a list of client addresses and CIDR networks.
NETWORKS = "true, false or a list of addresses and networks"


def key(default, doc: str, choices: tuple | str | None = None):
    """A ``[server]`` key of a policy: a number (> 0), a boolean, one of ``choices``, or (``NETWORKS``)
    true, false or a list of addresses and networks."""
    if choices is None:
        choices = (True, False) if isinstance(default, bool) else None
    return field(default=default, metadata={"doc": doc, "key": True, "choices": choices})


def flag(default, doc: str, serve=None):
    """An option of ``forgelab serve`` (the command line shows ``doc`` as its help); ``serve``:
    the command's default where it differs from a lab made in Python."""
    return field(default=default, metadata={"doc": doc, "key": False, "serve": default if serve is None else serve})


@dataclass(frozen=True)
class Settings:
    """A lab's settings; every field's default and meaning is written here and nowhere else."""

    # -- how the lab runs: options of `forgelab serve`
    smtp: str = flag("127.0.0.1:1025", "SMTP listen address.")
    pop3: str = flag("127.0.0.1:1110", "POP3 listen address.")
    smtps: str | None = flag(None, "SMTP with implicit TLS (RFC 8314 submissions) listen address, or 'off'. "
                                   "Served by the main process only.", serve="127.0.0.1:1465")
    pop3s: str | None = flag(None, "POP3 with implicit TLS (POP3S, RFC 8314) listen address, or 'off'.",
                             serve="127.0.0.1:1995")
    data_dir: Path | None = flag(None, "Data directory (mail, event log). Default: ~/.local/share/forgelab.")
    users_file: Path | None = flag(None, "TOML file of local domains, users and lists.")
    policy: Any = flag("observe", "A shipped policy name (open, observe, strict) or a policy file.")
    plugins: tuple[str, ...] = flag((), "A plugin module or .py file to load (repeatable).")
    zone_file: Path | None = flag(None, "RFC 1035 master file for the lab DNS.")
    dns: str = flag("lab", "Answer DNS from the lab zone, or from real DNS.")
    event_log: bool = flag(True, "Write every event to DATA/events.jsonl.")
    tls: bool = flag(True, "Offer STARTTLS/STLS; with no certificate given, a lab one is made in DATA/tls.")
    tls_cert: Path | None = flag(None, "PEM certificate for STARTTLS/STLS and the implicit-TLS ports. Default: "
                                       "one signed by the lab CA (DATA/tls/ca.pem), both made on first start.")
    tls_key: Path | None = flag(None, "PEM private key of --tls-cert (if not inside the certificate file).")
    web: str | None = flag(None, "Web view address, or 'off'.", serve="127.0.0.1:8025")
    workers: int = flag(1, "SMTP processes sharing the SMTP port (SO_REUSEPORT, Linux), each on a CPU of its "
                           "own; connection caps are per process, the login throttle is shared.")
    driver: str = flag("threads", "SMTP sockets: a thread per connection, or one selector thread for every "
                                  "plain-text connection (faster under load; hooks must not block).")
    pin_cpus: bool = flag(False, "With workers: each SMTP process on a CPU of its own (serve sets it).")
    event_log_max: int = flag(64 * MB, "Size at which events.jsonl is rotated to events.jsonl.1 (0: never).")
    event_log_keep: int = flag(3, "Rotated event logs kept (events.jsonl.1 ... .N); the log takes at most "
                                  "SIZE x (N + 1).")
    event_log_rate: int = flag(128 * 1024, "Bytes of event records a second per client address, bursts of 2 s "
                                           "of it; past it records are counted in log.held_back lines, not "
                                           "written (0 or off: no limit). Each of --workers N applies its own: "
                                           "an address gets N times it.")

    # -- how the server behaves: keys of a policy's [server] table
    end_of_data: str = key("strict", '"strict": only CRLF.CRLF ends DATA; "lenient": also the smuggling endings.',
                           ("strict", "lenient"))
    address_syntax: str = key("strict", '"strict": RFC 5321 paths only; "lenient": anything without spaces.',
                              ("strict", "lenient"))
    header_start: str = key("lenient", '"strict": a header that starts with a folded (whitespace-led) line is '
                                       'refused 554 5.6.0; "lenient": those lines stay first, above forgelab\'s own.',
                            ("strict", "lenient"))
    xclient: bool | list = key(True, "Accept XCLIENT from 127.0.0.1 (lab mode); false: from nobody; a list: "
                                     "from these addresses and networks (\"127.0.0.0/8\", \"::1\").", NETWORKS)
    require_auth: bool = key(False, "MAIL FROM needs AUTH first (530 5.7.0), as on a submission port.")
    max_message_size: int = key(10 * MB, "Octets; SIZE is advertised, bigger mail gets 552 5.3.4.")
    spool_threshold: int = key(1 * MB, "Octets of a message held in memory while it arrives; the rest goes "
                                       "to DATA/spool/.")
    max_recipients: int = key(100, "Recipients per message; more get 452 4.5.3.")
    max_errors: int = key(20, "Error replies in a session (SMTP 5xx, POP3 -ERR) before it is closed.")
    max_commands: int = key(10_000, "Commands in a session before it is closed.")
    idle_timeout: float = key(300.0, "Seconds of silence before 421 / -ERR and close (RFC 5321 4.5.3.2).")
    session_timeout: float = key(1800.0, "Seconds a session may last in all.")
    max_connections: int = key(200, "Open connections per server (per process with --workers).")
    max_connections_per_ip: int = key(150, "Open connections from one client address (a class shares "
                                           "127.0.0.1: docs/security.md, Fairness).")
    shed_idle_after: float = key(1.0, "When full, a connection whose client has said nothing for this long "
                                      "(seconds) is closed for the newcomer.")
    min_data_rate: float = key(50.0, "When full and none is idle: one sending slower than this (octets/s, "
                                     "lately) is closed instead.")
    admit_wait: float = key(1.0, "When full and none may be closed: how long a newcomer waits (seconds, no "
                                 "banner yet) for a slot before the busy reply.")
    login_free_failures: int = key(3, "Failed POP3 logins / SMTP AUTHs per client address + user name before "
                                      "delays.")
    login_user_free_failures: int = key(10, "The same per user name, from all addresses together.")
    login_delay: float = key(1.0, "The first delay (seconds) past those; it doubles with each further failure.")
    login_max_delay: float = key(30.0, "The longest delay; an attempt that would wait longer gets "
                                       "[SYS/TEMP] / 454.")
    login_ip_free_failures: int = key(100, "Failures from one address (any names) before its failures are "
                                           "answered late.")
    login_ip_max_delay: float = key(5.0, "The longest such late answer (a right password is never held back).")
    max_header_fields: int = key(1000, "Fields in one header section (the message's, or a MIME part's).")
    max_header_size: int = key(16384, "Octets in one header field, unfolded.")
    max_header_bytes: int = key(262144, "Octets in all the header fields of a message, MIME parts included.")
    max_addresses: int = key(1000, "Addresses in one address field (From, To, Cc, Sender, Reply-To, ...).")
    max_encoded_words: int = key(1000, "RFC 2047 encoded words (=?...?=) in all the header fields of a message.")
    max_mime_depth: int = key(32, "MIME parts nested one in another.")
    max_mime_parts: int = key(1000, "MIME parts in a message.")

    def for_policy(self, policy) -> "Settings":
        """These settings with ``policy``'s ``[server]`` table applied (its keys win)."""
        return dataclasses.replace(self, **{k: v for k, v in policy.server.items() if k in KEYS})

    @staticmethod
    def doc(name: str) -> str:
        """What setting ``name`` means."""
        return FIELDS[name].metadata["doc"]

    @staticmethod
    def serve_default(name: str):
        """The default of ``forgelab serve``'s option for ``name``."""
        return FIELDS[name].metadata["serve"]


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
DEFAULTS = Settings()
# The [server] keys of a policy, each with what it takes: a tuple of choices, or the type of a number.
KEYS: dict[str, Any] = {name: f.metadata["choices"] or ((int, float) if isinstance(f.default, float) else int)
                        for name, f in FIELDS.items() if f.metadata["key"]}
