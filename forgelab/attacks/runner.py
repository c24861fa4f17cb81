"""Play the catalogue against real in-process servers and report what each policy did.

One :class:`~forgelab.app.Forgelab` per policy on free loopback ports with a temporary
data directory, reused for every attack; each attack is one SMTP session from its own
source address (bound, or set with XCLIENT where binding 127.x.y.z is impossible).
Outcomes come from the server's own events (``message.delivered``, ``message.rejected``
with the check that decided it, ``verdict``), never from guesses nor from reply text.

    outcomes = run_catalogue(["strict"], only=["from-two-headers"])
    print(matrix_text(outcomes))
"""
from __future__ import annotations

import errno
import socket
import tempfile
import threading
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

from ..app import Forgelab, Settings
from ..forge import ForgeClient, ForgeError, ForgeResult, run_transaction
from ..core.policy import Policy, load_policy
from .catalogue import CORE_CHECK, POLICIES, Attack, all_entries

PASSING = ("pass", "none", "neutral")
ACTION_OUTCOME = {"accept": "accepted", "tag": "tagged", "quarantine": "quarantined",
                  "tempfail": "tempfailed", "reject": "rejected"}
MILDEST_FIRST = ("accepted", "tagged", "quarantined", "tempfailed", "rejected")


@dataclass
class Outcome:
    """What one policy did with one catalogue entry.

    :param outcome: accepted, tagged, quarantined, tempfailed or rejected (for VRFY/EXPN
        probes: accepted when the server disclosed a user, rejected when it did not).
    :param caught_by: the check(s) behind the outcome (``smtp`` = the SMTP core's syntax check).
    :param reacted: every check that gave a verdict other than pass, none or neutral.
    :param missed: expected defences that ran (or should have) and did not react.
    :param delivered: messages stored (2 when a smuggled message got through).
    :param from_views: per stored message, the From as the server parsed it and as each
        parser of the from-ambiguity defence reads it.
    """

    attack: str
    policy: str
    outcome: str
    expected: str | None
    ok: bool
    caught_by: list[str] = field(default_factory=list)
    reacted: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    reply: str = ""
    delivered: int = 0
    legit: bool = False
    problems: list[str] = field(default_factory=list)
    from_views: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class _SessionEvents:
    """Bus subscriber: every event filed under its SMTP session, sessions found by client address."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_peer: dict[tuple[str, int], str] = {}
        self._events: dict[str, list[dict]] = defaultdict(list)

    def __call__(self, record: dict) -> None:
        with self._lock:
            session = record.get("session") if isinstance(record.get("session"), dict) else None
            if record["kind"] == "session.open" and session and record.get("protocol") == "smtp":
                self._by_peer[(session.get("peer_ip"), session.get("peer_port"))] = session["id"]
            sid = record.get("session_id") or (session or {}).get("id")
            if sid:
                self._events[sid].append(record)

    def for_peer(self, address: tuple[str, int] | None) -> list[dict]:
        with self._lock:
            sid = self._by_peer.get(tuple(address)) if address else None
            return list(self._events.get(sid, [])) if sid else []


def can_bind(ip: str) -> bool:
    """Whether this machine lets a socket bind ``ip`` (all of 127.0.0.0/8 on Linux)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((ip, 0))
        return True
    except OSError as exc:
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EINVAL):
            return False
        raise


def play(attack: Attack, host: str, port: int, bind: bool = True,
         timeout: float = 10.0) -> tuple[ForgeResult | list, tuple[str, int] | None]:
    """Send one catalogue entry. Returns (the ForgeResult, or for probes the list of replies;
    the client's address, which finds the session's events)."""
    script = attack.script
    client = ForgeClient(host, port, source_ip=script.source_ip if bind else None, timeout=timeout)
    try:
        client.connect()
        if script.probes:
            replies = []
            if not bind:
                client.xclient(script.source_ip)
            client.ehlo(script.helo) if script.esmtp else client.helo(script.helo)
            for line in script.probes:
                replies.append(client.command(line))
            client.quit()
            return replies, client.local_address
        tx = script.transaction()
        if not bind:
            tx.xclient = script.source_ip
        return run_transaction(client, tx), client.local_address
    except ForgeError as exc:
        return ForgeResult("error", "network", None, str(exc), client.transcript), client.local_address
    finally:
        client.close()


def _enabled(policy, check: str) -> bool:
    enabled = policy.enabled_defences()
    return check in enabled or check.rsplit("-", 1)[0] in enabled


def judge(attack: Attack, policy, played, events: list[dict], store) -> Outcome:
    """Turn one session's events and replies into an :class:`Outcome`."""
    result, _ = played
    name = policy.name
    expected = attack.expected_for(name)
    verdicts = [e for e in events if e["kind"] == "verdict"]
    delivered = [e for e in events if e["kind"] == "message.delivered"]
    rejected = [e for e in events if e["kind"] == "message.rejected"]
    reacted = list(dict.fromkeys(v["verdict"]["check"] for v in verdicts if v["verdict"]["result"] not in PASSING))
    problems: list[str] = []
    caught: list[str] = []
    if attack.script.probes:
        disclosed = [r for r in result if r.code == 250]
        outcome = "accepted" if disclosed else "rejected"
        reply = " | ".join(str(r) for r in result)
        if not disclosed:
            caught, reacted = ["disclosure"], reacted + ["disclosure"]
    else:
        reply = str(result.reply) if result.reply else (result.error or "")
        outcomes = [ACTION_OUTCOME[e["action"]] for e in delivered] + [ACTION_OUTCOME[e["action"]] for e in rejected]
        if outcomes:
            outcome = min(outcomes, key=MILDEST_FIRST.index)
        elif result.outcome in ("rejected", "tempfailed"):
            outcome = result.outcome  # refused by the SMTP core itself (syntax), no defence involved
            caught = [CORE_CHECK]
            reacted.append(CORE_CHECK)
        elif result.outcome == "accepted":
            outcome, problems = "accepted", ["the server accepted the message but published no delivery event"]
        else:
            outcome = "error"
            problems.append(f"the conversation failed: {result.error}")
        if outcome in ("rejected", "tempfailed") and rejected:
            caught = list(dict.fromkeys(e["deciding"] for e in rejected if e.get("deciding")))
        elif outcome in ("tagged", "quarantined"):
            action = {"tagged": "tag", "quarantined": "quarantine"}[outcome]
            caught = list(dict.fromkeys(v["verdict"]["check"] for v in verdicts if v.get("action") == action))
            if not caught:  # the message-stage fold publishes no per-verdict action; use the policy
                caught = [v["check"] for e in delivered for v in e["verdicts"]
                          if policy.action_for(_as_verdict(v)) == action]
                caught = list(dict.fromkeys(caught))
    if len(delivered) > 1 and expected != "accepted":
        problems.append(f"{len(delivered)} messages were stored from one DATA: a smuggled message got through")
    missed = []
    seen = {v["verdict"]["check"] for v in verdicts}
    for check in attack.defences:
        if check in reacted:
            continue
        if check in (CORE_CHECK, "disclosure"):
            continue  # not plugins with verdicts: the outcome itself shows whether they acted
        if _enabled(policy, check) and (check in seen or delivered):
            missed.append(check)
    if missed:
        problems.append(f"expected {', '.join(missed)} to react; {'it' if len(missed) == 1 else 'they'} did not")
    if attack.legit:
        failed = [c for c in reacted if c != "disclosure"]
        if failed:
            problems.append(f"legitimate mail marked as failed by {', '.join(failed)}")
    if attack.must_not_store and delivered:
        leaked = [loc for e in delivered for loc in e.get("locations", [])
                  if attack.must_not_store in _read_stored(store, loc)]
        if leaked:
            problems.append("a forged header the server must strip was stored: " + attack.must_not_store[:60].decode("utf-8", "replace"))
    if expected is not None and outcome != expected:
        problems.insert(0, f"expected {expected}, got {outcome}")
    views = [_from_view(e, verdicts) for e in delivered]
    return Outcome(attack.id, name, outcome, expected, not problems, caught, reacted, missed, reply,
                   len(delivered), attack.legit, problems, views)


def _as_verdict(d: dict):
    from ..verdicts import Verdict

    return Verdict(d["check"], d["result"], d.get("reason", ""), d.get("action"))


def _read_stored(store, location) -> bytes:
    try:
        return store.read_at(location)
    except Exception:
        return b""


def _from_view(delivered: dict, verdicts: list[dict]) -> dict:
    """Item 6: the From as the server parsed it, next to each parser's reading (from-ambiguity's details)."""
    view = {"message_id": delivered.get("message_id"), "server": delivered.get("from_")}
    for event in verdicts:  # the verdict events: message.delivered lists only each check and result
        v = event["verdict"]
        if v["check"] == "from-ambiguity" and event.get("message_id") == view["message_id"]:
            view["parsers"] = v.get("details", {}).get("parsers", {})
            view["result"] = v["result"]
    return view


def _policies(policies) -> list:
    return [p if isinstance(p, Policy) else load_policy(p) for p in (policies or POLICIES)]


def run_policy(policy, entries: Sequence[Attack], progress: Callable[[Outcome], None] | None = None,
               bind: bool | None = None) -> list[Outcome]:
    """Start one server with ``policy`` (a name, a file or a Policy), play ``entries``, stop it."""
    policy = policy if isinstance(policy, Policy) else load_policy(policy)
    bind = can_bind(entries[0].script.source_ip) if bind is None and entries else bool(bind)
    out = []
    with tempfile.TemporaryDirectory(prefix="forgelab-attacks-") as data_dir:
        app = Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=data_dir, policy=policy,
                                event_log=False))
        recorder = _SessionEvents()
        app.bus.subscribe(recorder)
        with app:
            host, port = app.smtp.address
            for attack in entries:
                played = play(attack, host, port, bind=bind)
                events = recorder.for_peer(played[1])
                outcome = judge(attack, app.context.rules.policy, played, events, app.store)
                out.append(outcome)
                if progress:
                    progress(outcome)
    return out


def run_catalogue(policies: list[str] | None = None, only: list[str] | None = None,
                  progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run the catalogue (attacks and legitimate messages) under each policy (default: the shipped three).

    :param only: attack ids to run (default: all); an unknown id raises KeyError.
    :param progress: called with each Outcome as soon as it is known (from worker threads).
    :return: Outcomes, policy by policy in the order given, attacks in catalogue order.
    """
    entries = list(all_entries())
    if only:
        known = {a.id for a in entries}
        unknown = [i for i in only if i not in known]
        if unknown:
            raise KeyError(f"unknown attack id(s): {', '.join(unknown)}")
        entries = [a for a in entries if a.id in set(only)]
    loaded = _policies(policies)
    results: dict[int, list[Outcome]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def report(outcome: Outcome) -> None:
        if progress:
            with lock:
                progress(outcome)

    def worker(index: int, policy) -> None:
        try:
            results[index] = run_policy(policy, entries, report)
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i, p), name=f"attacks-{p.name}") for i, p in enumerate(loaded)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [o for i in range(len(loaded)) for o in results[i]]


def _cell(o: Outcome) -> str:
    text = o.outcome + (f" x{o.delivered}" if o.delivered > 1 else "")
    if o.caught_by and o.outcome != "accepted":
        shown = o.caught_by[:2] + (["..."] if len(o.caught_by) > 2 else [])
        text += f" [{','.join(shown)}]"
    if not o.ok:
        text = "! " + text + (f" (want {o.expected})" if o.expected and o.expected != o.outcome else "")
    return text


def matrix_text(outcomes: Iterable[Outcome]) -> str:
    """The attack x policy matrix, then every outcome that differs from the catalogue and why."""
    outcomes = list(outcomes)
    policies = list(dict.fromkeys(o.policy for o in outcomes))
    attacks = list(dict.fromkeys(o.attack for o in outcomes))
    cells = {(o.attack, o.policy): o for o in outcomes}
    first = max([len("attack")] + [len(a) for a in attacks])
    widths = {p: max([len(p)] + [len(_cell(cells[(a, p)])) for a in attacks if (a, p) in cells]) for p in policies}
    lines = ["  ".join([f"{'attack':<{first}}"] + [f"{p:<{widths[p]}}" for p in policies]).rstrip()]
    for a in attacks:
        row = [f"{a:<{first}}"] + [f"{_cell(cells[(a, p)]) if (a, p) in cells else '-':<{widths[p]}}" for p in policies]
        lines.append("  ".join(row).rstrip())
    bad = [o for o in outcomes if not o.ok]
    lines.append("")
    lines.append(f"{len(attacks)} entries x {len(policies)} policies: {len(outcomes) - len(bad)} as expected, "
                 f"{len(bad)} differ")
    for o in bad:
        lines.append(f"  ! {o.attack} under {o.policy}: {'; '.join(o.problems)}")
    return "\n".join(lines)
