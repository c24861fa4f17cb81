"""Calling the plugins' hooks: the pipeline's only way into the defences.

In the flow (socket -> driver -> protocol core -> pipeline -> HOOKS -> policy -> outcome), a
stage (connect, helo, mail_from, rcpt_to, message) calls every implementation of its hook on
its own, in pluggy's order (tryfirst/trylast honoured), and collects what they return as
verdicts. One defence that raises, or returns something that is not a ``Verdict``, gives a
``temperror`` verdict for its check; every other defence still runs, and so does the session.
"""
from __future__ import annotations

import logging
from typing import Iterable, Iterator

import pluggy

from ..registry import plugin_name
from ...protocols.smtp import Reply
from ...verdicts import Verdict, collect

log = logging.getLogger("forgelab.core.pipeline")

# The hook each stage calls (see hookspecs.py).
STAGE_HOOKS = {
    "connect": "forgelab_connect",
    "helo": "forgelab_helo",
    "mail_from": "forgelab_mail_from",
    "rcpt_to": "forgelab_rcpt_to",
    "message": "forgelab_message",
}

Called = tuple[str, object, Exception | None]  # (plugin name, what it returned, what it raised)


def call_each(pm: pluggy.PluginManager, hook_name: str, kwargs: dict) -> Iterator[Called]:
    """Each implementation of ``hook_name`` on its own, given the arguments it asks for:
    yields (plugin name, returned value, exception or None)."""
    hook = getattr(pm.hook, hook_name)
    for impl in reversed(hook.get_hookimpls()):
        name = plugin_name(pm, impl.plugin)
        try:
            yield name, impl.function(*[kwargs[arg] for arg in impl.argnames]), None
        except Exception as exc:
            log.exception("plugin %s failed in %s", name, hook_name)
            yield name, None, exc


def stage_verdicts(called: Iterable[Called]) -> list[Verdict]:
    """The verdicts a stage's implementations gave, in order; a failed one becomes a temperror of its own."""
    verdicts: list[Verdict] = []
    for name, returned, exc in called:
        if exc is not None:
            verdicts.append(Verdict(name, "temperror", f"the {name} defence failed: {type(exc).__name__}: {exc}"))
            continue
        try:
            verdicts.extend(collect([returned]))
        except TypeError as bad:  # a plugin returned something that is not a Verdict
            verdicts.append(Verdict(name, "temperror", f"the {name} defence returned nonsense: {bad}"))
    return verdicts


def first_reply(called: Iterable[Called]) -> Reply | None:
    """The first reply an implementation gave (VRFY, EXPN); the others are not called."""
    for _, returned, _ in called:
        if returned is not None:
            return returned
    return None


def run_all(called: Iterable[Called]) -> None:
    """Call every implementation for what it does (``forgelab_rejected``, ``forgelab_delivered``)."""
    for _ in called:
        pass
