"""DKIM keys: generate a pair and its TXT record (``forgelab keygen``), and sign as a lab domain.

A key lives in one PEM file named after its DNS name,
``<selector>._domainkey.<domain>.pem``; its public record sits beside it in
``<selector>._domainkey.<domain>.txt`` as a zone-file line.
"""
from __future__ import annotations

import functools

import base64
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ..store.nofollow import open_fd

LAB_KEYS = Path(str(resources.files("forgelab.lab"))) / "keys"
SUFFIX = ".pem"
DOMAINKEY = "._domainkey."

# From (and Subject) are listed one more time than they appear: "oversigning", so
# nobody can add a second From without breaking the signature (RFC 6376 8.15).
DEFAULT_SIGNED_HEADERS = ("from", "from", "to", "cc", "subject", "subject", "date", "message-id",
                          "reply-to", "mime-version", "content-type", "content-transfer-encoding")


class KeyError_(ValueError):
    """A key that cannot be found or used."""


@dataclass(frozen=True)
class DomainKey:
    domain: str
    selector: str
    algorithm: str  # "rsa" or "ed25519"
    path: Path

    @property
    def dns_name(self) -> str:
        return f"{self.selector}{DOMAINKEY}{self.domain}"

    def private_pem(self) -> bytes:
        return self.path.read_bytes()

    def dkimpy_private(self) -> bytes:
        """The private key as dkimpy's ``sign`` wants it (PEM for RSA, base64 seed for Ed25519)."""
        pem = self.private_pem()
        if self.algorithm == "rsa":
            return pem
        key = serialization.load_pem_private_key(pem, password=None)
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
        return base64.b64encode(raw)

    @property
    def signature_algorithm(self) -> bytes:
        return b"ed25519-sha256" if self.algorithm == "ed25519" else b"rsa-sha256"


@dataclass(frozen=True)
class KeyPair:
    """What ``keygen`` wrote and the record to publish."""

    key: DomainKey
    record: str  # the TXT value: "v=DKIM1; k=rsa; p=..."
    record_path: Path

    @property
    def zone_line(self) -> str:
        return zone_line(self.key.dns_name, self.record)


def zone_line(name: str, value: str, ttl: int = 3600) -> str:
    """A master-file TXT line; values longer than 255 octets are split into several strings."""
    chunks = [value[i:i + 250] for i in range(0, len(value), 250)] or [""]
    return f"{name}. {ttl} IN TXT " + " ".join(f'"{c}"' for c in chunks)


def public_record(private_pem: bytes) -> tuple[str, str]:
    """(algorithm, TXT value) for a PEM private key."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "ed25519", f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        return "rsa", f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    raise KeyError_(f"unsupported key type {type(key).__name__}")


def keygen(domain: str, selector: str, out_dir: str | Path | None = None, algorithm: str = "rsa",
           bits: int = 2048) -> KeyPair:
    """Write a new key pair for ``selector._domainkey.domain`` into ``out_dir`` (default: the cwd).

    :return: the :class:`KeyPair`; ``.zone_line`` is the TXT record to add to the zone.
    """
    domain, selector = domain.strip(".").lower(), selector.strip()
    if not domain or not selector or "/" in domain + selector or DOMAINKEY.strip(".") in selector:
        raise KeyError_("keygen needs a domain and a selector without '/'")
    if algorithm == "rsa":
        if bits < 1024:
            raise KeyError_("RSA DKIM keys must have at least 1024 bits (RFC 8301)")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    else:
        raise KeyError_(f"unknown algorithm {algorithm!r}: use rsa or ed25519")
    out = Path(out_dir) if out_dir is not None else Path.cwd()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{selector}{DOMAINKEY}{domain}{SUFFIX}"
    with os.fdopen(open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:  # 0600 from the start
        f.write(pem)
    path.chmod(0o600)
    _, record = public_record(pem)
    dk = DomainKey(domain, selector, algorithm, path)
    record_path = path.with_suffix(".txt")
    record_path.write_text(zone_line(dk.dns_name, record) + "\n")
    return KeyPair(dk, record, record_path)


def held_keys(keys_dir: str | Path = LAB_KEYS) -> list[DomainKey]:
    """Every key in a keys folder, sorted by domain then selector."""
    folder = Path(keys_dir)
    # Parsing every PEM costs ~0.3 s: read a folder again only when it changed.
    return list(_held_keys(str(folder), folder.stat().st_mtime_ns if folder.exists() else 0))


@functools.lru_cache(maxsize=32)
def _held_keys(keys_dir: str, mtime_ns: int) -> tuple[DomainKey, ...]:
    out = []
    for path in sorted(Path(keys_dir).glob(f"*{DOMAINKEY}*{SUFFIX}")):
        selector, _, domain = path.name[: -len(SUFFIX)].partition(DOMAINKEY)
        algorithm, _ = public_record(path.read_bytes())
        out.append(DomainKey(domain.lower(), selector, algorithm, path))
    return tuple(sorted(out, key=lambda k: (k.domain, k.selector)))


def keys_for(domain: str, selector: str | Sequence[str] | None = None,
             keys_dir: str | Path = LAB_KEYS) -> list[DomainKey]:
    """The keys to sign with: the named selector(s), or by default every key the domain
    has except the deliberately weak ones (selectors starting with ``weak``)."""
    domain = domain.strip(".").lower()
    mine = [k for k in held_keys(keys_dir) if k.domain == domain]
    if selector is None:
        chosen = [k for k in mine if not k.selector.startswith("weak")]
    else:
        wanted = [selector] if isinstance(selector, str) else list(selector)
        chosen = [k for k in mine if k.selector in wanted]
        missing = set(wanted) - {k.selector for k in chosen}
        if missing:
            raise KeyError_(f"no key for {', '.join(sorted(missing))}._domainkey.{domain} in {keys_dir}")
    if not chosen:
        raise KeyError_(f"no DKIM key for {domain} in {keys_dir}")
    return chosen


def sign(message: bytes, domain: str, selector: str | Sequence[str] | None = None,
         keys_dir: str | Path = LAB_KEYS, include_headers: Sequence[str] | None = None,
         length: bool = False, canonicalize: tuple[bytes, bytes] = (b"relaxed", b"relaxed")) -> bytes:
    """DKIM-sign ``message`` as ``domain`` with the key(s) held for it; returns the signed bytes.

    :param include_headers: headers for ``h=``; the default oversigns From and Subject.
        Pass e.g. ``["from", "to", "subject"]`` to make a replayable signature.
    :param length: add ``l=`` (the body length), which lets anyone append to the body.
    """
    headers = [h.lower() for h in (include_headers or DEFAULT_SIGNED_HEADERS)]
    signed = message
    for key in keys_for(domain, selector, keys_dir):
        signer = dkim.DKIM(signed)
        try:
            sig = signer.sign(key.selector.encode(), key.domain.encode(), key.dkimpy_private(),
                              signature_algorithm=key.signature_algorithm, canonicalize=canonicalize,
                              include_headers=[h.encode() for h in headers], length=length)
        except dkim.DKIMException as e:
            raise KeyError_(f"cannot sign as {key.dns_name}: {e}") from e
        signed = sig + signed
    return signed
