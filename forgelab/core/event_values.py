"""The values the event records hold of a verdict, an envelope and a refused message, bounded."""
from __future__ import annotations

from .events import bounded, clip


def verdict_detail(verdict) -> dict:
    """A verdict for its ``verdict`` event, bounded; without what the stored message or the event
    already holds: the parts of its Authentication-Results header, a copy of its reason."""
    record = verdict.as_dict()
    record["details"] = {k: v for k, v in record["details"].items()
                         if k != "authres" and not (k == "reason" and v == verdict.reason)}
    return bounded(record)


def verdict_summary(verdict) -> dict:
    """A verdict as the outcome events list it: the ``verdict`` events give the rest."""
    return {"check": verdict.check, "result": verdict.result, "action": verdict.action}


MAX_SOURCE = 8192  # octets of a refused message kept in its event (the web view shows them)


def source_kept(raw: bytes) -> str:
    """What a ``message.rejected`` event keeps of a message refused at DATA: its start."""
    text = raw[:MAX_SOURCE].decode("utf-8", "replace")
    return text if len(raw) <= MAX_SOURCE else f"{text}… [{len(raw) - MAX_SOURCE} more octets]"


def envelope_summary(envelope) -> dict:
    """The envelope for an event: every recipient (the policy caps how many), each string clipped."""
    return {"id": envelope.id, "mail_from": clip(envelope.mail_from, 512),
            "rcpt_tos": [clip(r, 512) for r in envelope.rcpt_tos], "mail_params": bounded(dict(envelope.mail_params))}

