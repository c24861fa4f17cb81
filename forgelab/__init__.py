"""forgelab: a mail-forgery lab. SMTP + POP3 on loopback, every message through pluggable defences."""
from .hookspecs import hookimpl
from .verdicts import Verdict

__version__ = "0.1.0"
__all__ = ["hookimpl", "Verdict", "__version__"]
