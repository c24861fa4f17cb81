"""Read the header From the way several real parsers do, and fail when they disagree."""
from __future__ import annotations

import re

import forgelab

from ._facts import facts
from ._findings import finding, show, shown_list, verdict

_ADDRESS_LIKE = re.compile(r"[^\s<>@\"]+@[^\s<>@\"]+\.[^\s<>@\"]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class FromAmbiguity:
    """Would every mail program show the same author?

    The header From is read by four parsers (see ``forgelab.plugins._facts``):
    Python's ``email`` with ``policy.default``, with ``policy.compat32`` plus
    ``email.utils.getaddresses``, a strict RFC 5322 grammar (no obsolete syntax,
    encoded-words never decoded into addresses), and a lenient reading that trims
    field names. ``details["parsers"]`` is what each would show; the web view
    displays it.

    ``fail`` when: there is more than one From header (counted leniently, so
    ``" From:"``, ``"From :"`` and a folded ``"From\\r\\n :"`` count); the parsers
    disagree on the address(es); any of them finds more than one mailbox; none finds
    an address; a local part holds an ``@`` (``"a\\@b"@c`` shows as ``a@b``); the
    parsers show different display names and one of them looks like an address
    (comment injection); the field holds a NUL or another control character.
    ``none`` when there is no From header at all (``headers`` reports that).

    Settings: none.
    """

    name = "from-ambiguity"

    def __init__(self, settings: dict | None = None):
        self.settings = dict(settings or {})

    @forgelab.hookimpl
    def forgelab_message(self, envelope, message, raw):
        f = facts(envelope, message, raw)
        fields = f.block.get("from")
        parsers = f.parsers("from")
        details = {
            "parsers": {name: shown_list(show(m.shown()) for m in r.mailboxes) for name, r in parsers.items()},
            "addresses": {name: shown_list(show(m.address) for m in r.mailboxes) for name, r in parsers.items()},
            "errors": {name: r.error for name, r in parsers.items() if r.error},
            "from_fields": shown_list({"line": x.line, "value": show(x.value), "strict": x.strict} for x in fields),
        }
        if not fields and not any(r.mailboxes for r in parsers.values()):
            return forgelab.Verdict(check=self.name, result="none", reason="There is no From header to parse.",
                                    details=details)
        # RFC 5322 3.6.2: several authors need a Sender; of one domain they speak for one domain (DMARCbis).
        co_authors = len(f.domains("from")) == 1 and bool(f.mailboxes("sender"))
        findings = self._fields(fields) + self._agreement(parsers, co_authors) + self._contents(parsers)
        shown = next((r.mailboxes for r in parsers.values() if r.mailboxes), [])
        pass_reason = f"Every parser reads the From the same way: {show(shown[0].shown()) if shown else '?'}."
        return verdict(self.name, findings, pass_reason, **details)

    @staticmethod
    def _fields(fields) -> list[dict]:
        out = []
        if len(fields) > 1:
            lines = ", ".join(shown_list((str(x.line) for x in fields), 10))
            out.append(finding("fail", f"There are {len(fields)} From headers (lines {lines}); "
                                       "different programs show different ones."))
        for x in fields:
            if _CONTROL.search(x.value):
                char = _CONTROL.search(x.value).group()
                out.append(finding("fail", f"The From header on line {x.line} holds the control character "
                                           f"{show(char)}; programs disagree about where it ends."))
        return out

    @staticmethod
    def _agreement(parsers, co_authors: bool = False) -> list[dict]:
        out = []
        readings = {name: r.keys for name, r in parsers.items()}
        if not any(readings.values()):
            return [finding("fail", "No parser finds an address in the header From.")]
        if len({tuple(k) for k in readings.values()}) > 1:
            said = "; ".join(
                f"{name} sees {', '.join(shown_list((show(m.address) for m in r.mailboxes), 5)) or 'nothing'}"
                + (f" ({show(r.error)})" if r.error and not r.mailboxes else "")
                for name, r in parsers.items())
            out.append(finding("fail", f"The parsers disagree about the From address: {said}."))
        most = max(len(k) for k in readings.values())
        if most > 1 and co_authors:
            out.append(finding("neutral", f"The header From holds {most} authors, all of one domain, with the Sender "
                                          "RFC 5322 asks for: a client may show any one of them."))
        elif most > 1:
            out.append(finding("fail", f"The header From holds {most} mailboxes; a client may show any one of them."))
        return out

    @staticmethod
    def _contents(parsers) -> list[dict]:
        out = []
        mailboxes = [m for r in parsers.values() for m in r.mailboxes]
        odd = next((m for m in mailboxes if "@" in m.local), None)
        if odd:
            out.append(finding("fail", f"The local part of {show(odd.address)} holds an @, so a client may show "
                                       f"{show(odd.local)} as if it were the address."))
        displays = {m.display for m in mailboxes}
        if len(displays) > 1:
            fake = next((d for d in displays if _ADDRESS_LIKE.search(d[:300])), None)
            if fake:
                out.append(finding("fail", f"The parsers show different display names, one of them looking like an "
                                           f"address ({show(fake)}): a comment or quote was read as a name."))
        return out
