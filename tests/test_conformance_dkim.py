"""DKIM vectors (RFC 8463 and RFC 6376 examples, dkimpy's test data, real-world messages)
through forgelab's resolver and DKIM check."""
import time
from pathlib import Path

import dkim as dkimpy
import pytest

from forgelab.auth import dkim
from forgelab.lab.dns import Resolver

ROOT = Path(__file__).resolve().parents[2] / "shared" / "conformance"
RFC = ROOT / "dkim-rfc-examples"
DATA = ROOT / "dkim-dkimpy-testdata"
STALWART = ROOT / "dkim-arc-stalwart-mail-auth" / "dkim"
if not ROOT.exists():
    pytest.skip(f"conformance data not found at {ROOT} (../shared/conformance is not in this checkout)",
                allow_module_level=True)

BRISBANE_ED = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
GMAIL = ("k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA1Kd87/UeJjenpabgbFwh+eBCsSTrqmwIYYvywlbhbqoo2DymndFkbj"
         "OVIPIldNs/m40KF+yzMn1skyoxcTUGCQs8g3FgD2Ap3ZB5DekAo5wMmk4wimDO+U8QzI3SD07y2+07wlNWwIt8svnxgdxGkVbbhzY8i+RQ9Dp"
         "SVpPbF7ykQxtKXkv/ahW3KjViiAH+ghvvIhkx4xYSIc9oSwVmAl5OctMEeWUwg8Istjqz8BZeTWbf41fbNhte7Y+YqZOwq1Sd0DbvYAD9NOZK"
         "9vlfuac0598HY+vtSBczUiKERHv1yRbcaQtZFh5wtiRrN04BLUTD21MycBX5jYchHjPY/wIDAQAB")


def name_value_lines(path):
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            name, _, value = line.partition(" ")
            out[name.rstrip(".")] = value.strip()
    return out


def results(raw, records):
    return [s.result for s in dkim.verify_all(raw, Resolver.from_records(records).lookups())]


def text(name):
    return (DATA / name).read_text().strip()


def test_rfc8463_example_both_signatures_pass():
    raw = (RFC / "rfc8463-appendixA3-signed.eml").read_bytes()
    sigs = dkim.verify_all(raw, Resolver.from_records(name_value_lines(RFC / "rfc8463-appendixA2-dns.txt")).lookups())
    assert [(s.algorithm, s.result) for s in sigs] == [("ed25519-sha256", "pass"), ("rsa-sha256", "pass")]
    changed = raw.replace(b"Joe.", b"Joe!")
    assert "fail" in results(changed, name_value_lines(RFC / "rfc8463-appendixA2-dns.txt"))


def test_rfc6376_appendix_a2():
    key = next(iter(name_value_lines(RFC / "rfc6376-appendixC-brisbane.dns.txt").values()))
    records = {"brisbane._domainkey.example.com": key}
    assert results((RFC / "rfc6376-appendixA2-as-printed.eml").read_bytes(), records) == ["fail"]
    assert results((RFC / "rfc6376-appendixA2-reconstructed.eml").read_bytes(), records) == ["pass"]


FOOTBALL = {"brisbane._domainkey.football.example.com": BRISBANE_ED}


@pytest.mark.parametrize("message,records,expected", [
    ("rfc6376.signed.msg", {**FOOTBALL, "test._domainkey.football.example.com": "test.txt"}, ["pass", "pass"]),
    ("rfc6376.signed.rsa.msg", {"test._domainkey.football.example.com": "test.txt"}, ["pass"]),
    ("rfc6376.signed.rsa.msg", {"test._domainkey.football.example.com": "test2.txt"}, ["pass"]),  # no k=
    ("rfc6376.signed.rsa.msg", {"test._domainkey.football.example.com": "badversion.txt"}, ["permerror"]),
    ("rfc6376.signed.rsa.msg", {"test._domainkey.football.example.com": "badk.txt"}, ["permerror"]),
    ("rfc6376.signed.rsa.msg", {"test._domainkey.football.example.com": "test_bad.txt"}, ["permerror"]),
    ("rfc6376.signed.rsa.msg", {"test._domainkey.football.example.com": "test_tlsrpt.txt"}, ["permerror"]),
    ("rfc6376.signed.rsa.msg", {}, ["permerror"]),  # no key published
    ("rfc6376.signed.no_t.msg", {"test._domainkey.football.example.com": "test.txt"}, ["fail"]),
    ("ed25519test2.msg", {"sed._domainkey.test.ex": "eximtest.dns"}, ["pass"]),
    ("test2.message", {"20120113._domainkey.gmail.com": GMAIL}, ["pass"]),
    ("test.message.baddomain", {"test._domainkey.legitimate.com(.attacker.com": "test.txt"}, ["permerror"]),
])
def test_dkimpy_data(message, records, expected):
    served = {n: (text(v) if v.endswith((".txt", ".dns")) else v) for n, v in records.items()}
    assert results((DATA / message).read_bytes(), served) == expected


def test_dkimpy_corrupted_key_fails():
    record = text("test.txt").replace("DkHlOQoBTz", "DkHlOQoBTy")  # a different modulus
    assert results((DATA / "rfc6376.signed.rsa.msg").read_bytes(),
                   {"test._domainkey.football.example.com": record}) != ["pass"]


@pytest.mark.parametrize("key,pub", [("1024_testkey.key", "1024_testkey_wo_markers.pub.txt"),
                                     ("1024_testkey.key", "1024_testkey_wo_markers.pub.rsa.txt"),
                                     ("2048_testkey.key", "2048_testkey_wo_markers.pub.txt"),
                                     ("2048_testkey.key", "2048_testkey_wo_markers.pub.rsa.txt"),
                                     ("2048_testkey_PKCS8.key", "2048_testkey_PKCS8.key.pub.txt")])
def test_dkimpy_rsa_key_variants_sign_and_verify(key, pub):
    message = (DATA / "test.message").read_bytes()
    sig = dkimpy.sign(message, b"test", b"example.com", (DATA / key).read_bytes())
    assert results(sig + message, {"test._domainkey.example.com": text(pub)}) == ["pass"]


def test_dkimpy_ed25519_sign_and_verify():
    message = (DATA / "ed25519test.msg").read_bytes()
    sig = dkimpy.sign(message, b"sel", b"example.com", (DATA / "ed25519test.key").read_bytes().strip(),
                      signature_algorithm=b"ed25519-sha256")
    assert results(sig + message, {"sel._domainkey.example.com": text("ed25519test.dns")}) == ["pass"]


def stalwart(path):
    dns_part, _, message = path.read_text().partition("\n\n")
    records = {}
    for line in dns_part.splitlines():
        name, _, value = line.partition(" ")
        records[name] = value
    return records, message.replace("\r\n", "\n").replace("\n", "\r\n").encode()


@pytest.mark.parametrize("name", ["001.txt", "002.txt", "003.txt", "004.txt", "006.txt"])
def test_stalwart_real_world_last_signature_passes(name):
    records, raw = stalwart(STALWART / name)
    assert results(raw, records)[-1] == "pass"


def test_stalwart_005_expired_now_but_passes_at_its_time(monkeypatch):
    records, raw = stalwart(STALWART / "005.txt")
    assert results(raw, records)[-1] != "pass"  # x= is in the past
    monkeypatch.setattr(time, "time", lambda: 1667843664)
    assert results(raw, records)[-1] == "pass"
