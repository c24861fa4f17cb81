"""SMTP replies as values: code, RFC 3463 enhanced status code, text lines."""
from __future__ import annotations

from dataclasses import dataclass

from ...core.printable import printable


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str | None
    lines: tuple[str, ...]

    def __init__(self, code: int, enhanced: str | None, text: str | list[str] | tuple[str, ...] = ""):
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "enhanced", enhanced)
        lines = (text,) if isinstance(text, str) else tuple(text)
        # Attacker text can end up in a reply: never let it break the line framing.
        object.__setattr__(self, "lines", tuple(_one_line(line) for line in lines) or ("",))

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
        return "".join(out).encode("utf-8", "replace")

    def __str__(self) -> str:
        return self.to_bytes().decode("utf-8", "replace").rstrip("\r\n")


def _one_line(text: str) -> str:
    return printable(text, "?")[:400]
