"""keygen writes a usable key pair; sign and ARC seal round-trip through the resolver."""
import pytest

from forgelab.auth import arc, dkim, keys
from forgelab.lab.dns import Resolver

MSG = b"From: a@new.example\r\nTo: b@corp.example\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_keygen_then_sign_then_verify(tmp_path, algorithm):
    pair = keys.keygen("new.example", "s1", tmp_path, algorithm=algorithm, bits=1024)
    assert pair.key.path.exists() and pair.record.startswith("v=DKIM1; k=" + algorithm)
    resolver = Resolver.from_text(pair.zone_line + "\n")
    signed = keys.sign(MSG, "new.example", keys_dir=tmp_path)
    sigs = dkim.verify_all(signed, resolver.lookups())
    assert [(s.result, s.selector) for s in sigs] == [("pass", "s1")]
    other = Resolver.lab()  # the lab has no key for new.example
    assert dkim.verify_all(signed, other.lookups())[0].result == "permerror"


def test_keygen_refuses_weak_rsa(tmp_path):
    with pytest.raises(ValueError):
        keys.keygen("new.example", "s1", tmp_path, bits=512)


def test_unknown_domain_has_no_key():
    with pytest.raises(ValueError):
        keys.sign(MSG, "nobody.example")


def test_arc_seal_by_the_list_server_verifies_and_breaks_when_tampered():
    lab = Resolver.lab()
    raw = keys.sign(MSG.replace(b"a@new.example", b"a@bank.example"), "bank.example")
    raw = b"Authentication-Results: mail.lists.example; dkim=pass header.d=bank.example; arc=none\r\n" + raw
    sealed = arc.seal(raw, "lists.example", "mail.lists.example")
    assert arc.verify(sealed, lab.lookups()).result == "pass"
    assert arc.verify(sealed.replace(b"body", b"BODY"), lab.lookups()).result == "fail"
    assert arc.verify(raw, lab.lookups()).result == "none"
