"""Folding a stage's verdicts with the policy into one decision, and the check that decided it.

In the flow (... -> hooks -> POLICY -> outcome -> store and events): the policy gives each
verdict an action (accept, tag, quarantine, tempfail, reject; ``Policy.action_for``); the
decision is the harshest of them, and its deciding verdict the first one that got it. The
refusal reply names that check (``[dmarc] ...``), and so does the outcome event
(``deciding``), so no consumer has to read it back out of the reply.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..policy import Policy
from ...verdicts import Verdict, harshest


@dataclass
class Decision:
    """What the policy makes of some verdicts.

    :param action: the harshest action the policy gives any of them (``accept`` for none).
    :param verdicts: every verdict weighed, in the order the defences gave them.
    :param deciding: the first verdict that got ``action`` (None when accepted).
    """

    action: str
    verdicts: list[Verdict] = field(default_factory=list)
    deciding: Verdict | None = None

    @classmethod
    def fold(cls, verdicts: list[Verdict], policy: Policy) -> "Decision":
        """The harshest action the policy gives any verdict, and the first verdict that got it."""
        decision = cls("accept", verdicts)
        for verdict in verdicts:
            action = policy.action_for(verdict)
            if harshest([action, decision.action]) != decision.action:
                decision.action, decision.deciding = action, verdict
        return decision

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
        return Decision("reject", self.verdicts + [denied], denied)
