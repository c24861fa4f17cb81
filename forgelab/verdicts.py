"""Verdicts from defences, and how a policy folds them into one action."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")

# Ordered from mildest to harshest: folding keeps the harshest.
ACTIONS = ("accept", "tag", "quarantine", "tempfail", "reject")


def harshest(actions: Iterable[str]) -> str:
    return max(actions, key=ACTIONS.index, default="accept")


@dataclass(frozen=True)
class Verdict:
    """What one defence concluded about one thing it checked.

    :param check: the defence's name (``spf``, ``mismatch``, ...), shown in replies
        as ``[check]``.
    :param result: one of :data:`RESULTS`.
    :param reason: a sentence a student can read.
    :param action: a suggestion the policy may honour (e.g. DMARC's published
        ``p=``); the policy decides.
    :param details: extra facts for the web view and the event log.
    """

    check: str
    result: str
    reason: str = ""
    action: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.result not in RESULTS:
            raise ValueError(f"verdict result must be one of {', '.join(RESULTS)}, not {self.result!r}")
        if self.action is not None and self.action not in ACTIONS:
            raise ValueError(f"verdict action must be one of {', '.join(ACTIONS)}, not {self.action!r}")
        if not self.check or not isinstance(self.check, str):
            raise ValueError("verdict check must be a non-empty name")

    def header_value(self) -> str:
        """The value of this verdict's ``X-Forgelab-Verdict`` header."""
        reason = " ".join(self.reason.split())
        return f"{self.check}={self.result} ({reason})" if reason else f"{self.check}={self.result}"

    def as_dict(self) -> dict:
        return {"check": self.check, "result": self.result, "reason": self.reason,
                "action": self.action, "details": dict(self.details)}


def collect(returned) -> list[Verdict]:
    """Flatten what hook implementations returned (Verdict, list of them or None)."""
    out: list[Verdict] = []
    for item in returned:
        if item is None:
            continue
        if isinstance(item, Verdict):
            out.append(item)
        elif isinstance(item, (list, tuple)):
            out.extend(collect(item))
        else:
            raise TypeError(f"a hook returned {type(item).__name__}; expected Verdict, a list of them, or None")
    return out
