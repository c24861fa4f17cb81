"""What every content defence needs to know about one message's header, computed once and shared.

Not a plugin (no hooks): the defences call :func:`facts` and get the message's
:class:`Facts`, kept in ``envelope.cache``: the header block as a lenient MTA splits it,
and which addresses each parser sees in a field. Everything is attacker input: nothing
here raises.

Four address parsers are compared, the way different real programs read mail:

- ``policy.default``: Python's modern ``email`` parser (the ``message`` forgelab shows);
- ``compat32``: Python's legacy parser with ``email.utils.getaddresses``;
- ``rfc5322``: the strict grammar of ``_rfc5322``, over the raw bytes (no obsolete
  syntax, encoded-words never decoded into addresses);
- ``lenient``: a lenient MTA that unfolds the raw header block and trims the field
  name, so ``" From:"``, ``"From :"`` and ``"From\\r\\n :"`` all count as From.
"""
from __future__ import annotations

import email.message
import email.parser
import email.policy
import email.utils

from ._domains import normalise_domain
from ._header_block import compat32_headers, compat32_value, header_lines, split_header_block
from ._mailbox import Mailbox, ParseResult, mailbox_of, utf8_text
from ._rfc5322 import parse_strict, simple_mailbox

CACHE_KEY = "forgelab.plugins.addresses"
# Fields of one name each parser reads: RFC 5322 allows one From; a second is already the
# finding, and reading hundreds would multiply the parsers' work (message_limits bounds each).
MAX_FIELDS = 2


class Facts:
    """What the content defences share about one message; build it with :func:`facts`.

    ``block`` is the raw header block split into fields; :meth:`parsers`, :meth:`mailboxes`
    and :meth:`domains` give what is in an address field, each worked out when first asked
    for and kept.
    """

    def __init__(self, message, raw: bytes):
        self.raw = raw
        self.message = message
        self._lines = header_lines(raw)
        self.block = split_header_block(raw, self._lines)
        # Kept answers: several defences ask for the same fields of the same message.
        self._parsed: dict[str, dict[str, ParseResult]] = {}
        self._compat: list[tuple[str, list[bytes]]] | None = None
        self._addresses: dict[tuple[str, ...], list[Mailbox]] = {}
        self._mailboxes: dict[str, list[Mailbox]] = {}

    def _compat32_values(self, name: str) -> list[str]:
        """``[str(v) for v in compat32_message.get_all(name)]``, without parsing the message."""
        if self._compat is None:
            self._compat = compat32_headers(self._lines[0])
        fetch = email.policy.compat32.header_fetch_parse
        return [str(fetch(k, compat32_value(lines))) for k, lines in self._compat if k.lower() == name][:MAX_FIELDS]

    def _default_message(self):
        """The message as ``policy.default`` parses it: the one the server parsed, or the header parsed now."""
        msg = self.message
        if isinstance(msg, email.message.Message) and msg.policy is not email.policy.compat32:
            return msg
        try:
            return email.parser.BytesParser(policy=email.policy.default).parsebytes(self.raw, headersonly=True)
        except Exception:
            return email.message.EmailMessage()

    def parsers(self, name: str) -> dict[str, ParseResult]:
        """Each parser's reading of every ``name`` field, in order (``from``, ``reply-to``...)."""
        name = name.lower()
        if name not in self._parsed:
            self._parsed[name] = {
                "policy.default": self._parse_default(name),
                "compat32": self._parse_compat32(name),
                "rfc5322": self._parse_rfc5322(name),
                "lenient": self._parse_lenient(name),
            }
        return self._parsed[name]

    def _parse_default(self, name: str) -> ParseResult:
        """The ``policy.default`` reading: the address objects of Python's modern header registry."""
        result = ParseResult()
        try:
            msg = self._default_message()
            # get_all() would parse every field of that name; only the first MAX_FIELDS are read.
            found = [(k, v) for k, v in msg.raw_items() if k.lower() == name][:MAX_FIELDS]
            values = [msg.policy.header_fetch_parse(k, v) for k, v in found]
            for value in values:
                addresses = getattr(value, "addresses", None)
                if addresses is None:
                    result.error = "policy.default did not parse it as an address field"
                    continue
                for a in addresses:
                    result.mailboxes.append(Mailbox(display=utf8_text(a.display_name or ""),
                                                    local=utf8_text(a.username or ""), domain=utf8_text(a.domain or "")))
        except Exception as exc:  # CPython's header parser has raised on odd input before
            result.error = f"policy.default raised {type(exc).__name__}"
        return result

    def _parse_compat32(self, name: str) -> ParseResult:
        """The ``compat32`` reading: the legacy parser's field values through ``getaddresses``."""
        result = ParseResult()
        try:
            result.mailboxes.extend(self._getaddresses(self._compat32_values(name)))
        except Exception as exc:
            result.error = f"compat32 raised {type(exc).__name__}"
        return result

    def _getaddresses(self, values: list[str]) -> list[Mailbox]:
        """The mailboxes ``email.utils.getaddresses(values)`` finds (empty ones dropped).

        compat32 and the lenient reading usually hand it the same one value, the lenient
        one with the blanks after the colon kept: getaddresses skips leading blanks before
        anything else, so one call serves both (an all-blank value gives only ``('', '')``,
        dropped either way).
        """
        if not values:
            return []
        if len(values) == 1:
            values = [values[0].lstrip(" \t")]
            simple = simple_mailbox(values[0])  # getaddresses reads the everyday shapes as the grammar does
            if simple is not None:
                return [simple]
        key = tuple(values)
        if key not in self._addresses:
            self._addresses[key] = [mailbox_of(display, addr) for display, addr in email.utils.getaddresses(values)
                                    if display or addr]
        return list(self._addresses[key])

    def _parse_rfc5322(self, name: str) -> ParseResult:
        """The ``rfc5322`` reading: the strict grammar over the well-formed fields only."""
        result = ParseResult()
        for f in self.block.get(name)[:MAX_FIELDS]:
            if not f.strict:
                continue
            one = parse_strict(f.value, groups=name not in ("from", "sender"))  # From and Sender hold no groups
            result.mailboxes.extend(one.mailboxes)
            if one.error and not result.error:
                result.error = f"line {f.line}: {one.error}"
        return result

    def _parse_lenient(self, name: str) -> ParseResult:
        """The ``lenient`` reading: every field a lenient MTA calls ``name``, through ``getaddresses``."""
        result = ParseResult()
        try:
            result.mailboxes.extend(self._getaddresses([f.value for f in self.block.get(name)[:MAX_FIELDS]]))
        except Exception as exc:
            result.error = f"lenient parser raised {type(exc).__name__}"
        return result

    def mailboxes(self, name: str) -> list[Mailbox]:
        """Every mailbox any parser saw in ``name``, de-duplicated, first parser first.

        Defences judge the union: an address one parser hides is still one a client
        may show.
        """
        name = name.lower()
        if name in self._mailboxes:
            return list(self._mailboxes[name])
        seen, out = set(), []
        for result in self.parsers(name).values():
            for m in result.mailboxes:
                ident = (m.key, m.display)
                if ident not in seen:
                    seen.add(ident)
                    out.append(m)
        self._mailboxes[name] = out
        return list(out)

    def domains(self, name: str) -> list[str]:
        """The domains of :meth:`mailboxes`, normalised and de-duplicated, in order."""
        out: dict[str, None] = {}  # ordered and de-duplicated in one pass
        for m in self.mailboxes(name):
            dom = normalise_domain(m.domain)
            if dom:
                out.setdefault(dom)
        return list(out)


def facts(envelope, message, raw) -> Facts:
    """The shared :class:`Facts` of this message, computed once per envelope."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    elif not isinstance(raw, (bytes, bytearray)):
        raw = b""
    raw = bytes(raw)
    cache = getattr(envelope, "cache", None)
    if not isinstance(cache, dict):
        return Facts(message, raw)
    hit = cache.get(CACHE_KEY)
    if hit is not None and hit.raw == raw:
        return hit
    made = Facts(message, raw)
    cache[CACHE_KEY] = made
    return made


