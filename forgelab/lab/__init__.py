"""The lab world a server runs in: local mailboxes and the DNS every defence asks."""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .directory import Directory, load_directory

LAB_DIR = Path(str(resources.files(__name__)))
USERS_FILE = LAB_DIR / "users.toml"


@dataclass
class Lab:
    """Shared, read-only state handed to every hook as ``lab``.

    :param directory: local domains, users and mailing lists.
    :param resolver: the one resolver every DNS lookup goes through
        (``forgelab.lab.dns``); None until the authentication layer is loaded.
    :param hostname: this server's name, used in the banner, ``Received`` and the
        authserv-id of ``Authentication-Results``.
    """

    directory: Directory
    resolver: Any = None
    hostname: str = "mx.corp.example"
    extra: dict = field(default_factory=dict)


def load_lab(users_file: str | Path | None = None, hostname: str | None = None) -> Lab:
    directory = load_directory(users_file or USERS_FILE)
    return Lab(directory=directory, hostname=hostname or f"mx.{directory.primary_domain}")
