"""DMARC cases from authheaders, and the Public Suffix List test vectors, through forgelab."""
import re
from pathlib import Path

import pytest

from forgelab.auth import dkim, dmarc
from forgelab.auth.keys import zone_line
from forgelab.lab.dns import Resolver

ROOT = Path(__file__).resolve().parents[2] / "shared" / "conformance"
DATA = ROOT / "dmarc-authheaders"
PSL_TESTS = ROOT / "psl" / "test_psl.txt"
if not ROOT.exists():
    pytest.skip(f"conformance data not found at {ROOT} (../shared/conformance is not in this checkout)",
                allow_module_level=True)

RECORDS = {
    "_dmarc.example.com": "v=DMARC1; p=reject; rua=mailto:dmarc.reports@valimail.com,mailto:dmarc_agg@vali.email; "
                          "ruf=mailto:dmarc.reports@valimail.com,mailto:dmarc_c0cb7153_afrf@vali.email",
    "_dmarc.example.org": "v=DMARC1; p=none",
    "_dmarc.example.net": "v=DMARC1; p=none; sp=reject",
    "_dmarc.example.biz": "v=DMARC1; p=none; sp=quarantine; np=reject",
    "_dmarc.nop.example.org": "v=DMARC1; sp=quarantine; np=reject",
    "_dmarc.bad.example.com": "v=DMARC1; p=none; reject",
    "_dmarc.gov": "v=DMARC1; p=reject; sp=none; np=reject; rua=mailto:dotgov_dmarc@cisa.dhs.gov; psd=y",
}


@pytest.fixture(scope="module")
def resolver():
    lines = [zone_line(name, value) for name, value in RECORDS.items()]
    lines.append(zone_line("test._domainkey.example.com", (DATA / "test.txt").read_text().strip()))
    # Names that exist without a DMARC record of their own (RFC 9091: np= is for names that do not).
    lines += ["sub2.example.biz. IN A 192.0.2.1", "example.gov. IN A 192.0.2.2", "sub.example.net. IN A 192.0.2.3",
              "nop.example.org. IN A 192.0.2.4", "bad.example.com. IN A 192.0.2.5"]
    return Resolver.from_text("\n".join(lines) + "\n")


def given(domain, result):
    return dkim.Signature(0, domain, "test", "rsa-sha256", "", ("from",), result, "given as input")


def run(resolver, name, signatures=None, discovery="psl"):
    raw = (DATA / name).read_bytes()
    view = resolver.lookups()
    sigs = dkim.verify_all(raw, view) if signatures is None else signatures
    return dmarc.evaluate(raw, None, sigs, view, discovery)


@pytest.mark.parametrize("name", ["test.message_signed", "testcomma.message"])
def test_signed_from_domain_passes(resolver, name):
    r = run(resolver, name)
    assert (r.result, r.from_domain, r.details()["policy.dmarc"]) == ("pass", "example.com", "reject")


def test_broken_record_is_permerror(resolver):
    r = run(resolver, "test.bad.message", [])
    assert (r.result, r.from_domain) == ("permerror", "bad.example.com")


def test_no_from_domain_is_permerror(resolver):
    r = run(resolver, "test.nofrom.message", [])
    assert r.result == "permerror" and r.from_domain is None


def test_psd_tree_walk(resolver):
    r = run(resolver, "test.gov.message", [], discovery="treewalk")
    assert (r.result, r.from_domain, r.details()["policy.dmarc"]) == ("fail", "example.gov", "reject")
    assert run(resolver, "test.gov.message", []).result == "none"  # RFC 7489 PSL discovery finds nothing


@pytest.mark.parametrize("name", ["test.message_multi", "test.message_multi2"])
def test_several_from_addresses(resolver, name):
    # authheaders: dmarc=fail policy.dmarc=reject; forgelab: permerror carrying the same disposition.
    r = run(resolver, name, [given("example.com", "fail"), given("example.org", "pass")])
    assert (r.result, r.details()["policy.dmarc"], r.action) == ("permerror", "reject", "reject")


@pytest.mark.parametrize("name,domain,policy", [("test.message_sub", "sub.example.net", "reject"),
                                                ("test.message_np1", "sub.example.biz", "reject"),
                                                ("test.message_np2", "sub2.example.biz", "quarantine")])
def test_subdomain_policies(resolver, name, domain, policy):
    r = run(resolver, name, [given(domain, "fail")])
    assert (r.result, r.from_domain, r.details()["policy.dmarc"]) == ("fail", domain, policy)


def test_record_without_p_means_no_policy(resolver):
    r = run(resolver, "test_nop.message", [given("nop.example.org", "fail")])
    assert r.result == "none"


def psl_cases():
    for line in PSL_TESTS.read_text().splitlines():
        m = re.match(r"^checkPublicSuffix\((null|'[^']*'), (null|'[^']*')\);", line.strip())
        if m:
            arg, want = (None if x == "null" else x.strip("'") for x in m.groups())
            yield pytest.param(arg, want, id=str(arg))


PSL_CASES = list(psl_cases())


def test_psl_has_78_checks():
    assert len(PSL_CASES) == 78


@pytest.mark.parametrize("domain,expected", PSL_CASES)
def test_psl_organisational_domain(domain, expected):
    got = dmarc.org_domain(domain) if domain is not None else None
    assert got == (expected.lower() if expected else None)
