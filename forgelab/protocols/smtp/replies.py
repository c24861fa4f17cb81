"""SMTP replies as values: code, RFC 3463 enhanced status code, text lines.

Every line goes out 7-bit (``seven_bit``: attacker text may be in it) and at most 512 octets
with its code, enhanced code and CRLF (RFC 5321 4.5.3.1.5); a longer one is cut after a
word, marked `` [...]``.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...core.printable import fit_7bit

MAX_LINE = 512  # octets of a reply line, CRLF included (RFC 5321 4.5.3.1.5)


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str | None
    lines: tuple[str, ...]

    def __init__(self, code: int, enhanced: str | None, text: str | list[str] | tuple[str, ...] = ""):
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "enhanced", enhanced)
        lines = (text,) if isinstance(text, str) else tuple(text)
        # Attacker text can end up in a reply: never let it break the framing or leave 7 bits.
        width = MAX_LINE - len("250-\r\n") - (len(enhanced) + 1 if enhanced else 0)
        object.__setattr__(self, "lines", tuple(fit_7bit(line, width) for line in lines) or ("",))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def is_error(self) -> bool:
        return self.code >= 400

    def to_bytes(self) -> bytes:
        out = []
        last = len(self.lines) - 1
        for i, line in enumerate(self.lines):
            sep = " " if i == last else "-"
            body = f"{self.enhanced} {line}" if self.enhanced else line
            out.append(f"{self.code}{sep}{body}".rstrip() + "\r\n")
        return "".join(out).encode("ascii", "backslashreplace")

    def __str__(self) -> str:
        return self.to_bytes().decode("ascii").rstrip("\r\n")
