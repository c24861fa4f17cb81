"""TLS for the lab: a small CA, the server certificate it signs, and ssl contexts.

STARTTLS (SMTP, RFC 3207), STLS (POP3, RFC 2595) and the implicit-TLS ports (RFC 8314:
``--smtps``, ``--pop3s``) all use one server certificate. On first start forgelab writes
into ``<data>/tls/``::

    <data>/tls/ca.pem         the lab CA's certificate: point a client at it (--cacert, -CAfile, cafile=)
    <data>/tls/ca-key.pem     its EC P-256 private key, mode 0600
    <data>/tls/lab-cert.pem   the server certificate, signed by the CA, for the lab host name,
                              localhost, 127.0.0.1 and ::1
    <data>/tls/lab-key.pem    its private key, mode 0600

and reuses them afterwards (never through a symlink there): the CA is kept across restarts, so
a client trusts it once. A server certificate the CA did not sign (the self-signed one of
earlier versions) or that lacks one of the names is made again. A trainer's own pair is
given with ``--tls-cert`` / ``--tls-key`` and then used instead.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from ..store import nofollow
from ..errors import WorldError

CA_NAME = "ca.pem"
CA_KEY_NAME = "ca-key.pem"
CERT_NAME = "lab-cert.pem"
KEY_NAME = "lab-key.pem"
VALID_DAYS = 3650
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")  # beside the lab host name, in every server certificate


class TlsError(WorldError):
    """A certificate or key that cannot be used; the message names the file."""


def lab_certificate_paths(data_dir: str | Path) -> tuple[Path, Path]:
    """Where the lab server certificate and key live (they may not exist yet)."""
    folder = Path(data_dir) / "tls"
    return folder / CERT_NAME, folder / KEY_NAME


def lab_ca_paths(data_dir: str | Path) -> tuple[Path, Path]:
    """Where the lab CA's certificate and key live (they may not exist yet)."""
    folder = Path(data_dir) / "tls"
    return folder / CA_NAME, folder / CA_KEY_NAME


def ensure_lab_certificate(data_dir: str | Path, hostname: str) -> tuple[Path, Path]:
    """The lab server (cert, key) paths under ``data_dir/tls``: the CA made if missing, the
    server certificate made if missing, not signed by that CA, or without one of the names."""
    ca_path, ca_key_path = lab_ca_paths(data_dir)
    cert_path, key_path = lab_certificate_paths(data_dir)
    for path in (ca_path, ca_key_path, cert_path, key_path):  # inside the data directory: never through a symlink
        nofollow.check(Path(data_dir), path)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(cert_path.parent, 0o700)
    if not (ca_path.is_file() and ca_key_path.is_file()):
        ca_pem, ca_key_pem = generate_ca(hostname)
        # Key first, cert last: a cert on disk means its key is complete.
        _write_atomically(ca_key_path, ca_key_pem, 0o600)
        _write_atomically(ca_path, ca_pem, 0o644)
    ca_pem, ca_key_pem = _read(ca_path), _read(ca_key_path)
    names = _names(hostname)
    if cert_path.is_file() and key_path.is_file() and _signed_by(_read(cert_path), ca_pem, names):
        return cert_path, key_path
    cert_pem, key_pem = generate_certificate(hostname, ca=(ca_pem, ca_key_pem))
    _write_atomically(key_path, key_pem, 0o600)
    _write_atomically(cert_path, cert_pem, 0o644)
    return cert_path, key_path


def _names(hostname: str) -> list[str]:
    return [hostname] + [name for name in LOCAL_NAMES if name != hostname]


def _alt_name(name: str):
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _read(path: Path) -> bytes:
    fd = nofollow.open_fd(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        return f.read(1 << 20)


def _signed_by(cert_pem: bytes, ca_pem: bytes, names: list[str]) -> bool:
    """``cert_pem`` was issued by the CA in ``ca_pem``, is valid now and names every one of ``names``."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        cert, ca = x509.load_pem_x509_certificate(cert_pem), x509.load_pem_x509_certificate(ca_pem)
        cert.verify_directly_issued_by(ca)
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    now = datetime.datetime.now(datetime.timezone.utc)
    return (cert.not_valid_before_utc <= now < cert.not_valid_after_utc
            and all(_alt_name(name) in alt for name in names))


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())  # fast to make, unlike RSA


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def generate_ca(hostname: str, days: int = VALID_DAYS) -> tuple[bytes, bytes]:
    """A lab CA: (certificate PEM, private key PEM); it signs server certificates only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"forgelab lab CA {hostname}"[:64]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "forgelab lab CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def generate_certificate(hostname: str, days: int = VALID_DAYS,
                         ca: tuple[bytes, bytes] | None = None) -> tuple[bytes, bytes]:
    """A server (certificate PEM, private key PEM) for ``hostname``, localhost, 127.0.0.1 and ::1,
    signed by ``ca`` (its certificate and key PEM), or self-signed without one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "forgelab lab certificate")])
    if ca:
        ca_cert = x509.load_pem_x509_certificate(ca[0])
        signer, issuer = serialization.load_pem_private_key(ca[1], None), ca_cert.subject
    else:
        signer, issuer = key, name
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([_alt_name(n) for n in _names(hostname)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
            .sign(signer, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


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
    """A client context that trusts ``cafile`` (e.g. the lab CA, ``lab_ca_paths``) and checks host names."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
