"""The dkimpy speed-ups (forgelab/speedups/dkimpy.py, dkim_message.py) give dkimpy's own answers.

RSA verification through OpenSSL is compared with dkimpy's pure-Python function on valid,
damaged, short, long, reduced and wrong-hash signatures over several key sizes and exponents;
the canonicalisation and b= blanking replacements are compared with dkimpy's regexes on
random byte strings; the key-record memo with dkimpy's parser; the message split with
``dkim.rfc822_parse`` (and the plain path's own split). Each compares the two functions
directly, so it holds with the speed-ups switched on or off.
"""
import hashlib
import random
import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from forgelab import speedups as switch
from forgelab.auth import dkim as fdkim
from forgelab.auth import keys
from forgelab.speedups import dkim_message
from forgelab.speedups import dkimpy as speedups

ORIGINAL_VERIFY = dkim.crypto.RSASSA_PKCS1_v1_5_verify  # dkimpy's own, never replaced
dkimpy_sign = dkim.crypto.RSASSA_PKCS1_v1_5_sign


def _probable_prime(bits: int, rnd: random.Random) -> int:
    while True:
        n = rnd.getrandbits(bits) | (1 << (bits - 1)) | 1
        if all(pow(a, n - 1, n) == 1 for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)):
            return n


def private_key(bits: int, e: int = 65537, seed: int = 0) -> dict:
    """A dkimpy private-key dict of about ``bits`` bits with exponent ``e`` (any size, any odd e)."""
    rnd = random.Random(seed)
    while True:
        p, q = _probable_prime(bits // 2, rnd), _probable_prime(bits - bits // 2, rnd)
        phi = (p - 1) * (q - 1)
        try:
            d = pow(e, -1, phi)
        except ValueError:
            continue
        if p != q:
            break
    return {"modulus": p * q, "publicExponent": e, "privateExponent": d, "prime1": p, "prime2": q,
            "exponent1": d % (p - 1), "exponent2": d % (q - 1), "coefficient": pow(q, -1, p)}


def from_cryptography(key) -> dict:
    n = key.private_numbers()
    return {"modulus": n.public_numbers.n, "publicExponent": n.public_numbers.e, "privateExponent": n.d,
            "prime1": n.p, "prime2": n.q, "exponent1": n.dmp1, "exponent2": n.dmq1, "coefficient": n.iqmp}


def lab_weak512() -> dict:
    pem = (keys.LAB_KEYS / "weak512._domainkey.phish.example.pem").read_bytes()
    return from_cryptography(serialization.load_pem_private_key(pem, password=None))


@pytest.fixture(scope="module")
def keyring():
    return {
        "512-lab": lab_weak512(),
        "384": private_key(384, seed=1),           # too small for a sha256 DigestInfo: DigestTooLargeError
        "1024": from_cryptography(rsa.generate_private_key(65537, 1024)),
        "2048": from_cryptography(rsa.generate_private_key(65537, 2048)),
        "1024-e3": from_cryptography(rsa.generate_private_key(3, 1024)),
        "1024-e-huge": private_key(1024, e=(1 << 80) + 13, seed=2),   # over 64 bits: dkimpy's path
        "1023-odd-size": private_key(1023, seed=3),
    }


def public(key: dict) -> dict:
    return {"modulus": key["modulus"], "publicExponent": key["publicExponent"]}


def outcome(verify, h, sig, pk):
    try:
        return verify(h, sig, pk)
    except Exception as e:  # dkimpy raises DigestTooLargeError (and KeyError for an unknown hash)
        return type(e)


def same(h, sig, pk, fallbacks=None):
    """The fast verify and dkimpy's agree; returns that answer."""
    fast, slow = outcome(speedups.rsa_verify, h, sig, pk), outcome(ORIGINAL_VERIFY, h, sig, pk)
    assert fast == slow, (fast, slow, len(sig), pk["modulus"].bit_length())
    return fast


def variants(sig: bytes, n: int, rnd: random.Random):
    """Damaged and re-encoded forms of a signature, each named."""
    modlen = (n.bit_length() + 7) // 8
    s = int.from_bytes(sig, "big")
    yield "valid", sig
    for _ in range(6):
        bit = rnd.randrange(len(sig) * 8)
        yield "flipped", (s ^ (1 << bit)).to_bytes(len(sig), "big")
    yield "truncated", sig[:-1]
    yield "one byte short", sig[1:]
    yield "zero-prefixed", b"\x00" + sig   # longer than the modulus, same integer: dkimpy accepts it
    yield "empty", b""
    yield "zeros", b"\x00" * modlen
    yield "random", bytes(rnd.getrandbits(8) for _ in range(modlen))
    yield "n", n.to_bytes(modlen, "big")
    if s + n < 1 << (8 * modlen):
        yield "plus n", (s + n).to_bytes(modlen, "big")  # not below n: OpenSSL refuses it, dkimpy reduces it


@pytest.mark.parametrize("name", ["512-lab", "384", "1024", "2048", "1024-e3", "1024-e-huge", "1023-odd-size"])
@pytest.mark.parametrize("hashname", ["sha256", "sha1"])
def test_fast_rsa_verify_answers_like_dkimpy(keyring, name, hashname):
    key = keyring[name]
    pk = public(key)
    rnd = random.Random(f"{name}{hashname}")
    answers = []
    for i in range(4):
        data = f"message {i} {name}".encode()
        h = getattr(hashlib, hashname)(data)
        try:
            sig = bytes(dkimpy_sign(h, key))
        except dkim.crypto.DigestTooLargeError:
            assert same(h, b"\x01" * 48, pk) is dkim.crypto.DigestTooLargeError
            return
        for what, candidate in variants(sig, pk["modulus"], rnd):
            answers.append((what, same(dkim.HashThrough(getattr(hashlib, hashname)(data)), candidate, pk)))
        other = hashlib.sha1(data) if hashname == "sha256" else hashlib.sha256(data)
        answers.append(("other hash", same(other, sig, pk)))
        answers.append(("other data", same(getattr(hashlib, hashname)(data + b"!"), sig, pk)))
    # The comparison above is only meaningful if both answers occur.
    assert ("valid", True) in answers and ("zero-prefixed", True) in answers
    assert ("flipped", False) in answers and ("other data", False) in answers


def test_a_signature_with_a_leading_zero_byte_verifies_without_it_as_in_dkimpy(keyring):
    key = keyring["1024"]
    pk = public(key)
    for i in range(5000):
        h = hashlib.sha256(b"%d" % i)
        sig = bytes(dkimpy_sign(h, key))
        if sig[0] == 0:
            break
    else:
        pytest.fail("no signature with a leading zero byte found")
    assert same(hashlib.sha256(b"%d" % i), sig[1:], pk) is True
    assert same(hashlib.sha256(b"%d" % i), sig, pk) is True


def test_odd_keys_answer_like_dkimpy(keyring):
    key = keyring["1024"]
    h = hashlib.sha256(b"x")
    sig = bytes(dkimpy_sign(h, key))
    n, e = key["modulus"], key["publicExponent"]
    for pk in ({"modulus": n, "publicExponent": 4}, {"modulus": n, "publicExponent": 1},
               {"modulus": n * 2, "publicExponent": e}, {"modulus": n, "publicExponent": n + 2}):
        same(hashlib.sha256(b"x"), sig, pk)
    assert same(hashlib.md5(b"x"), sig, public(key)) is KeyError  # dkimpy's own failure for an unmapped hash


@pytest.fixture
def dkimpy_verifies(monkeypatch) -> list:
    """Every call the fast path hands to dkimpy's own RSA verification, recorded."""
    calls = []
    monkeypatch.setattr(speedups, "_DKIMPY_RSA_VERIFY", lambda *a: calls.append(a) or ORIGINAL_VERIFY(*a))
    return calls


def test_the_fast_path_is_taken_for_an_ordinary_signature(keyring, dkimpy_verifies):
    key = keyring["2048"]
    sig = bytes(dkimpy_sign(hashlib.sha256(b"x"), key))
    calls = dkimpy_verifies
    assert speedups.rsa_verify(hashlib.sha256(b"x"), sig, public(key)) is True
    assert speedups.rsa_verify(hashlib.sha256(b"y"), sig, public(key)) is False
    assert calls == []
    assert speedups.rsa_verify(hashlib.sha256(b"x"), b"\x00" + sig, public(key)) is True
    assert len(calls) == 1  # an unusual length is dkimpy's to judge


# --- canonicalisation and b= blanking ------------------------------------------------------

ORIGINAL_BTAG = re.compile(br"([;\s]b" + dkim.FWS + br"=)(?:" + dkim.FWS + br"[a-zA-Z0-9+/=])*(?:\r?\n\Z)?")
PIECES = [b" ", b"\t", b"\r", b"\n", b"\r\n", b"  ", b"b", b"=", b";", b"a", b"Z", b"+", b"/", b"9", b"-",
          b"\x0b", b"\x0c", b"b=", b"; b=", b"\r\n "]


def test_canonicalisation_and_btag_match_dkimpys_regexes():
    rnd = random.Random(7)
    for _ in range(40000):
        s = b"".join(rnd.choice(PIECES) for _ in range(rnd.randrange(0, 30)))
        assert speedups._FAST_BTAG.sub(b"\\1", s) == ORIGINAL_BTAG.sub(b"\\1", s), s
        assert speedups.strip_trailing_whitespace(s) == re.sub(b"[\t ]+\r\n", b"\r\n", s), s
        assert speedups.compress_whitespace(s) == re.sub(b"[\t ]+", b" ", s), s
        assert speedups.unfold_header_value(s) == re.sub(b"\r?\n", b"", s), s


def test_real_signature_headers_blank_b_the_same_way():
    raw = keys.sign(b"From: a@bank.example\r\nSubject: hi\r\n\r\nbody\r\n", "bank.example")
    headers, _ = dkim.rfc822_parse(raw)
    value = [v for n, v in headers if n.lower() == b"dkim-signature"][0]
    blanked = speedups._FAST_BTAG.sub(b"\\1", value)
    assert blanked == ORIGINAL_BTAG.sub(b"\\1", value)
    assert re.search(rb"[;\s]b=(;|\r?\n?$)", blanked) and blanked != value


def dkimpy_split(raw):
    try:
        return dkim.rfc822_parse(raw)
    except Exception:
        return [], b""


def test_message_split_matches_dkimpys_parser_and_the_plain_split():
    plain_split = switch.plain(fdkim, "_headers_and_body")
    assert plain_split.__module__ == "forgelab.auth.dkim" and plain_split is not dkim_message.headers_and_body
    pieces = [b"\r\n", b"\n", b"\r", b" ", b"\t", b"a", b":", b"From ", b"X-H: v", b"\r\n\r\n", b"\n\n",
              b"\n\r\n", b"\r\r\n", b"b\x7f", b"\x00", b"::"]
    rnd = random.Random(5)
    for _ in range(40000):
        raw = b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(0, 16)))
        assert dkim_message.headers_and_body(raw) == dkimpy_split(raw) == plain_split(raw), raw
    signed = keys.sign(MSG, "bank.example")
    for raw in (signed, signed + b"more\nlines\r\n" * 50, signed.replace(b"\r\n", b"\n")):
        assert dkim_message.headers_and_body(raw) == dkimpy_split(raw) == plain_split(raw)


# --- key record memo -----------------------------------------------------------------------

def test_key_record_memo_answers_like_dkimpy_and_hands_out_copies():
    record = (keys.LAB_KEYS / "lab._domainkey.bank.example.txt").read_text()
    value = "".join(re.findall(r'"([^"]*)"', record)).encode()
    first = speedups.evaluate_pk(b"lab._domainkey.bank.example.", value)
    assert first == speedups._DKIMPY_EVALUATE_PK(b"lab._domainkey.bank.example.", value)
    first[0]["modulus"] = 7  # a caller's change must not reach the next caller
    again = speedups.evaluate_pk(b"lab._domainkey.bank.example.", value)
    assert again[0]["modulus"] != 7 and again[1] == 2048
    for bad in (b"v=DKIM1; k=rsa; p=AAAA", b"v=DKIM2; p=x", b"k=dsa; p=AAAA", None, b""):
        for _ in range(2):  # errors are never remembered: the same exception each time
            with pytest.raises(dkim.KeyFormatError) as fast:
                speedups.evaluate_pk(b"x._domainkey.example.", bad)
            with pytest.raises(dkim.KeyFormatError) as slow:
                speedups._DKIMPY_EVALUATE_PK(b"x._domainkey.example.", bad)
            assert str(fast.value) == str(slow.value)


MSG = (b"From: Bank <news@bank.example>\r\nTo: alice@corp.example\r\nSubject: hello\r\n"
       b"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nDear  customer,\t\r\nyour statement is ready. \r\n\r\n\r\n")


def test_memos_stay_bounded(keyring):
    key = keyring["1024"]
    for i in range(speedups._CACHE_MAX + 20):
        speedups._public_key(key["modulus"], 65537 + 2 * i)
    assert len(speedups._public_keys) == speedups._CACHE_MAX
    record = keys.keys_for("bank.example")[0]
    text = keys.public_record(record.private_pem())[1].encode()
    for i in range(speedups._CACHE_MAX + 20):
        speedups.evaluate_pk(b"x._domainkey.example.", text + b"; n=%d" % i)
    assert len(speedups._key_records) == speedups._CACHE_MAX
    speedups._key_records.clear()
    long_record = text + b"; n=" + b"x" * speedups.MAX_REMEMBERED_RECORD
    assert speedups.evaluate_pk(b"x._domainkey.example.", long_record)[1] == 2048  # the lab keys' size
    assert speedups._key_records == {}  # parsed, not kept


def test_sha1_signatures_are_always_dkimpys_to_judge(keyring, dkimpy_verifies):
    # A system OpenSSL may refuse SHA-1 and call a good signature invalid; dkimpy does not.
    key = keyring["2048"]
    sig = bytes(dkimpy_sign(hashlib.sha1(b"x"), key))
    calls = dkimpy_verifies
    assert speedups.rsa_verify(hashlib.sha1(b"x"), sig, public(key)) is True
    assert len(calls) == 1


def test_importing_the_speedups_again_keeps_dkimpys_originals():
    import importlib

    again = importlib.reload(speedups)
    assert again._DKIMPY_RSA_VERIFY is ORIGINAL_VERIFY and again._DKIMPY_RSA_VERIFY is not again.rsa_verify
    assert again.compress_whitespace(b"a\t  b") == b"a b"  # the slow path: dkimpy's regex, not ourselves
    assert again.strip_trailing_whitespace(b"a \r\n") == b"a\r\n"
    assert switch.plain(dkim, "RSASSA_PKCS1_v1_5_verify") is ORIGINAL_VERIFY
    if switch.installed():  # the reloaded module's functions go in, as install() would put them
        for module, name, value in again.REPLACEMENTS:
            setattr(module, name, value)


