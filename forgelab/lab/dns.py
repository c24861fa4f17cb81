"""The one resolver every DNS lookup of every defence goes through.

Two backends behind one interface:

- ``lab`` (the default): answers from an RFC 1035 master file holding any number of
  domains under absolute names (no SOA or NS needed). Names it does not hold are
  NXDOMAIN; nothing goes to the network.
- ``system``: the machine's resolver (real DNS), opt-in with ``--dns system``.

:class:`Resolver` keeps answers across messages for their TTL; :class:`Lookups` is
the per-message view that asks the resolver at most once per (name, type) and keeps
a log of what it asked, so one check never repeats another check's lookup.
"""
from __future__ import annotations

import itertools
import re
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.reversename
import dns.zone
from dns.rdtypes.ANY.TXT import TXT

from ..errors import WorldError

LAB_ZONE = Path(str(resources.files("forgelab.lab"))) / "lab.zone"

MAX_CNAME_CHAIN = 8
DEFAULT_TTL = 300  # for zone files without $TTL
NEGATIVE_TTL = 60  # seconds a "no such name / no such record" answer is kept
SYSTEM_TIMEOUT = 5.0


class ZoneError(WorldError):
    """A zone file that cannot be used; the message names the file and the line."""


class DNSTempError(Exception):
    """The lookup could not be answered now (timeout, no server): a temperror."""


@dataclass(frozen=True)
class Answer:
    """The answer to one question.

    :param name: the name asked, absolute, lower case, without the final dot.
    :param rdtype: the type asked, as text (``"TXT"``).
    :param records: dnspython rdata objects (after following CNAMEs).
    :param nxdomain: the name does not exist (an empty ``records`` with
        ``nxdomain=False`` is NODATA: the name exists, the type does not).
    :param cnames: ``(alias, target)`` pairs followed to reach ``records``.
    :param ttl: seconds the answer may be kept.
    """

    name: str
    rdtype: str
    records: tuple = ()
    nxdomain: bool = False
    cnames: tuple = ()
    ttl: int = NEGATIVE_TTL
    # Decoded forms of the records (see memo): not an input, so outside equality, hash and repr.
    _decoded: dict = field(default_factory=dict, init=False, compare=False, hash=False, repr=False)

    @property
    def owner(self) -> str:
        """The name the records belong to (the end of the CNAME chain)."""
        return self.cnames[-1][1] if self.cnames else self.name

    def memo(self, what, make):
        """``make(self)``, computed once per answer: an answer is immutable and the resolver's
        TTL cache hands the same one to every message, so its decoded forms can stay with it."""
        d = self._decoded
        try:
            return d[what]
        except KeyError:
            value = d[what] = make(self)
            return value

    def texts(self) -> list[str]:
        """TXT records, each one's strings joined with no separator (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
        return list(self.memo("_texts", _texts))

    def addresses(self) -> list[str]:
        return [r.address for r in self.records if hasattr(r, "address")]

    def targets(self) -> list[str]:
        """PTR/CNAME targets and MX exchanges, without the final dot."""
        return list(self.memo("_targets", _targets))


def _texts(answer: Answer) -> tuple[str, ...]:
    return tuple(b"".join(r.strings).decode("utf-8", "replace") for r in answer.records if hasattr(r, "strings"))


def _targets(answer: Answer) -> tuple[str, ...]:
    out = []
    for r in answer.records:
        target = getattr(r, "target", None) or getattr(r, "exchange", None)
        if target is not None:
            out.append(target.to_text(omit_final_dot=True).lower())
    return tuple(out)


def _key(name) -> str:
    if type(name) is str:  # the everyday case, without the isinstance checks
        return name.rstrip(".").lower()
    text = name.to_text(omit_final_dot=True) if isinstance(name, dns.name.Name) else str(name)
    return text.rstrip(".").lower()


def _reverse(ip: str) -> str:
    return dns.reversename.from_address(ip).to_text(omit_final_dot=True)


def _absolute(name: str) -> dns.name.Name | None:
    try:
        return dns.name.from_text(name.rstrip(".") + ".") if name.strip(".") else None
    except dns.exception.DNSException:
        return None  # not a valid DNS name: no such name


class _Helpers:
    """Typed helpers shared by the resolver and its per-message view."""

    def query(self, name: str, rdtype: str) -> Answer:  # pragma: no cover - interface
        raise NotImplementedError

    def txt(self, name: str) -> list[str]:
        return self.query(name, "TXT").texts()

    def addresses(self, name: str) -> list[str]:
        """A then AAAA addresses of a name."""
        return self.query(name, "A").addresses() + self.query(name, "AAAA").addresses()

    def ptr(self, ip: str) -> list[str]:
        return self.query(_reverse(ip), "PTR").targets()

    def exists(self, name: str) -> bool:
        """Whether a name exists in DNS (RFC 9091: any A, AAAA or MX answer, or NODATA)."""
        return not self.query(name, "A").nxdomain


class LabBackend:
    """Answers from a dnspython zone; never touches the network.

    :param zone: the loaded zone (many domains under the root origin).
    :param timeouts: fault injection for exercises and tests: a name mapped to the
        record types that still answer; any other type at that name times out.
    """

    kind = "lab"

    def __init__(self, zone: dns.zone.Zone, timeouts: Mapping[str, Iterable[str]] | None = None):
        self.zone = zone
        self.timeouts = {_key(k): {t.upper() for t in v} for k, v in (timeouts or {}).items()}
        # Empty non-terminals (e.g. _domainkey.bank.example) exist: NODATA, not NXDOMAIN.
        self._existing = set()
        for owner in zone.nodes:
            labels = owner.labels
            for i in range(len(labels) - 1):
                self._existing.add(_key(dns.name.Name(labels[i:])))

    def lookup(self, name: str, rdtype: str) -> Answer:
        key, rdt = _key(name), rdtype.upper()
        cnames = []
        for _ in range(MAX_CNAME_CHAIN + 1):
            if key in self.timeouts and rdt not in self.timeouts[key]:
                raise DNSTempError(f"lab: lookup of {key} {rdt} timed out (as the lab zone says)")
            absolute = _absolute(key)
            node = self.zone.get_node(absolute) if absolute is not None else None
            asked = cnames[0][0] if cnames else key
            if node is None:
                return Answer(asked, rdt, (), key not in self._existing, tuple(cnames))
            rdataset = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rdt))
            if rdataset is not None:
                return Answer(asked, rdt, tuple(rdataset), False, tuple(cnames), rdataset.ttl)
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is None or rdt == "CNAME":
                return Answer(asked, rdt, (), False, tuple(cnames))
            target = _key(cname[0].target)
            cnames.append((key, target))
            if target in {a for a, _ in cnames}:
                break  # a CNAME loop: answer with the chain, as a resolver gives up
            key = target
        return Answer(cnames[0][0], rdt, (), False, tuple(cnames))


class SystemBackend:
    """The machine's resolver (real DNS). Opt-in only."""

    kind = "system"

    def __init__(self, timeout: float = SYSTEM_TIMEOUT):
        self._resolver = dns.resolver.Resolver()
        self._resolver.lifetime = timeout

    def lookup(self, name: str, rdtype: str) -> Answer:
        key, rdt = _key(name), rdtype.upper()
        absolute = _absolute(key)
        if absolute is None:
            return Answer(key, rdt, (), True)
        try:
            ans = self._resolver.resolve(absolute, rdt, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return Answer(key, rdt, (), True)
        except dns.exception.DNSException as e:  # timeouts, no servers, bad answers: all temperror
            raise DNSTempError(f"DNS lookup of {key} {rdt} failed: {e}") from e
        cnames, owner = [], key
        for rrset in ans.response.answer:
            if rrset.rdtype == dns.rdatatype.CNAME:
                target = _key(rrset[0].target)
                cnames.append((owner, target))
                owner = target
        records = tuple(ans.rrset) if ans.rrset is not None else ()
        ttl = ans.rrset.ttl if ans.rrset is not None else NEGATIVE_TTL
        return Answer(key, rdt, records, False, tuple(cnames), ttl)


CACHE_SIZE = 10_000  # answers kept across messages


class Resolver(_Helpers):
    """One resolver for every lookup, with a TTL cache shared across messages (thread-safe)."""

    def __init__(self, backend, clock=time.monotonic):
        self.backend = backend
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Answer]] = {}
        self._lock = threading.Lock()
        self.queries = 0  # questions that reached the backend (for tests and the web view)

    @property
    def kind(self) -> str:
        return self.backend.kind

    @classmethod
    def lab(cls, zone_path: str | Path | None = None, **backend_options) -> "Resolver":
        """The lab backend over a zone file (the embedded lab world when ``zone_path`` is None)."""
        return cls(LabBackend(load_zone(zone_path or LAB_ZONE), **backend_options))

    @classmethod
    def from_text(cls, text: str, **backend_options) -> "Resolver":
        return cls(LabBackend(parse_zone(text, "<text>"), **backend_options))

    @classmethod
    def from_records(cls, records: Mapping[str, Iterable[str] | str], **backend_options) -> "Resolver":
        """A lab resolver serving TXT records from ``{name: value or [values]}`` (tests, exercises)."""
        zone = dns.zone.Zone(dns.name.root, relativize=False)
        for owner, values in records.items():
            name = _absolute(owner)
            if name is None:
                continue
            for value in [values] if isinstance(values, str) else values:
                b = value.encode()
                chunks = [b[i:i + 255] for i in range(0, len(b), 255)] or [b""]
                rdata = TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)
                zone.find_rdataset(name, dns.rdatatype.TXT, create=True).add(rdata, DEFAULT_TTL)
        return cls(LabBackend(zone, **backend_options))

    @classmethod
    def system(cls, timeout: float = SYSTEM_TIMEOUT) -> "Resolver":
        return cls(SystemBackend(timeout))

    def query(self, name: str, rdtype: str) -> Answer:
        return self._answer((_key(name), rdtype.upper()))

    def _answer(self, key: tuple[str, str]) -> Answer:
        """The answer to an already normalised ``(name, TYPE)``."""
        now = self._clock()
        hit = self._cache.get(key)  # one dict read is atomic: only changes need the lock
        if hit and hit[0] > now:
            return hit[1]
        answer = self.backend.lookup(*key)  # DNSTempError is not cached
        with self._lock:
            self.queries += 1
            if len(self._cache) >= CACHE_SIZE:
                # Attackers choose the names asked (HELO, MAIL FROM, selectors): never grow without end.
                # One pass drops the expired and the oldest tenth, so a full cache is not rescanned per answer.
                oldest = set(itertools.islice(self._cache, CACHE_SIZE // 10 or 1))
                for k in [k for k, (expires, _) in self._cache.items() if expires <= now or k in oldest]:
                    del self._cache[k]
            self._cache[key] = (now + max(0, answer.ttl), answer)
        return answer

    def lookups(self) -> "Lookups":
        return Lookups(self)


@dataclass
class Lookups(_Helpers):
    """A per-message view of the resolver: each (name, type) is asked once.

    ``log`` lists every question in the order first asked, so a test (or the web
    view) can show that no check repeated another's lookup.
    """

    resolver: Resolver
    answers: dict = field(default_factory=dict)
    log: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def query(self, name: str, rdtype: str) -> Answer:
        key = (_key(name), rdtype.upper())
        got = self.answers.get(key)  # one dict read is atomic: only the write and the log need the lock
        if got is not None:
            if isinstance(got, DNSTempError):
                raise got
            return got
        try:
            answer = self.resolver._answer(key)  # the key is normalised already: not again in query()
        except DNSTempError as e:
            answer = e  # a timeout stays a timeout for the rest of this message
        with self._lock:
            self.answers.setdefault(key, answer)
            self.log.append(key)
        if isinstance(answer, DNSTempError):
            raise answer
        return answer


def _from_text(text: str, filename: str) -> dns.zone.Zone:
    return dns.zone.from_text(text, origin=dns.name.root, relativize=False, check_origin=False, filename=filename)


def _error_line(text: str, filename: str, detail: str) -> int | None:
    """The first line at which the file fails with ``detail`` (dnspython sometimes counts the
    line after the bad record): the shortest failing prefix, found by bisection."""
    lines = text.splitlines(keepends=True)

    def fails(n: int) -> bool:
        try:
            _from_text("".join(lines[:n]), filename)
        except dns.exception.SyntaxError as e:
            return str(e).split(": ", 1)[-1] == detail
        except dns.exception.DNSException:
            return False
        return False

    lo, hi = 1, len(lines)
    if not fails(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def parse_zone(text: str, filename: str = "<zone>") -> dns.zone.Zone:
    """Parse master-file text holding many domains under absolute names.

    A file without ``$TTL`` still loads (records get :data:`DEFAULT_TTL`). A file that does
    not parse raises :class:`ZoneError` naming the file and the line.
    """
    if re.search(r"^\$TTL\b", text, re.M | re.I) is None:
        text = f"$TTL {DEFAULT_TTL} ; added by forgelab\n" + text
        offset = 1
    else:
        offset = 0
    try:
        return _from_text(text, filename)
    except dns.exception.SyntaxError as e:
        detail = str(e).split(": ", 1)[-1]
        line = _error_line(text, filename, detail)
        where = f"{filename}:{line - offset}" if line else str(e).rsplit(": ", 1)[0]
        raise ZoneError(f"zone file {where}: {detail}") from e
    except dns.exception.DNSException as e:
        raise ZoneError(f"zone file {filename}: {e}") from e


def load_zone(path: str | Path) -> dns.zone.Zone:
    """Load a zone file; a file that does not parse raises :class:`ZoneError` naming file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ZoneError(f"zone file {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ZoneError(f"zone file {path}: not UTF-8 text ({e})") from e
    return parse_zone(text, str(path))
