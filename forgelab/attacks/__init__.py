"""The attack catalogue (``catalogue``), the runner that plays it against real servers
(``runner``) and the generator of docs/attacks.md (``docs``)."""
from .catalogue import ATTACK_CLASSES, POLICIES, Attack, Script, all_entries, attacks, get, legitimate

__all__ = ["ATTACK_CLASSES", "POLICIES", "Attack", "Script", "all_entries", "attacks", "get", "legitimate"]
