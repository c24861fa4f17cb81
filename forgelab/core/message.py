"""Parsing a received message once, for every defence to share."""
from __future__ import annotations

import collections
import email
import email._header_value_parser as _hvp
import email.feedparser
import email.headerregistry
import email.message
import email.policy
import functools
import logging
import re

from .address_list import address_list
from .message_limits import HeaderCounter, LimitExceeded, Limits, check_header_section
from ..protocols.smtp.replies import Reply

log = logging.getLogger(__name__)


class _HeaderClasses(email.headerregistry.HeaderRegistry):
    """The stdlib registry builds a new class on every header lookup; one per name is enough.

    Address fields are read in pieces (:func:`forgelab.core.address_list.address_list`).
    """

    @functools.lru_cache(maxsize=256)
    def __getitem__(self, name):
        cls = super().__getitem__(name)
        if issubclass(cls, email.headerregistry.AddressHeader):
            cls = type(cls.__name__, (cls,), {"value_parser": staticmethod(address_list)})
        return cls


class _ParseOnce(email.policy.EmailPolicy):
    """``email.policy.default`` that parses a given header field once, not once per defence that reads it.

    Parsed headers are immutable and depend only on (name, value), so small ones are shared by
    every message; bigger ones are kept for the message only (:meth:`for_message`).
    """

    def header_fetch_parse(self, name, value):
        if hasattr(value, "name"):  # already parsed
            return super().header_fetch_parse(name, value)
        if len(value) <= 2048:
            return _parsed_header(MESSAGE_POLICY, name, value)
        cache = self.__dict__.get("_own")
        if cache is None:
            return super().header_fetch_parse(name, value)
        if (name, value) not in cache:  # parsing a big field is costly: the feed parser alone asks 4 times
            cache[name, value] = super().header_fetch_parse(name, value)
        return cache[name, value]

    def for_message(self) -> "_ParseOnce":
        """This policy with a cache of its own, for the big fields of one message."""
        policy = self.clone()
        object.__setattr__(policy, "_own", {})  # policies are read-only; this is not a setting
        return policy


@functools.lru_cache(maxsize=4096)
def _parsed_header(policy, name, value):
    return email.policy.EmailPolicy.header_fetch_parse(policy, name, value)


MESSAGE_POLICY = _ParseOnce(header_factory=_HeaderClasses())


def _encoded_word_alone(get_encoded_word):
    """CPython gh-136063: each parsed encoded word keeps the whole rest of its header in ``.cte``,
    so n words hold O(n^2) memory (20,000 words: GBs). Keep only the word itself."""

    @functools.wraps(get_encoded_word)
    def wrapper(value, *args, **kwargs):
        ew, rest = get_encoded_word(value, *args, **kwargs)
        if isinstance(value, str) and isinstance(rest, str) and getattr(ew, "cte", None) is value:
            ew.cte = value[:len(value) - len(rest)]
        return ew, rest

    wrapper.forgelab_fixed = True
    return wrapper


if not getattr(_hvp.get_encoded_word, "forgelab_fixed", False):
    _hvp.get_encoded_word = _encoded_word_alone(_hvp.get_encoded_word)


# email.feedparser's boundary regex: (?P<sep>SEPARATOR)(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>...)?$
_BOUNDARY_RE_HEAD, _BOUNDARY_RE_TAIL = "(?P<sep>", r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"


class _Lines(email.feedparser.BufferedSubFile):
    """The feed parser's line buffer, which tries every open boundary on every line: O(lines x depth).

    This one first asks a set whether a line can end a part at all; only the few that can go
    through the stdlib's own checks, so the result is the same.
    """

    def __init__(self):
        super().__init__()
        self._separators = collections.Counter()
        self._keys: list[str | None] = []
        self._exact = 0  # matchers this class does not understand: then every line is tried

    def push_eof_matcher(self, pred):
        pattern = getattr(getattr(pred, "__self__", None), "pattern", None)
        key = None
        if isinstance(pattern, str) and pattern.startswith(_BOUNDARY_RE_HEAD) and pattern.endswith(_BOUNDARY_RE_TAIL):
            key = re.sub(r"\\(.)", r"\1", pattern[len(_BOUNDARY_RE_HEAD):-len(_BOUNDARY_RE_TAIL)], flags=re.S)
            if key[-1:] in (" ", "\t"):  # trailing blanks would be stripped below
                key = None
        elif pred is not email.feedparser.NLCRE.match:  # that one matches only empty lines
            self._exact += 1
        self._keys.append(key)
        if key is not None:
            self._separators[key] += 1
        super().push_eof_matcher(pred)

    def pop_eof_matcher(self):
        pred = super().pop_eof_matcher()
        key = self._keys.pop()
        if key is not None:
            self._separators[key] -= 1
        elif pred is not email.feedparser.NLCRE.match:
            self._exact -= 1
        return pred

    def readline(self):
        if self._lines and not self._exact:
            line = self._lines[0]
            if line[:1] not in ("\r", "\n") and not self._may_end_part(line):
                return self._lines.popleft()
        return super().readline()

    def _may_end_part(self, line: str) -> bool:
        if line[:2] != "--":
            return False
        key = line.rstrip("\r\n").rstrip(" \t")
        return self._separators[key] > 0 or (key.endswith("--") and self._separators[key[:-2]] > 0)


class _LimitedParser(email.feedparser.BytesFeedParser):
    """The stdlib feed parser that stops at ``max_mime_depth`` nested parts, ``max_mime_parts``
    parts, or a MIME part's header section over the caps of the message's own."""

    def __init__(self, limits: Limits | None, counter: HeaderCounter | None = None, **kwargs):
        super().__init__(**kwargs)
        self._input = _Lines()
        self._limits = limits
        self._parts = 0
        self._counter = counter  # has counted the message's own header section already

    def _new_message(self):
        if self._limits is not None:
            self._parts += 1
            if self._parts > self._limits.max_mime_parts:
                raise LimitExceeded("max_mime_parts", Reply(554, "5.6.0", f"Too many MIME parts: more than "
                                    f"{self._limits.max_mime_parts} (limit {self._limits.max_mime_parts})"))
            if len(self._msgstack) > self._limits.max_mime_depth:  # the parts it is nested in
                raise LimitExceeded("max_mime_depth", Reply(554, "5.6.0", f"MIME parts nested too deep: more than "
                                    f"{self._limits.max_mime_depth} levels (limit {self._limits.max_mime_depth})"))
        super()._new_message()

    def _parse_headers(self, lines):
        # A MIME part's header section, under the same caps, before anything parses a value of it.
        if self._counter is not None and len(self._msgstack) > 1:
            self._counter.section()
            for line in lines:
                self._counter.line(line.rstrip("\r\n"))
            self._counter.end_field()
        super()._parse_headers(lines)


def parse_message(raw: bytes, limits: Limits | None = None) -> email.message.EmailMessage:
    """``raw`` as an ``EmailMessage`` (``email.policy.default`` semantics).

    With ``limits``, raises :class:`LimitExceeded` for a message over one of them (checked
    before anything reads a header); otherwise never raises.
    """
    counter = check_header_section(raw, limits) if limits is not None else None
    try:
        parser = _LimitedParser(limits, counter, policy=MESSAGE_POLICY.for_message())
        parser.feed(raw)
        message = parser.close()
    except LimitExceeded:
        raise
    except Exception as exc:  # the email package rarely raises, but attacker bytes are endless
        log.warning("message did not parse: %s", exc)
        return email.message.EmailMessage()
    return message
