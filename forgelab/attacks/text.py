"""One catalogue entry as plain text for a terminal (``forgelab attacks show ID``).

docs/attacks.md (forgelab/attacks/docs.py) says the same in markdown; here nothing is
markup: no anchors, no ``###``, no backslashes doubled for a markdown renderer.
"""
from __future__ import annotations

import textwrap

from ..forge import escape_bytes, split_wire_lines
from .catalogue import POLICIES, Attack

WIDTH = 78


def _safe(text: str) -> str:
    """Prose as written, but control and invisible characters shown as escapes (never sent to the terminal)."""
    return escape_bytes(text.encode("utf-8"), double_backslash=False)


def _paragraph(text: str, indent: str = "") -> str:
    return textwrap.fill(_safe(text), WIDTH, initial_indent=indent, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


def as_text(a: Attack) -> str:
    """Title, class, reference, explanation, expected outcomes and the bytes, escapes shown once."""
    s = a.script
    heading = f"{a.id}: {_safe(a.title)}"
    facts = [("Class", a.cls), ("Reference", a.reference),
             ("Sent from", f"{s.source_ip} (bind that source address, or XCLIENT ADDR={s.source_ip} "
                           "from 127.0.0.1)")]
    if a.defences:
        facts.append(("Should react", ", ".join(a.defences)))
    facts.append(("Expected", ", ".join(f"{p}: {a.expected_for(p)}" for p in POLICIES)))
    width = max(len(label) for label, _ in facts) + 2
    lines = [heading, "=" * min(len(heading), WIDTH), ""]
    for label, value in facts:
        lines.append(textwrap.fill(_safe(value), WIDTH, initial_indent=f"{label + ':':<{width}}",
                                   subsequent_indent=" " * width, break_long_words=False))
    lines += ["", _paragraph(a.explanation)]
    if a.notes:
        lines += ["", _paragraph(a.notes)]
    if a.must_not_store:
        lines += ["", "The stored copy must not contain: " + escape_bytes(a.must_not_store)]
    lines += ["", "Bytes sent after the banner (\\r and \\n are shown where they are sent, and a line",
              "ends where a \\n was sent; \\x00 is NUL, \\\\ a backslash):", ""]
    lines += ["  " + escape_bytes(line) for line in split_wire_lines(s.client_bytes())]
    return "\n".join(lines)
