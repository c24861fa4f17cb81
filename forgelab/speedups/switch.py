"""The one switch of the speed-ups: ``FORGELAB_SPEEDUPS=0`` (or off, no, false) leaves the plain path."""
from __future__ import annotations

import os

ENV = "FORGELAB_SPEEDUPS"
_OFF = ("0", "off", "no", "false")


def enabled() -> bool:
    """False when ``FORGELAB_SPEEDUPS`` says ``0``, ``off``, ``no`` or ``false``."""
    return os.environ.get(ENV, "1").strip().lower() not in _OFF
