"""forgelab/speedups: one switch, and every speed-up answers as the plain code it replaces.

The dkimpy replacements have their own file (test_speedups_dkim.py). Here: the switch
(``install()``, ``FORGELAB_SPEEDUPS=0``), the memos of SPF, iprev, DNS and DMARC (results,
reasons, details and the questions asked are the same on the plain path and with every memo
cold or warm, and the memos stay bounded), the same verdicts from the teaching path with the
speed-ups in and out on the conformance-style inputs, the bounded memo itself, and glibc's heap.
"""
import dataclasses
import functools
import gc
import ipaddress
import os
import random
import subprocess
import sys
import threading
import tracemalloc
from types import SimpleNamespace

import dkim as dkimpy
import pytest
import spf as pyspf

from forgelab import speedups
from forgelab.auth import arc, dmarc, iprev, keys, results, spf
from forgelab.auth import dkim as fdkim
from forgelab.lab.dns import Resolver
from forgelab.speedups import authres_text, dmarc_memos, dns_memo, iprev_memo, pyspf_memos
from forgelab.speedups.memo import short_memo

from test_plugin_lookalike import check

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


def on_path(monkeypatch, fast: bool) -> None:
    """Every replaced name set to its speed-up (fast) or to the plain object, until the test ends."""
    for module, name, value in speedups.replacements():
        monkeypatch.setattr(module, name, value if fast else speedups.plain(module, name))


@pytest.fixture
def fast(monkeypatch):
    on_path(monkeypatch, True)


def _clear_memos():
    dns_memo.reverse.cache_clear()
    iprev_memo.canonical.cache_clear()
    pyspf_memos.ADDRESSES.ip_address.cache_clear()
    pyspf_memos.ADDRESSES.ip_network.cache_clear()


# --- the switch ----------------------------------------------------------------------------

def test_every_replaced_name_is_the_speed_up_exactly_when_the_switch_is_on():
    # conftest.py calls install() as serve does; FORGELAB_SPEEDUPS=0 leaves the plain path.
    assert speedups.installed() == speedups.enabled()
    replaced = speedups.replacements()
    assert len(replaced) == 14
    for module, name, value in replaced:
        expected = value if speedups.enabled() else speedups.plain(module, name)
        assert getattr(module, name) is expected, (module.__name__, name)
        assert speedups.plain(module, name) is not value
    assert speedups.install() == speedups.enabled()  # idempotent: nothing changes the second time
    assert all(getattr(m, n) is (v if speedups.enabled() else speedups.plain(m, n)) for m, n, v in replaced)


def test_the_plain_objects_are_the_libraries_and_the_teaching_modules_own():
    assert speedups.plain(dkimpy, "RSASSA_PKCS1_v1_5_verify") is dkimpy.crypto.RSASSA_PKCS1_v1_5_verify
    assert speedups.plain(pyspf, "ipaddress") is ipaddress
    for module, name, _ in speedups.replacements():
        original = speedups.plain(module, name)
        owner = getattr(original, "__module__", None) or getattr(original, "__name__", None)
        if callable(original):
            assert not owner.startswith("forgelab.speedups"), (module.__name__, name, owner)


SWITCH_PROBE = r"""
import sys
from forgelab import speedups
from forgelab.app import Forgelab, Settings

lab = Forgelab(Settings(data_dir=sys.argv[1], web=None, tls=False, event_log=False))
print(speedups.installed(), sum(getattr(m, n) is v for m, n, v in speedups.replacements()))
"""


@pytest.mark.parametrize("value,expected", [("0", "False 0"), ("off", "False 0"), ("1", "True 14"), (None, "True 14")])
def test_a_lab_started_with_the_switch_off_runs_the_plain_path(tmp_path, value, expected):
    env = {k: v for k, v in os.environ.items() if k != speedups.ENV}
    if value is not None:
        env[speedups.ENV] = value
    out = subprocess.run([sys.executable, "-c", SWITCH_PROBE, str(tmp_path / "data")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == expected


MEMO_PROBE = """
from forgelab.plugins import _domains
_domains.org_domain("mail.bank.example"); _domains.org_domain("mail.bank.example")
print(_domains._org_domain.cache_info().currsize)
"""


@pytest.mark.parametrize("value,expected", [("0", "0"), ("1", "1")])
def test_the_memos_of_the_plugins_are_behind_the_same_switch(value, expected):
    env = dict(os.environ, **{speedups.ENV: value})
    out = subprocess.run([sys.executable, "-c", MEMO_PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


# --- the same verdicts from the teaching path, speed-ups in and out ------------------------

MSG = (b"From: Bank <news@bank.example>\r\nTo: alice@corp.example\r\nSubject: hello\r\n"
       b"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nDear  customer,\t\r\nyour statement is ready. \r\n\r\n\r\n")


@functools.cache
def _messages() -> list:
    """Signed once (a signature carries its time), judged on both paths."""
    signed = keys.sign(MSG, "bank.example")
    weak = keys.sign(MSG.replace(b"bank.example", b"phish.example"), "phish.example", selector="weak512")
    return [signed, signed.replace(b"Subject: hello", b"Subject: hellO"), signed.replace(b"statement", b"Stat"),
            signed.replace(b"Dear  customer", b"Dear \t customer"), signed.replace(b"\r\n", b"\n"),
            keys.sign(signed, "bank.example"), weak, weak.replace(b"hello", b"bye"), MSG, b"\tbroken\r\n\r\n",
            b"DKIM-Signature: v=1; a=rsa-sha256; d=bank.example; d=twice\r\n" + signed,
            signed + b"more\nlines\r\n" * 50]


def _dkim_and_dmarc_runs():
    view = Resolver.lab().lookups()
    out = []
    for raw in _messages():
        sigs = fdkim.verify_all(raw, view)
        verdicts = dmarc.evaluate(raw, None, sigs, view, "psl"), arc.verify(raw, view)
        out.append(([(s.result, s.reason, s.details()) for s in sigs], verdicts,
                    results.build_value("mx.corp.example", [SimpleNamespace(result=v.result, details=v.details())
                                                            for v in [*sigs, *verdicts]])))
    return out


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


def _org_domains():
    names = ["mail.bank.example", "BANK.example.", "a.b.c.co.uk", "co.uk", "example", ".example", "", "x.gov",
             "www.city.kawasaki.jp", "sub.example.com.", "xn--85x722f.xn--55qx5d.cn"]
    return [dmarc.org_domain(n) for n in names]


@pytest.mark.parametrize("run", [_dkim_and_dmarc_runs, lambda: _spf_runs(Resolver.from_text(ZONE)),
                                 lambda: _iprev_runs(Resolver.from_text(ZONE)), _org_domains],
                         ids=["dkim-dmarc-arc", "spf", "iprev", "org-domain"])
def test_the_teaching_path_gives_the_same_verdicts_with_the_speed_ups_in_and_out(monkeypatch, run):
    on_path(monkeypatch, False)
    plain = run()
    on_path(monkeypatch, True)
    _clear_memos()
    assert run() == plain
    assert run() == plain  # the memos warm
    assert dmarc.org_domain is dmarc_memos.org_domain and fdkim._headers_and_body is not speedups.plain(
        fdkim, "_headers_and_body")


def test_the_arc_suite_gives_the_same_results_with_the_speed_ups_in_and_out(monkeypatch):
    test_conformance_arc = pytest.importorskip("test_conformance_arc")
    cases = [(p.values[0], p.values[1]["message"].replace("\n", "\r\n").encode()) for p in test_conformance_arc.CASES]
    on_path(monkeypatch, False)
    plain = [arc.verify(message, resolver.lookups()) for resolver, message in cases]
    on_path(monkeypatch, True)
    assert [arc.verify(message, resolver.lookups()) for resolver, message in cases] == plain
    assert len({r.result for r in plain}) >= 3  # pass, fail and none all occur


# --- SPF, iprev and DNS memos --------------------------------------------------------------

def test_spf_results_and_questions_are_the_same_with_memos_cold_and_warm(fast):
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
    assert pyspf_memos.ADDRESSES.ip_network.cache_info().hits > 0  # the memo was in the path


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


def test_iprev_results_reasons_and_questions_are_the_same_with_memos_cold_and_warm(fast):
    _clear_memos()
    cold = _iprev_runs(Resolver.from_text(ZONE))
    warm = _iprev_runs(Resolver.from_text(ZONE))
    assert cold == warm
    assert iprev_memo.canonical.cache_info().hits > 0 and dns_memo.reverse.cache_info().hits > 0
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


def test_decoded_answers_are_fresh_lists_and_do_not_touch_equality(fast):
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
    records = pyspf_memos.pyspf_records(answer, "TXT")
    assert records == speedups.plain(spf, "_pyspf_records")(plain, "TXT")
    assert pyspf_memos.pyspf_records(answer, "TXT") is records  # kept with the answer


def test_pyspf_sees_the_same_ipaddress_functions_and_the_memos_are_bounded():
    addresses = pyspf_memos.ADDRESSES
    _clear_memos()
    assert addresses.ip_address("127.0.1.1") == ipaddress.ip_address("127.0.1.1")
    assert addresses.IPv4Address is ipaddress.IPv4Address
    with pytest.raises(ValueError):
        addresses.ip_network("127.0.1.1/24")  # host bits set: an error, every time, never remembered
    with pytest.raises(ValueError):
        addresses.ip_network("127.0.1.1/24")
    with pytest.raises(AttributeError):
        addresses.IPAddress  # pyspf tries this only on ancient ipaddr; it must still be missing
    for n in range(5000):
        addresses.ip_network(f"10.{n // 256}.{n % 256}.0/32")
        iprev_memo.canonical(f"10.{n // 256}.{n % 256}.1")
        dns_memo.reverse(f"10.{n // 256}.{n % 256}.2")
    for memo in (addresses.ip_network, iprev_memo.canonical, dns_memo.reverse):
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


# --- the bounded memo ----------------------------------------------------------------------

def test_short_arguments_are_remembered_and_long_ones_only_computed():
    calls = []

    @short_memo(maxsize=8, longest=10)
    def upper(text):
        calls.append(text)
        return text.upper()

    assert upper("abc") == upper("abc") == "ABC" and calls == ["abc"]
    long = "x" * 11
    assert upper(long) == upper(long) == long.upper() and calls == ["abc", long, long]
    assert upper.cache_info().currsize == 1
    for i in range(20):
        upper(str(i))
    assert upper.cache_info().currsize == 8


def test_a_folded_from_with_a_huge_domain_leaves_no_trace_in_the_memos():
    check([b"From: <a@bank.example>"])  # first use: imports, the Public Suffix List
    dmarc_memos.org_domain("mail.bank.example")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        # SMTP lines are short, but a folded From reads as one 10,000-letter domain.
        checks = [check([b"From: <a@" + b"x%d" % n * 2500 + b"\r\n ." + b"y" * 5000 + b".example>"]).check
                  for n in range(5)]
        orgs = [bool(dmarc_memos.org_domain("z%d" % n * 5000 + ".example")) for n in range(5)]
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert checks == ["lookalike"] * 5 and all(orgs)
    assert kept < 40_000, f"{kept} bytes kept after five messages"


def test_the_dmarc_record_memo_answers_like_the_plain_parse_and_keeps_no_error():
    plain_parse = speedups.plain(dmarc, "_parse")
    for record in ("v=DMARC1; p=reject", "v=DMARC1; p=none; sp=quarantine; np=reject; pct=50; adkim=s",
                   "v=DMARC1; p=reject; psd=y"):
        args = (record, "bank.example", "bank.example", None)
        (fast_policy, fast_parsed), (plain_policy, plain_parsed) = dmarc_memos.parse(*args), plain_parse(*args)
        assert fast_policy == plain_policy and repr(vars(fast_parsed)) == repr(vars(plain_parsed))
        assert dmarc_memos.parse(*args) is dmarc_memos.parse(*args)
    for _ in range(2):  # an error each time, never remembered
        with pytest.raises(Exception) as fast_error:
            dmarc_memos.parse("v=DMARC1; p=bogus", "bank.example", "bank.example", None)
        with pytest.raises(Exception) as plain_error:
            plain_parse("v=DMARC1; p=bogus", "bank.example", "bank.example", None)
        assert type(fast_error.value) is type(plain_error.value) and str(fast_error.value) == str(plain_error.value)


# --- Authentication-Results as text --------------------------------------------------------

def test_resinfo_writes_what_authres_writes():
    plain_resinfo = speedups.plain(results, "resinfo")  # builds authres' objects
    assert plain_resinfo is not authres_text.resinfo
    rnd = random.Random(11)
    alphabet = ["a", "Z", "0", "@", ".", "-", "/", "=", ":", "[", "]", "?", '"', "\\", "(", ")", " ", "\t",
                "\r\n", ";", "é", "\x00", "+", "_", "~", "<", ">", ","]

    def word(k):
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(k)))

    for _ in range(20000):
        method = rnd.choice(["dkim", "spf", "DMARC", "iprev", "arc", "x-" + word(4)])
        result = rnd.choice(["pass", "fail", "None", "temperror", "softfail"])
        props = [(rnd.choice(["header", "smtp", "policy", "Header"]), rnd.choice(["d", "mailfrom", "S", "b"]),
                  rnd.choice([word(12), "", None, 1024])) for _ in range(rnd.randrange(4))]
        comment = rnd.choice([word(20), "", None])
        assert authres_text.resinfo(method, result, props, comment) == plain_resinfo(method, result, props, comment)
    for resinfo in (authres_text.resinfo, plain_resinfo):
        with pytest.raises(ValueError):
            resinfo("dkim", "")


# --- glibc's heap (serve and its workers) --------------------------------------------------

HEAP_PROBE = r"""
import sys
from forgelab.speedups.malloc import keep_heap_small

def rss_kb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])

if sys.argv[1] == "fixed":
    assert keep_heap_small()
big = [bytearray(1 << 20) for _ in range(4)]
del big  # glibc on its own now serves blocks up to 1 MB from the heap
before = rss_kb()
blocks, kept = [], []
for _ in range(200):  # 40 MB of 200 KB blocks (a big message's copies), small ones that stay between them
    blocks.append(bytearray(200 * 1024))
    kept.append(bytearray(2000))
del blocks
print((rss_kb() - before) // 1024)
"""


def kept_mb(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_big_blocks_go_back_to_the_system_once_the_threshold_is_fixed():
    if kept_mb("default") < 20:
        pytest.skip("this malloc gives the memory back on its own")
    assert kept_mb("fixed") < 5
