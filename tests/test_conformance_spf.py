"""The OpenSPF RFC 7208 suite (203 cases) through forgelab's resolver and SPF check."""
from pathlib import Path

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest
from dns.rdtypes.ANY.TXT import TXT

from forgelab.auth import spf
from forgelab.lab.dns import LabBackend, Resolver

import yaml  # noqa: E402  (a test dependency)
SUITE = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "spf-openspf" / "rfc7208-tests.yml"
if not SUITE.exists():
    pytest.skip(f"conformance data not found at {SUITE} (../shared/conformance is not in this checkout)",
                allow_module_level=True)

DEFAULT_EXPLANATION = "DEFAULT"
# Cases forgelab answers differently from the suite, with the reason (also in docs/conformance.md).
KNOWN = {}


def _txt(strings):
    chunks = []
    for s in ([strings] if isinstance(strings, str) else strings):
        b = s.encode()
        chunks += [b[i:i + 255] for i in range(0, len(b), 255)] or [b""]
    return TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks or [b""])  # a record with no strings


def build_resolver(zonedata) -> Resolver:
    """The suite's zonedata as a lab zone (SPF records are also served as TXT unless TXT is given)."""
    zone = dns.zone.Zone(dns.name.root, relativize=False)
    timeouts = {}
    for owner, records in zonedata.items():
        try:
            name = dns.name.from_text(owner.rstrip(".") + ".")
        except dns.exception.DNSException:
            continue  # not a valid DNS name: it can only be NXDOMAIN
        has_txt = any(isinstance(r, dict) and "TXT" in r for r in records)
        seen = []
        for r in records:
            if r == "TIMEOUT":
                timeouts[owner] = set(seen)
                continue
            (rtype, value), = r.items()
            if rtype == "SPF":
                if has_txt:
                    continue
                rtype = "TXT"
            if rtype == "TXT" and value == "NONE":
                continue  # no TXT here; a later TIMEOUT still makes TXT queries time out
            seen.append(rtype)
            if rtype == "TXT":
                rdata = _txt(value)
            elif rtype == "MX":
                rdata = dns.rdata.from_text("IN", "MX", f"{value[0]} {value[1].rstrip('.')}.")
            elif rtype in ("PTR", "CNAME"):
                rdata = dns.rdata.from_text("IN", rtype, value.rstrip(".") + ".")
            else:
                try:
                    rdata = dns.rdata.from_text("IN", rtype, value)
                except dns.exception.DNSException:
                    continue
            zone.find_rdataset(name, rdata.rdtype, create=True).add(rdata, 300)
    return Resolver(LabBackend(zone, timeouts=timeouts))


def cases():
    for doc in yaml.safe_load_all(SUITE.read_text()):
        if not doc:
            continue
        for name, test in doc["tests"].items():
            yield pytest.param(doc["zonedata"], test, id=name)


CASES = list(cases())


def test_the_suite_has_203_cases():
    assert len(CASES) == 203


_resolvers = {}


@pytest.mark.parametrize("zonedata,test", CASES)
def test_openspf(zonedata, test, request):
    key = id(zonedata)
    if key not in _resolvers:
        _resolvers[key] = build_resolver(zonedata)
    resolver = _resolvers[key]
    name = request.node.callspec.id
    expected = test["result"] if isinstance(test["result"], list) else [test["result"]]
    got = spf.check(test["host"], test["mailfrom"], test["helo"], resolver.lookups(), strict=test.get("strict", True))
    if name in KNOWN:
        pytest.xfail(KNOWN[name])
    assert got.result in expected, f"{name}: {got.result} ({got.explanation}) not in {expected}"
    if "explanation" in test and got.result == "fail":
        want = test["explanation"]
        if want == DEFAULT_EXPLANATION:
            assert got.explanation == spf.pyspf.EXPLANATIONS["fail"]
        else:
            assert got.explanation == want
