"""RFC 5322 section 3.6 header counts and a well-formed header block."""
from __future__ import annotations

import forgelab

from ._facts import facts
from ._findings import SHOWN, finding, show, verdict

# RFC 5322 3.6: "at most one" of these (From and Date: exactly one, checked apart).
AT_MOST_ONE = ("Subject", "To", "Cc", "Bcc", "Message-ID", "Sender", "Reply-To", "In-Reply-To", "References")


class Headers:
    """Is the header block one a careful parser and a careless one read the same way?

    Counts are taken both on the raw bytes (a lenient reading that trims field
    names) and on the parsed message, and the larger is judged, because the
    ``email`` package drops or merges some fields (``" From:"`` first,
    ``"From :"``) that other software still reads.

    - ``fail``: no From, or more than one; more than one Date; more than one of
      Subject, To, Cc, Bcc, Message-ID, Sender, Reply-To, In-Reply-To, References;
      a From with no parsable address; a From with several mailboxes but no Sender;
      only a Sender and no From; whitespace before a colon (``From :``); a first
      header line that starts with whitespace; a line in the header block that is not
      a field (no colon, or a folded field name);
    - ``softfail``: no Date (RFC 5322 requires one, but it is not a forgery by itself).

    Settings: none.
    """

    name = "headers"

    def __init__(self, settings: dict | None = None):
        self.settings = dict(settings or {})

    @forgelab.hookimpl
    def forgelab_message(self, envelope, message, raw):
        f = facts(envelope, message, raw)
        parsed = self._parsed_counts(message)
        counts = {name: max(parsed.get(name.lower(), 0), f.block.count(name)) for name in ("From", "Date") + AT_MOST_ONE}
        findings = self._layout(f) + self._counts(counts) + self._from(f, counts)
        pass_reason = "The header block is well formed: one From, one Date, no duplicated single fields."
        return verdict(self.name, findings, pass_reason, counts=counts)

    @staticmethod
    def _parsed_counts(message) -> dict[str, int]:
        """How often each field name (lower case) occurs in the parsed message."""
        counts: dict[str, int] = {}
        try:
            # keys() only: get_all() would parse every value again
            for key in message.keys() if message is not None else ():
                key = key.lower()
                counts[key] = counts.get(key, 0) + 1
        except Exception:  # a message object we cannot read; the raw counts stand
            return {}
        return counts

    @staticmethod
    def _layout(f) -> list[dict]:
        out: list[dict] = []
        block = f.block
        if block.first_line_indented:
            out.append(finding(
                "fail", "The first header line starts with whitespace: some programs drop it, others read it as a header.",
                line=1))
        for field in block.fields:
            if field.folded_name:
                out.append(finding(
                    "fail", f"Line {field.line}: the field name {show(field.name)} is folded onto the next line "
                    "before its colon; strict parsers stop reading headers there, lenient ones see the field.",
                    line=field.line))
            elif field.space_before_colon:
                out.append(finding(
                    "fail", f"Line {field.line}: whitespace before the colon in {show(field.name)} :, which some "
                    "programs ignore and others read as the same header.", line=field.line))
        for bad in block.bad_lines:
            text = show(bad.text, 80)
            hint = ""
            if bad.line == 1 and bad.text.startswith("From "):
                hint = " (a 'From ' line without a colon is an mbox separator, not a From: header)"
            out.append(finding("fail", f"Line {bad.line} of the header block ({text}): {bad.why}{hint}.", line=bad.line))
        if len(out) > SHOWN:  # a hostile header block has a thousand of them: the verdict lists a few
            more = len(out) - SHOWN
            out = out[:SHOWN] + [finding("fail", f"... and {more} more malformed header line(s).", count=more)]
        return out

    @staticmethod
    def _counts(counts: dict) -> list[dict]:
        out: list[dict] = []
        if counts["From"] > 1:
            out.append(finding("fail", f"There are {counts['From']} From headers; RFC 5322 allows exactly one, "
                                       "and different programs show different ones."))
        if counts["Date"] == 0:
            out.append(finding("softfail", "There is no Date header; RFC 5322 requires exactly one."))
        elif counts["Date"] > 1:
            out.append(finding("fail", f"There are {counts['Date']} Date headers; RFC 5322 allows exactly one."))
        for name in AT_MOST_ONE:
            if counts[name] > 1:
                out.append(finding("fail", f"There are {counts[name]} {name} headers; RFC 5322 allows at most one."))
        return out

    @staticmethod
    def _from(f, counts: dict) -> list[dict]:
        if counts["From"] == 0:
            if counts["Sender"]:
                return [finding("fail", "There is no From header, only a Sender: clients disagree about whom to show "
                                        "as the author.")]
            return [finding("fail", "There is no From header; RFC 5322 requires exactly one.")]
        parsers = f.parsers("from")
        mailboxes = parsers["policy.default"].mailboxes or parsers["lenient"].mailboxes
        if not any(m.local and m.domain for m in mailboxes):
            return [finding("fail", "The From header has no address a parser can read.")]
        if len(mailboxes) > 1 and counts["Sender"] == 0:
            return [finding("fail", f"The From header lists {len(mailboxes)} mailboxes but there is no Sender header, "
                                    "which RFC 5322 requires in that case.")]
        return []
