"""The pipeline: what the server does with each SMTP event the protocol core hands it.

Where it sits in the flow of one message::

    socket -> driver -> protocol core -> PIPELINE -> hooks -> policy -> outcome -> store and events
    (server/)  (smtp/)                    (plugins/)  (policy.py)

One ``SmtpPipeline`` per session turns each event (``Helo``, ``MailFrom``, ...) into a
``Reply``. Read its parts in this order:

- ``context.py``: what every session shares (lab, store, bus, the current policy and plugins).
- ``smtp.py``: ``SmtpPipeline``, one method per protocol event; the only place that orders the steps.
- ``stages.py``: calls the plugins' hooks, one implementation at a time; what they return becomes verdicts.
- ``decide.py``: folds a stage's verdicts with the policy into one ``Decision`` and the check that decided it.
- ``replies.py``: every reply the pipeline words, by name.
- ``deliver.py``: the stored copies (headers added) and their disk writes, then the answer.

Events go out as the typed records of ``forgelab/core/event_records.py``.
"""
from ..registry import plugin_name
from .context import Rules, ServerContext
from .decide import Decision
from .deliver import PendingDelivery
from .smtp import SmtpPipeline

__all__ = ["Decision", "PendingDelivery", "Rules", "ServerContext", "SmtpPipeline", "plugin_name"]
