"""Moved to :mod:`forgelab.speedups.memo`; kept for plugins/_addresses.py until it imports from there."""
from .speedups.memo import NAME_LENGTH, short_memo  # noqa: F401
