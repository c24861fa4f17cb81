"""The authentication checks through their real path: DKIM verdicts and reasons, the
Authentication-Results writer against authres, the Public Suffix List built once, forged
Authentication-Results stripped byte for byte. (They hold with the speed-ups on or off.)"""
import authres
import dkim

from forgelab.auth import dkim as fdkim
from forgelab.auth import keys, results
from forgelab.lab.dns import Resolver

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
