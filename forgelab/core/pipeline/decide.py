"""Folding a stage's verdicts with the policy into one decision, and the check that decided it.

In the flow (... -> hooks -> POLICY -> outcome -> store and events): the policy gives each
verdict an action (accept, tag, quarantine, tempfail, reject; ``Policy.action_for``); the
decision is the harshest of them. Its deciding verdict is one that got it, the first in the
policy's order of defences when several did (``spf-helo`` takes ``spf``'s place; checks the
policy does not list come after, in the order they were given). The refusal reply names that check first (``[dmarc] ...``), then
the other failing ones, ranked the same way (``ranked``); the outcome event names it too
(``deciding``), so no consumer has to read it back out of the reply.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..policy import Policy
from ...verdicts import ACTIONS, Verdict

PASSING = ("pass", "none", "neutral")


@dataclass
class Decision:
    """What the policy makes of some verdicts.

    :param action: the harshest action the policy gives any of them (``accept`` for none).
    :param verdicts: every verdict weighed, in the order the defences gave them.
    :param deciding: the verdict that decided ``action`` (None when accepted).
    :param ranked: the failing verdicts (a result other than pass, none or neutral, or an action
        other than accept), harshest action first, ties in policy order; ``deciding`` first.
    """

    action: str
    verdicts: list[Verdict] = field(default_factory=list)
    deciding: Verdict | None = None
    ranked: list[Verdict] = field(default_factory=list)

    @classmethod
    def fold(cls, verdicts: list[Verdict], policy: Policy) -> "Decision":
        """The harshest action the policy gives any verdict, and the verdicts ranked by it."""
        order = {name: i for i, name in enumerate(policy.defences)}
        scored = []
        for i, verdict in enumerate(verdicts):
            action = policy.action_for(verdict)
            if action != "accept" or verdict.result not in PASSING:
                scored.append(((-ACTIONS.index(action), _place(order, verdict.check), i), action, verdict))
        scored.sort(key=lambda s: s[0])
        ranked = [verdict for _, _, verdict in scored]
        if not scored or scored[0][1] == "accept":
            return cls("accept", verdicts, None, ranked)
        return cls(scored[0][1], verdicts, ranked[0], ranked)

    @property
    def refused(self) -> bool:
        return self.action in ("reject", "tempfail")

    @property
    def deciding_check(self) -> str | None:
        return self.deciding.check if self.deciding is not None else None

    def never_relay(self, address: str) -> "Decision":
        """A recipient that is not local, with no relay defence loaded: still never an open relay."""
        if any(v.check == "relay" for v in self.verdicts):
            return self
        denied = Verdict("relay", "fail", f"relay denied: {address} is not local")
        return Decision("reject", self.verdicts + [denied], denied, [denied] + self.ranked)


def _place(order: dict[str, int], check: str) -> int:
    """Where ``check`` comes in the policy's order: its defence's place (``spf-helo`` is ``spf``'s),
    after every defence listed when the policy does not list it."""
    return order.get(check, order.get(check.rsplit("-", 1)[0], len(order)))
