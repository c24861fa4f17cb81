"""Parsing a received message once, for every defence to share."""
from __future__ import annotations

import email
import email.headerregistry
import email.message
import email.policy
import functools
import logging

log = logging.getLogger(__name__)


class _HeaderClasses(email.headerregistry.HeaderRegistry):
    """The stdlib registry builds a new class on every header lookup; one per name is enough."""

    @functools.lru_cache(maxsize=256)
    def __getitem__(self, name):
        return super().__getitem__(name)


class _ParseOnce(email.policy.EmailPolicy):
    """``email.policy.default`` that parses a given header field once, not once per defence that reads it.

    Parsed headers are immutable and depend only on (name, value), so they are shared.
    """

    def header_fetch_parse(self, name, value):
        if hasattr(value, "name") or len(value) > 2048:  # already parsed, or too big to keep
            return super().header_fetch_parse(name, value)
        return _parsed_header(self, name, value)


@functools.lru_cache(maxsize=4096)
def _parsed_header(policy, name, value):
    return email.policy.EmailPolicy.header_fetch_parse(policy, name, value)


MESSAGE_POLICY = _ParseOnce(header_factory=_HeaderClasses())


def parse_message(raw: bytes) -> email.message.EmailMessage:
    """``raw`` as an ``EmailMessage`` (``email.policy.default`` semantics); never raises."""
    try:
        return email.message_from_bytes(raw, policy=MESSAGE_POLICY)
    except Exception as exc:  # the email package rarely raises, but attacker bytes are endless
        log.warning("message did not parse: %s", exc)
        return email.message.EmailMessage()
