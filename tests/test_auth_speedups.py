"""The authentication checks' speed-ups give the libraries' own answers, and the real path still judges.

RSA verification through OpenSSL is compared with dkimpy's pure-Python function on valid,
damaged, short, long, reduced and wrong-hash signatures over several key sizes and exponents;
the canonicalisation and b= blanking replacements are compared with dkimpy's regexes on
random byte strings; the key-record memo with dkimpy's parser; Authentication-Results
clauses with what authres writes.
"""
import hashlib
import random
import re

import authres
import dkim
import pytest
from authres.core import AuthenticationResult, AuthenticationResultProperty
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from forgelab.auth import dkim as fdkim
from forgelab.auth import dkimpy_speedups as speedups
from forgelab.auth import keys, results
from forgelab.dns import Resolver

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
    assert dkim.RSASSA_PKCS1_v1_5_verify is speedups.rsa_verify


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
    assert dkim.RE_BTAG is speedups._FAST_BTAG
    assert dkim.canonicalization.compress_whitespace is speedups.compress_whitespace


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


def test_message_split_matches_dkimpys_parser():
    pieces = [b"\r\n", b"\n", b"\r", b" ", b"\t", b"a", b":", b"From ", b"X-H: v", b"\r\n\r\n", b"\n\n",
              b"\n\r\n", b"\r\r\n", b"b\x7f", b"\x00", b"::"]
    rnd = random.Random(5)
    for _ in range(40000):
        raw = b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(0, 16)))
        assert fdkim._headers_and_body(raw) == dkimpy_split(raw), raw
    signed = keys.sign(MSG, "bank.example")
    for raw in (signed, signed + b"more\nlines\r\n" * 50, signed.replace(b"\r\n", b"\n")):
        assert fdkim._headers_and_body(raw) == dkimpy_split(raw)


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


# --- through the real path -----------------------------------------------------------------

MSG = (b"From: Bank <news@bank.example>\r\nTo: alice@corp.example\r\nSubject: hello\r\n"
       b"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nDear  customer,\t\r\nyour statement is ready. \r\n\r\n\r\n")


def test_lab_message_verifies_and_tampering_fails_through_the_real_path():
    view = Resolver.lab().lookups()
    signed = keys.sign(MSG, "bank.example")
    assert [s.result for s in fdkim.verify_all(signed, view)] == ["pass"]
    subject = fdkim.verify_all(signed.replace(b"Subject: hello", b"Subject: hellO"), view)[0]
    assert subject.result == "fail" and "does not verify" in subject.reason  # the RSA comparison fails
    body = fdkim.verify_all(signed.replace(b"statement", b"Statement"), view)[0]
    assert body.result == "fail" and "body hash" in body.reason
    # Relaxed canonicalisation: added white space inside lines and folding changes nothing.
    loose = signed.replace(b"Dear  customer", b"Dear \t customer").replace(b"Subject: hello", b"Subject:  hello")
    assert fdkim.verify_all(loose, view)[0].result == "pass"


def test_simple_canonicalisation_and_sha1_through_the_real_path(tmp_path):
    pair = keys.keygen("new.example", "s1", tmp_path, bits=1024)
    view = Resolver.from_text(pair.zone_line + "\n").lookups()
    pem = pair.key.path.read_bytes()
    for c in ((b"simple", b"simple"), (b"relaxed", b"simple")):
        for algorithm in (b"rsa-sha256", b"rsa-sha1"):
            msg = MSG.replace(b"bank.example", b"new.example")
            sig = dkim.sign(msg, b"s1", b"new.example", pem, canonicalize=c, signature_algorithm=algorithm,
                            include_headers=[b"from", b"subject"])
            assert fdkim.verify_all(sig + msg, view)[0].result == "pass", (c, algorithm)
            assert fdkim.verify_all(sig + msg.replace(b"hello", b"hell0"), view)[0].result == "fail"


def test_weak_lab_key_is_still_reported_as_mathematically_valid():
    view = Resolver.lab().lookups()
    signed = keys.sign(MSG.replace(b"bank.example", b"phish.example"), "phish.example", selector="weak512")
    sig = fdkim.verify_all(signed, view)[0]
    assert sig.result == "fail" and sig.keysize == 512 and "mathematically valid" in sig.reason
    tampered = fdkim.verify_all(signed.replace(b"Subject: hello", b"Subject: bye"), view)[0]
    # dkimpy only complains about the size of a key whose signature verifies.
    assert tampered.result == "fail" and "does not verify" in tampered.reason and "bits" not in tampered.reason


# --- Authentication-Results ----------------------------------------------------------------

def authres_resinfo(method, result, properties=(), comment=""):
    """What resinfo wrote when it built authres objects."""
    props = [AuthenticationResultProperty(t, n, results._value(v)) for t, n, v in properties if v]
    return str(AuthenticationResult(method, result=result, result_comment=results._comment(comment),
                                    properties=props))


def test_resinfo_writes_what_authres_writes():
    rnd = random.Random(11)
    alphabet = ["a", "Z", "0", "@", ".", "-", "/", "=", ":", "[", "]", "?", '"', "\\", "(", ")", " ", "\t",
                "\r\n", ";", "é", "\x00", "+", "_", "~", "<", ">", ","]
    word = lambda k: "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(k)))
    for _ in range(20000):
        method = rnd.choice(["dkim", "spf", "DMARC", "iprev", "arc", "x-" + word(4)])
        result = rnd.choice(["pass", "fail", "None", "temperror", "softfail"])
        props = [(rnd.choice(["header", "smtp", "policy", "Header"]), rnd.choice(["d", "mailfrom", "S", "b"]),
                  rnd.choice([word(12), "", None, 1024])) for _ in range(rnd.randrange(4))]
        comment = rnd.choice([word(20), "", None])
        assert results.resinfo(method, result, props, comment) == authres_resinfo(method, result, props, comment)
    with pytest.raises(ValueError):
        results.resinfo("dkim", "")


def test_header_value_still_parses_with_authres():
    view = Resolver.lab().lookups()
    signed = keys.sign(MSG, "bank.example")
    sig = fdkim.verify_all(signed, view)[0]

    class V:  # the two fields build_value reads from a verdict
        def __init__(self, result, details):
            self.result, self.details = result, details

    value = results.build_value("mx.corp.example", [V(sig.result, sig.details()),
                                                    V("fail", {"authres": {"method": "spf", "comment": "a (b)",
                                                     "properties": [("smtp", "mailfrom", 'x"y@z')]}})])
    parsed = authres.AuthenticationResultsHeader.parse_value(" ".join(value.split()))
    assert parsed.authserv_id == "mx.corp.example"
    assert [(r.method, r.result) for r in parsed.results] == [("spf", "fail"), ("dkim", "pass")]
    assert parsed.results[1].header_d == "bank.example"


def test_unparsable_and_second_signatures_through_the_real_path():
    view = Resolver.lab().lookups()
    signed = keys.sign(MSG, "bank.example")
    broken = b"DKIM-Signature: v=1; a=rsa-sha256; d=bank.example; d=twice\r\n" + signed
    sigs = fdkim.verify_all(broken, view)
    assert [s.result for s in sigs] == ["permerror", "pass"]
    assert "cannot be parsed" in sigs[0].reason and sigs[0].domain == ""
    resigned = keys.sign(signed, "bank.example")
    assert [(s.index, s.result) for s in fdkim.verify_all(resigned, view)] == [(0, "pass"), (1, "pass")]


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
    assert dkim.RSASSA_PKCS1_v1_5_verify is again.rsa_verify


def test_the_public_suffix_list_is_built_once_when_many_sessions_need_it_at_once(monkeypatch):
    import threading
    import time

    from forgelab.auth import dmarc

    builds = []

    real = dmarc.PublicSuffixList

    def slow_build():  # the real list, built slowly enough for every thread to arrive first
        builds.append(1)
        time.sleep(0.2)
        return real()

    monkeypatch.setattr(dmarc, "_psl", None)
    monkeypatch.setattr(dmarc, "PublicSuffixList", slow_build)
    got = []
    threads = [threading.Thread(target=lambda: got.append(dmarc.psl())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(builds) == 1 and len(got) == 8 and all(g is got[0] for g in got)
    assert got[0].privatesuffix("mail.bank.example") == "bank.example"


def test_stripping_forged_authentication_results_keeps_everything_else_byte_for_byte():
    from forgelab.auth.results import strip_forged_authres

    plain = b"From: a@b.example\r\nSubject: x\r\n\r\nAuthentication-Results: mx.corp.example; spf=pass\r\n"
    assert strip_forged_authres(plain, "mx.corp.example") == plain  # in the body: not a header
    forged = (b"AUTHENTICATION-RESULTS: MX.corp.example;\r\n\tspf=pass\r\n"
              b"Authentication-Results: other.example; dkim=pass\r\nFrom: a@b.example\r\n\r\nbody\r\n")
    assert strip_forged_authres(forged, "mx.corp.example") == (
        b"Authentication-Results: other.example; dkim=pass\r\nFrom: a@b.example\r\n\r\nbody\r\n")
    bare_lf = b"Authentication-Results: mx.corp.example; none\nFrom: a@b.example\n\nbody\n"
    assert strip_forged_authres(bare_lf, "mx.corp.example") == b"From: a@b.example\n\nbody\n"
