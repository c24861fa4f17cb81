"""The SPF, iprev and DNS speed-ups change nothing a student sees: results, reasons, details
and the questions asked are the same with every memo cold or warm, and the memos stay bounded."""
import dataclasses
import ipaddress
import threading

import pytest
import spf as pyspf

from forgelab.auth import iprev, spf
from forgelab.dns import Resolver, _reverse

ZONE = """
$TTL 300
bank.example. IN TXT "v=spf1 " "ip4:127.0.1.1" " -all"
bank.example. IN MX 10 mail.bank.example.
mail.bank.example. IN A 127.0.1.1
mail.bank.example. IN AAAA ::ffff:127.0.1.1
mail.bank.example. IN TXT "v=spf1 a -all"
soft.example. IN TXT "v=spf1 mx:bank.example ip4:127.0.2.0/24 ~all"
1.1.0.127.in-addr.arpa. IN PTR mail.bank.example.
2.66.0.127.in-addr.arpa. IN PTR mail.bank.example.
2.66.0.127.in-addr.arpa. IN PTR other.example.
"""


def _clear_memos():
    _reverse.cache_clear()
    iprev._canonical.cache_clear()
    pyspf.ipaddress.ip_address.cache_clear()
    pyspf.ipaddress.ip_network.cache_clear()


def _spf_runs(resolver):
    out = []
    for ip, sender, helo in [("127.0.1.1", "news@bank.example", "mail.bank.example"),
                             ("127.0.1.1", "", "mail.bank.example"),
                             ("127.0.66.2", "x@bank.example", "mail.bank.example"),
                             ("::ffff:127.0.1.1", "x@soft.example", "h.example"),
                             ("127.0.2.9", "x@soft.example", "h.example"),
                             ("127.0.3.9", "x@soft.example", "[1.2.3.4]"),
                             ("127.0.3.9", "x@nothere.example", "h.example")]:
        view = resolver.lookups()
        result = spf.check(ip, sender, helo, view)
        out.append((result, result.details(), list(view.log)))
    return out


def _iprev_runs(resolver):
    out = []
    for ip in ["127.0.1.1", "127.0.66.2", "127.0.9.9", "::ffff:127.0.1.1", "::FFFF:7F00:101", "bogus", ""]:
        view = resolver.lookups()
        out.append((iprev.check(ip, view), list(view.log)))
    return out


def test_spf_results_and_questions_are_those_of_pyspf_with_the_plain_ipaddress_module(monkeypatch):
    memoised = _spf_runs(Resolver.from_text(ZONE))
    monkeypatch.setattr(pyspf, "ipaddress", ipaddress)  # pyspf as it ships, no memo in between
    assert _spf_runs(Resolver.from_text(ZONE)) == memoised


def test_iprev_results_are_those_of_a_plain_ipaddress_comparison(monkeypatch):
    memoised = _iprev_runs(Resolver.from_text(ZONE))
    monkeypatch.setattr(iprev, "_canonical", lambda ip: str(ipaddress.ip_address(ip)))
    assert _iprev_runs(Resolver.from_text(ZONE)) == memoised


def test_spf_results_and_questions_are_the_same_with_memos_cold_and_warm():
    _clear_memos()
    cold = _spf_runs(Resolver.from_text(ZONE))
    warm = _spf_runs(Resolver.from_text(ZONE))  # memos warm, a fresh resolver: nothing shared but the memos
    resolver = Resolver.from_text(ZONE)
    _spf_runs(resolver)
    again = _spf_runs(resolver)  # the TTL cache warm too: answers (and their decoded forms) reused
    assert cold == warm == again
    results = [r.result for r, _, _ in cold]
    assert results == ["pass", "pass", "fail", "pass", "pass", "softfail", "none"]
    first, details, log = cold[0]
    assert first.reason == ("127.0.1.1 is allowed to send for bank.example: it matches ip4:127.0.1.1 "
                            "(its SPF: 'v=spf1 ip4:127.0.1.1 -all')")
    assert log == [("bank.example", "TXT")]
    assert cold[1][2] == [("mail.bank.example", "TXT"), ("mail.bank.example", "A")]
    # An IPv4-mapped client is judged as IPv4 (pyspf), through an MX whose address matches.
    assert cold[3][0].reason.startswith("::ffff:127.0.1.1 is allowed to send for soft.example: it matches mx:")
    assert cold[3][2] == [("soft.example", "TXT"), ("bank.example", "MX"), ("mail.bank.example", "A")]
    assert cold[5][0].reason.startswith("127.0.3.9 is not listed for soft.example, whose SPF ends in ~all")


def test_details_are_the_dataclass_fields_in_order_then_the_authres_parts():
    for result, details, _ in _spf_runs(Resolver.from_text(ZONE)):
        expected = dataclasses.asdict(result)
        props = [("smtp", "mailfrom", result.sender)] if result.identity == "mailfrom" else [
            ("smtp", "helo", result.domain)]
        expected["authres"] = {"method": "spf", "comment": f"{result.ip} {result.result} for {result.domain}",
                               "properties": props}
        expected["smtp.mailfrom" if result.identity == "mailfrom" else "smtp.helo"] = props[0][2]
        assert details == expected and list(details) == list(expected)
        details["reason"] = "changed by a caller"
        assert result.details()["reason"] == result.reason  # a fresh dict every time


def test_iprev_results_reasons_and_questions_are_the_same_with_memos_cold_and_warm():
    _clear_memos()
    cold = _iprev_runs(Resolver.from_text(ZONE))
    warm = _iprev_runs(Resolver.from_text(ZONE))
    assert cold == warm
    by_ip = {r.ip: (r, log) for r, log in cold}
    ok, log = by_ip["127.0.1.1"]
    assert (ok.result, ok.name, ok.reason) == (
        "pass", "mail.bank.example",
        "127.0.1.1 is named mail.bank.example (PTR), and mail.bank.example points back to 127.0.1.1")
    assert log == [("1.1.0.127.in-addr.arpa", "PTR"), ("mail.bank.example", "A"), ("mail.bank.example", "AAAA")]
    forged, _ = by_ip["127.0.66.2"]
    assert forged.result == "fail" and set(forged.ptr_names) == {"mail.bank.example", "other.example"}
    assert by_ip["127.0.9.9"][0].reason == "127.0.9.9 has no PTR record: the client has no name in DNS"
    # Two spellings of one IPv4-mapped address (its PTR is the IPv4 one, as dnspython reverses it):
    # the AAAA record, written a third way, confirms both; the A record does not count for it.
    for spelling in ("::ffff:127.0.1.1", "::FFFF:7F00:101"):
        r, log = by_ip[spelling]
        assert r.result == "pass" and r.ip == spelling and spelling in r.reason
        assert log == [("1.1.0.127.in-addr.arpa", "PTR"), ("mail.bank.example", "A"), ("mail.bank.example", "AAAA")]
    assert by_ip["bogus"][0].result == "permerror" and by_ip["bogus"][1] == []
    assert by_ip[""][0].reason == "'' is not an IP address"


def test_decoded_answers_are_fresh_lists_and_do_not_touch_equality():
    resolver = Resolver.from_text(ZONE)
    answer = resolver.query("bank.example", "TXT")
    plain = dataclasses.replace(answer)  # the same answer, never decoded
    texts = answer.texts()
    assert texts == ["v=spf1 ip4:127.0.1.1 -all"]
    texts.append("changed by a caller")
    assert answer.texts() == ["v=spf1 ip4:127.0.1.1 -all"]
    assert answer == plain and repr(answer) == repr(plain) and hash(answer) == hash(plain)
    mx = resolver.query("BANK.example.", "MX")
    assert mx.targets() == ["mail.bank.example"] and mx.targets() is not mx.targets()
    assert sorted(resolver.lookups().ptr("127.0.66.2")) == ["mail.bank.example", "other.example"]


def test_pyspf_sees_the_same_ipaddress_functions_and_the_memos_are_bounded():
    import ipaddress

    _clear_memos()
    assert pyspf.ipaddress.ip_address("127.0.1.1") == ipaddress.ip_address("127.0.1.1")
    assert pyspf.ipaddress.IPv4Address is ipaddress.IPv4Address
    with pytest.raises(ValueError):
        pyspf.ipaddress.ip_network("127.0.1.1/24")  # host bits set: an error, every time, never remembered
    with pytest.raises(ValueError):
        pyspf.ipaddress.ip_network("127.0.1.1/24")
    with pytest.raises(AttributeError):
        pyspf.ipaddress.IPAddress  # pyspf tries this only on ancient ipaddr; it must still be missing
    for n in range(5000):
        pyspf.ipaddress.ip_network(f"10.{n // 256}.{n % 256}.0/32")
        iprev._canonical(f"10.{n // 256}.{n % 256}.1")
        _reverse(f"10.{n // 256}.{n % 256}.2")
    for memo in (pyspf.ipaddress.ip_network, iprev._canonical, _reverse):
        assert memo.cache_info().currsize <= 4096


def test_a_timeout_stays_a_temperror_and_is_asked_once_per_message():
    resolver = Resolver.from_text(ZONE, timeouts={"bank.example": ["MX"]})
    view = resolver.lookups()
    first = spf.check("127.0.1.1", "x@bank.example", "h.example", view)
    second = spf.check("127.0.1.1", "x@bank.example", "h.example", view)
    assert first == second and first.result == "temperror"
    assert view.log == [("bank.example", "TXT")]


def test_one_view_read_from_many_threads_logs_each_question_and_answers_the_same():
    resolver = Resolver.from_text(ZONE)
    for _ in range(20):
        view = resolver.lookups()
        got, barrier = [], threading.Barrier(4)

        def ask():
            barrier.wait()
            got.append(tuple(view.txt("bank.example")) + tuple(view.addresses("mail.bank.example")))

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert len(set(got)) == 1 and len(got) == 4
        assert set(view.log) == {("bank.example", "TXT"), ("mail.bank.example", "A"), ("mail.bank.example", "AAAA")}
