"""What the speed-ups replaced: the plain objects, kept so the plain path stays reachable."""
from __future__ import annotations

ORIGINALS: dict = {}  # (module, name) -> what install() replaced there: the plain path


def replace(module, name: str, value) -> None:
    """``module.name = value``, keeping the first object found there in :data:`ORIGINALS`."""
    ORIGINALS.setdefault((module, name), getattr(module, name))
    setattr(module, name, value)


def plain(module, name: str):
    """The plain object at ``module.name``, whether or not a speed-up has replaced it."""
    return ORIGINALS.get((module, name), getattr(module, name))
