"""The problems a user can fix: one family, each message saying what is wrong, where, and what to do.

``forgelab`` (the command line) prints any ``ForgelabError`` as one line and exits with code 2,
without a traceback. Each class also derives from the built-in exception it replaced
(``ValueError``, ``OSError``, ``RuntimeError``), so code that caught that still does.

A protocol problem (a client's bad command) is not one of these: it is answered with a
reply (``forgelab.protocols.smtp.Reply``), never raised to the user.
"""
from __future__ import annotations


class ForgelabError(Exception):
    """A problem with what the user gave forgelab (a file, an option, an address)."""

    exit_code = 2  # what ``forgelab`` exits with

    def __str__(self) -> str:  # an OSError's message without its "[Errno N]"
        return getattr(self, "strerror", None) or super().__str__()


class ConfigError(ForgelabError, ValueError):
    """A setting that cannot be used: the message names the setting and the values it takes."""


class PolicyError(ConfigError):
    """A policy that cannot be used; the message names the file, the key and the line."""


class WorldError(ConfigError):
    """A lab-world file that cannot be used (users file, DNS zone, TLS certificate): the message
    names the file and, where it can, the line."""


class PluginError(ForgelabError, RuntimeError):
    """A plugin that cannot be loaded, or that implements a hook that does not exist."""


class BindError(ForgelabError, OSError):
    """The listening address cannot be used (port in use, bad host)."""


class DataDirError(ForgelabError, OSError):
    """The data directory, or something inside it, cannot be used safely."""


class WorkerError(ForgelabError, RuntimeError):
    """A worker process of ``serve --workers`` could not start or take a switch."""
