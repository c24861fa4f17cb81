"""TLS for STARTTLS (SMTP, RFC 3207) and STLS (POP3, RFC 2595): the lab certificate and ssl contexts.

On first start forgelab writes a self-signed lab certificate into ``<data>/tls/``::

    <data>/tls/lab-key.pem    EC P-256 private key, mode 0600
    <data>/tls/lab-cert.pem   self-signed certificate for the lab host name, localhost, 127.0.0.1

and reuses it afterwards (never through a symlink there), so students can pin it once (``openssl s_client -starttls smtp``
shows it). A trainer's own pair is given with ``--tls-cert`` / ``--tls-key``.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from ..store import nofollow
from ..errors import WorldError

CERT_NAME = "lab-cert.pem"
KEY_NAME = "lab-key.pem"
VALID_DAYS = 3650


class TlsError(WorldError):
    """A certificate or key that cannot be used; the message names the file."""


def lab_certificate_paths(data_dir: str | Path) -> tuple[Path, Path]:
    """Where the lab certificate and key live (they may not exist yet)."""
    folder = Path(data_dir) / "tls"
    return folder / CERT_NAME, folder / KEY_NAME


def ensure_lab_certificate(data_dir: str | Path, hostname: str) -> tuple[Path, Path]:
    """The lab (cert, key) paths under ``data_dir/tls``, generated if either is missing."""
    cert_path, key_path = lab_certificate_paths(data_dir)
    for path in (cert_path, key_path):  # inside the data directory: never through a symlink
        nofollow.check(Path(data_dir), path)
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    cert_pem, key_pem = generate_certificate(hostname)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(cert_path.parent, 0o700)
    # Key first, cert last: a cert on disk means its key is complete.
    _write_atomically(key_path, key_pem, 0o600)
    _write_atomically(cert_path, cert_pem, 0o644)
    return cert_path, key_path


def generate_certificate(hostname: str, days: int = VALID_DAYS) -> tuple[bytes, bytes]:
    """A self-signed (certificate PEM, private key PEM) for ``hostname``, localhost and 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())  # fast to make, unlike RSA
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "forgelab lab certificate")])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt_names = [x509.DNSName(hostname), x509.DNSName("localhost"),
                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = nofollow.open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def server_context(cert: str | Path, key: str | Path | None = None) -> ssl.SSLContext:
    """A server ``SSLContext`` (TLS 1.2 or later) from a PEM certificate and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # A read end shut to shed the connection must not break TLS: its 421 still goes out
    # inside it (SMTP and POP3 mark their own ends, a bare EOF truncates nothing unnoticed).
    context.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    try:
        context.load_cert_chain(str(cert), str(key) if key else None)
    except FileNotFoundError as exc:
        raise TlsError(f"{exc.filename}: no such certificate or key file") from None
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"{cert}: cannot use this certificate/key pair: {exc}") from None
    return context


def lab_server_context(data_dir: str | Path, hostname: str, cert: str | Path | None = None,
                       key: str | Path | None = None) -> ssl.SSLContext:
    """The server context: the given pair, else the lab certificate (made on first start)."""
    if cert is None and key is not None:
        raise TlsError("--tls-key needs --tls-cert")
    if cert is None:
        cert, key = ensure_lab_certificate(data_dir, hostname)
    return server_context(cert, key)


def client_context(cafile: str | Path | None = None) -> ssl.SSLContext:
    """A client context that trusts ``cafile`` (e.g. the lab certificate) and checks host names."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
