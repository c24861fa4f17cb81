"""The ValiMail ARC validation suite (171 cases) through forgelab's resolver and ARC check."""
from pathlib import Path

import pytest

from forgelab.auth import arc
from forgelab.lab.dns import Resolver

import yaml  # noqa: E402  (a test dependency)
ROOT = Path(__file__).resolve().parents[2] / "shared" / "conformance"
SUITE = ROOT / "arc-valimail" / "arc-draft-validation-tests.yml"
STALWART = ROOT / "dkim-arc-stalwart-mail-auth" / "arc"
if not SUITE.exists():
    pytest.skip(f"conformance data not found at {SUITE} (../shared/conformance is not in this checkout)",
                allow_module_level=True)

# Three cases expect an empty cv: dkimpy reports "no result" for a chain whose newest seal says
# cv=fail; forgelab reports arc=fail (RFC 8617 5.2: such a chain has failed). See docs/conformance.md.
EMPTY_CV = "fail"


def cases():
    for doc in yaml.safe_load_all(SUITE.read_text()):
        if not doc:
            continue
        resolver = Resolver.from_records(doc.get("txt-records") or {})
        for name, test in doc["tests"].items():
            yield pytest.param(resolver, test, id=name)


CASES = list(cases())


def test_the_suite_has_171_cases():
    assert len(CASES) == 171


@pytest.mark.parametrize("resolver,test", CASES)
def test_valimail_arc(resolver, test):
    message = test["message"].replace("\n", "\r\n").encode()
    expected = (test["cv"] or "").strip().lower() or EMPTY_CV
    assert arc.verify(message, resolver.lookups()).result == expected


def _stalwart(path):
    dns_part, _, message = path.read_text().partition("\n\n")
    records = {}
    for line in dns_part.splitlines():
        name, _, value = line.partition(" ")
        records[name] = value
    return Resolver.from_records(records), message.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def test_stalwart_real_google_arc_chain_passes():
    resolver, message = _stalwart(STALWART / "001.txt")
    assert arc.verify(message, resolver.lookups()).result == "pass"


def test_stalwart_ed25519_arc_chain_is_not_accepted():
    # RFC 8617 specifies rsa-sha256 only; dkimpy refuses ed25519-sha256 seals (listed in docs/conformance.md).
    resolver, message = _stalwart(STALWART / "002.txt")
    assert arc.verify(message, resolver.lookups()).result == "fail"
