"""How a content defence reports: findings, worded with attacker text shown safely, folded into one Verdict.

Not a plugin (no hooks): a defence collects :func:`finding` dicts while it looks at a
message, then returns :func:`verdict` of them; :func:`show` and :func:`shown_list` keep
what an attacker wrote readable and small in a reason or in the details.
"""
from __future__ import annotations

from forgelab import Verdict
from forgelab.core.printable import printable

# Items of a list a verdict's details show.
SHOWN = 20
# Results from mildest to harshest: the harshest finding gives the verdict its result.
_SEVERITY = ("pass", "none", "neutral", "softfail", "fail")


def show(text, limit: int = 200) -> str:
    """Attacker text made safe for a reason sentence: control characters visible, length capped."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    text = printable(text)
    return text if len(text) <= limit else text[:limit] + "..."


def shown_list(items, limit: int = SHOWN) -> list:
    """The first ``limit`` items, then one ``"... and N more"`` (verdict details stay small)."""
    items = list(items)
    return items if len(items) <= limit else items[:limit] + [f"... and {len(items) - limit} more"]


def finding(result: str, reason: str, **details) -> dict:
    """One thing a defence noticed; :func:`verdict` folds them."""
    return {"result": result, "reason": reason, **details}


def verdict(check: str, findings: list[dict], pass_reason: str, **details) -> Verdict:
    """One Verdict: the harshest finding's result, every finding's sentence, ``pass`` if none.

    One verdict per defence keeps one ``X-Forgelab-Verdict`` line per check; the
    individual findings stay in ``details["findings"]`` for the web view.
    """
    if not findings:
        return Verdict(check=check, result="pass", reason=pass_reason, details={"findings": [], **details})
    ordered = sorted(findings, key=lambda f: -_SEVERITY.index(f["result"]))
    return Verdict(check=check, result=ordered[0]["result"], reason=" ".join(f["reason"] for f in ordered),
                   details={"findings": ordered, **details})
