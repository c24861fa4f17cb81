"""What a transcript shows instead of a line that may hold a credential (SMTP and POP3 cores)."""
from __future__ import annotations

import re

# One word that may be a secret sent on its own line (base64, after a refused AUTH): not a verb.
_LONE_WORD = re.compile(r"\s*[A-Za-z0-9+/]+={0,2}\s*|\s*[=*]\s*")
MAYBE_CREDENTIAL = "<a line that may be a credential ****>"


def lone_word(line: str, commands) -> bool:
    """True for a line of one base64-like word that is none of ``commands``: it may be a secret."""
    return bool(_LONE_WORD.fullmatch(line)) and line.strip().upper() not in commands
