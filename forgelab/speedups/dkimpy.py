"""dkimpy's verification, made cheaper: same answers, less CPU.

Replaces, when :func:`install` runs (``forgelab.speedups.install()``), five of dkimpy's
module-level names, so DKIM and ARC (which goes through the same names) cost less:

- ``dkim.RSASSA_PKCS1_v1_5_verify``: RSA in pure Python -> OpenSSL (``cryptography``) for
  rsa-sha256 with an ordinary key and signature; everything else stays dkimpy's own;
- ``dkim.evaluate_pk``: the key record (tag list + ASN.1) parsed on every signature -> parsed
  once per exact record text (bounded);
- ``dkim.canonicalization.strip_trailing_whitespace``, ``compress_whitespace``,
  ``unfold_header_value``: a regex over every header and the whole body even when it cannot
  change anything -> skipped when it cannot, ``bytes.replace`` for the unfolding;
- ``dkim.RE_BTAG``: a regex that tries folding white space once per base64 character -> one
  character-class scan that matches the same text.

Why: dkimpy was the largest defence in the profile, 623 µs of CPU per signed message before
this and 187 µs after (docs/performance.md, "Third round"), with OpenSSL's RSA most of it.
Unnecessary once dkimpy verifies RSA with ``cryptography`` itself and caches parsed keys.
tests/test_speedups_dkim.py checks every replacement against dkimpy's original.
"""
from __future__ import annotations

import re
import threading

import dkim
import dkim.canonicalization as dkim_canon
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

# dkimpy's own names, kept on the dkim module the first time, so that importing this module
# again (importlib.reload) after install() never takes our replacements for the originals.
_ORIGINALS = dkim.__dict__.setdefault("_forgelab_originals", {
    "RSASSA_PKCS1_v1_5_verify": dkim.RSASSA_PKCS1_v1_5_verify, "evaluate_pk": dkim.evaluate_pk,
    "RE_BTAG": dkim.RE_BTAG, "strip_trailing_whitespace": dkim_canon.strip_trailing_whitespace,
    "compress_whitespace": dkim_canon.compress_whitespace,
    "unfold_header_value": dkim_canon.unfold_header_value})
_DKIMPY_RSA_VERIFY = _ORIGINALS["RSASSA_PKCS1_v1_5_verify"]
_DKIMPY_EVALUATE_PK = _ORIGINALS["evaluate_pk"]
# Only SHA-256 goes to OpenSSL: a system OpenSSL may refuse SHA-1 signatures (crypto policies)
# and call them invalid, where dkimpy (RFC 6376) still verifies them. rsa-sha1 is rare.
_DIGEST_INFO_LEN = {"sha256": 51}  # DER DigestInfo size: EMSA-PKCS1-v1_5 needs 11 more bytes
_HASHES = {"sha256": hashes.SHA256()}
_CACHE_MAX = 256
MAX_REMEMBERED_RECORD = 2048  # a 4096-bit RSA key record is about 750 characters; longer ones are parsed, not kept
_public_keys: dict = {}   # (n, e) -> cryptography RSA public key
_key_records: dict = {}   # exact TXT record -> dkimpy's evaluate_pk() answer
_cache_lock = threading.Lock()


def _remember(cache: dict, key, value):
    with _cache_lock:  # SMTP sessions verify in several threads
        if len(cache) >= _CACHE_MAX:
            del cache[next(iter(cache))]  # oldest first: a bounded memo, not a store
        cache[key] = value
    return value


def _public_key(n: int, e: int):
    key = _public_keys.get((n, e))
    if key is None:
        key = _remember(_public_keys, (n, e), rsa.RSAPublicNumbers(e, n).public_key())
    return key


def rsa_verify(hash, signature, public_key) -> bool:
    """dkimpy's ``RSASSA_PKCS1_v1_5_verify`` computed by OpenSSL.

    dkimpy compares ``EMSA-PKCS1-v1_5(hash)`` with ``signature ** e mod n``; OpenSSL does the
    same strict comparison, but refuses some inputs dkimpy accepts (a signature that is not
    exactly the modulus length or not below n, even or huge exponents, odd moduli sizes).
    Those, and anything else unusual, go to dkimpy's own function, so the answer is always
    the one dkimpy would give.
    """
    try:
        n, e = public_key["modulus"], public_key["publicExponent"]
        name = hash.name.lower()
    except (TypeError, KeyError, AttributeError):
        return _DKIMPY_RSA_VERIFY(hash, signature, public_key)
    algorithm = _HASHES.get(name)
    if (algorithm is None or type(n) is not int or type(e) is not int or not isinstance(signature, bytes)
            or n.bit_length() > 16384 or e.bit_length() > 64 or not 3 <= e < n or not e & 1 or not n & 1):
        return _DKIMPY_RSA_VERIFY(hash, signature, public_key)
    modlen = (n.bit_length() + 7) // 8
    if (len(signature) != modlen or modlen < _DIGEST_INFO_LEN[name] + 11
            or int.from_bytes(signature, "big") >= n):
        return _DKIMPY_RSA_VERIFY(hash, signature, public_key)
    try:
        key = _public_key(n, e)
        key.verify(signature, hash.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))
        return True
    except InvalidSignature:
        return False
    except Exception:  # a key or input OpenSSL will not take: dkimpy decides
        return _DKIMPY_RSA_VERIFY(hash, signature, public_key)


def evaluate_pk(name, s):
    """dkimpy's ``evaluate_pk`` (parse a key record), remembered per exact record text.

    A pure function of the record (``name`` only appears in the error for an empty one),
    so only the parsing is saved; errors are never remembered and each caller gets its own
    copy of the key dict.
    """
    if not s or not isinstance(s, (bytes, str)) or len(s) > MAX_REMEMBERED_RECORD:
        return _DKIMPY_EVALUATE_PK(name, s)
    found = _key_records.get(s)
    if found is None:
        found = _remember(_key_records, s, _DKIMPY_EVALUATE_PK(name, s))
    pk, keysize, ktag, seqtlsrpt = found
    return (dict(pk) if isinstance(pk, dict) else pk), keysize, ktag, seqtlsrpt


# dkimpy's canonicalisation runs a regex over every header and the whole body even when it
# has nothing to change; these give the same bytes, skipping the regex when it cannot match.
_dkimpy_strip_trailing_whitespace = _ORIGINALS["strip_trailing_whitespace"]
_dkimpy_compress_whitespace = _ORIGINALS["compress_whitespace"]


def strip_trailing_whitespace(content: bytes) -> bytes:
    """``re.sub(b"[\\t ]+\\r\\n", b"\\r\\n", content)``: only a blank or tab before CRLF changes anything."""
    if b" \r\n" not in content and b"\t\r\n" not in content:
        return content
    return _dkimpy_strip_trailing_whitespace(content)


def compress_whitespace(content: bytes) -> bytes:
    """``re.sub(b"[\\t ]+", b" ", content)``: a lone blank is replaced by itself."""
    if b"\t" not in content and b"  " not in content:
        return content
    return _dkimpy_compress_whitespace(content)


def unfold_header_value(content: bytes) -> bytes:
    """``re.sub(b"\\r?\\n", b"", content)``: every LF goes, with the CR just before it."""
    return content.replace(b"\r\n", b"").replace(b"\n", b"")


# RE_BTAG blanks the b= value of the signature being checked. dkimpy spells folding white
# space as (?:(?:\s*\r?\n)?\s+)?, which matches exactly the strings \s* does (\s holds CR and
# LF), once per base64 character; "any run of white space and base64 that ends in base64"
# matches the same text, found with a single character-class scan.
_FAST_BTAG = re.compile(rb"([;\s]b\s*=)(?:[\sa-zA-Z0-9+/=]*[a-zA-Z0-9+/=])?(?:\r?\n\Z)?")


# (module, name, replacement): what forgelab.speedups.install() puts in place
REPLACEMENTS = [
    (dkim, "RSASSA_PKCS1_v1_5_verify", rsa_verify),
    (dkim, "evaluate_pk", evaluate_pk),
    (dkim, "RE_BTAG", _FAST_BTAG),
    (dkim_canon, "strip_trailing_whitespace", strip_trailing_whitespace),
    (dkim_canon, "compress_whitespace", compress_whitespace),
    (dkim_canon, "unfold_header_value", unfold_header_value),
]
