"""Local domains, users and mailing lists, loaded from a TOML users file."""
from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import WorldError

# A mailbox name must be safe as a directory name: no path separators, no dots first, no NUL.
NAME_RE = re.compile(r"\A[a-z0-9][a-z0-9._+-]{0,63}\Z")  # \Z: "$" would let "alice\n" through
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class DirectoryError(WorldError):
    """A users file that cannot be used; the message names the file and the key."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), dklen=32, **_SCRYPT)
    return hmac.compare_digest(got.hex(), digest)


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Made once: checked against for unknown users, so a login costs the same either way."""
    return hash_password("forgelab-no-such-user")


@dataclass
class User:
    name: str
    full_name: str
    password_hash: str
    # Kept only for APOP (RFC 1939 needs the shared secret) and the lab banner.
    password: str | None = field(default=None, repr=False)

    def check_password(self, password: str) -> bool:
        return check_password(password, self.password_hash)


@dataclass
class Directory:
    domains: list[str]
    users: dict[str, User]
    lists: dict[str, list[str]]
    postmaster: str | None = None  # the user or list that postmaster@ reaches

    @property
    def primary_domain(self) -> str:
        return self.domains[0]

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower().rstrip(".") in self.domains

    def split(self, address: str) -> tuple[str, str]:
        local, _, domain = address.rpartition("@")
        return (local, domain.lower()) if local else (address, "")

    def local_part(self, address: str) -> str | None:
        """The local part when ``address`` is in a local domain (or is plain ``postmaster``), else None.

        A quoted local part is the same mailbox unquoted (RFC 5321 4.1.2): ``"alice"`` is alice.
        """
        if address.lower() == "postmaster":  # RFC 5321 4.5.1
            return "postmaster"
        local, domain = self.split(address)
        if not domain or not self.is_local_domain(domain):
            return None
        if len(local) >= 2 and local[0] == local[-1] == '"':
            local = re.sub(r"\\(.)", r"\1", local[1:-1])
        return local.lower()

    def recipients(self, local: str) -> list[str] | None:
        """The users a local part delivers to: a user, a list's members, or for ``postmaster``
        (which RFC 5321 requires) the users file's ``postmaster`` (default: its first user)."""
        user = self.user(local)
        if user:
            return [user.name]
        if local in self.lists:
            return [m for m in self.lists[local] if self.user(m)]
        if local == "postmaster" and self.postmaster:
            return self.recipients(self.postmaster)
        return None

    def user(self, name: str) -> User | None:
        return self.users.get(name.lower())

    def find(self, text: str) -> User | None:
        """A user by name, address or full name (what VRFY accepts)."""
        text = text.strip().strip("<>").strip()
        if "@" in text:
            local = self.local_part(text)
            return self.user(local) if local else None
        user = self.user(text)
        if user:
            return user
        matches = [u for u in self.users.values() if u.full_name.lower() == text.lower()]
        return matches[0] if len(matches) == 1 else None

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when the password is right. One scrypt check whether the user exists or not,
        so neither the answer nor the time taken tells who exists."""
        local = self.local_part(name) if "@" in name else name.lower()
        user = self.user(local) if local else None
        good = check_password(password, user.password_hash if user else _dummy_hash())
        return user if good and user else None

    def address(self, user: User) -> str:
        return f"{user.name}@{self.primary_domain}"

    def mailing_list(self, text: str) -> list[str] | None:
        text = text.strip().strip("<>").strip()
        name = self.local_part(text) if "@" in text else text.lower()
        return self.lists.get(name) if name else None


def load_directory(path: str | Path) -> Directory:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DirectoryError(f"{path}: cannot read users file: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DirectoryError(f"{path}: {exc}") from None
    return parse_directory(data, str(path))


def parse_directory(data: dict, source: str = "<users>") -> Directory:
    domains = data.get("domains")
    if not isinstance(domains, list) or not domains or not all(isinstance(d, str) and d for d in domains):
        raise DirectoryError(f"{source}: key 'domains' must be a non-empty list of domain names")
    users: dict[str, User] = {}
    for name, entry in (data.get("users") or {}).items():
        key = f"users.{name}"
        if not NAME_RE.match(name):
            raise DirectoryError(f"{source}: key '{key}': user names are lower-case letters, digits and ._+- (no '/', '..', NUL)")
        if not isinstance(entry, dict):
            raise DirectoryError(f"{source}: key '{key}' must be a table")
        password, stored = entry.get("password"), entry.get("password_hash")
        if password is None and stored is None:
            raise DirectoryError(f"{source}: key '{key}' needs 'password' or 'password_hash'")
        if password is not None and not isinstance(password, str):
            raise DirectoryError(f"{source}: key '{key}.password' must be a string")
        users[name] = User(name=name, full_name=str(entry.get("name", name)),
                           password_hash=stored or hash_password(password), password=password)
    lists: dict[str, list[str]] = {}
    for name, entry in (data.get("lists") or {}).items():
        members = entry.get("members") if isinstance(entry, dict) else None
        if not NAME_RE.match(name) or not isinstance(members, list):
            raise DirectoryError(f"{source}: key 'lists.{name}' needs a valid name and 'members = [...]'")
        lists[name] = [str(m) for m in members]
    postmaster = data.get("postmaster", next(iter(users), None))
    if postmaster is not None and postmaster not in users and postmaster not in lists:
        raise DirectoryError(f"{source}: key 'postmaster' must name a user or a list")
    return Directory(domains=[d.lower().rstrip(".") for d in domains], users=users, lists=lists,
                     postmaster=postmaster)
