"""The resolver: lab zone backend, caching, errors; the lab world matches its zone."""
import pytest

from forgelab.auth import spf
from forgelab.lab.dns import DNSTempError, Resolver, ZoneError, load_zone
from forgelab.lab import world

ZONE = """
$TTL 300
bank.example. IN TXT "v=spf1 " "ip4:127.0.1.1" " -all"
alias.example. IN CNAME bank.example.
a.b.deep.example. 60 IN A 127.0.9.9
"""


def test_multi_string_txt_is_joined_without_separator():
    r = Resolver.from_text(ZONE)
    assert r.txt("bank.example") == ["v=spf1 ip4:127.0.1.1 -all"]
    assert r.txt("BANK.example.") == ["v=spf1 ip4:127.0.1.1 -all"]


def test_unknown_names_are_nxdomain_and_empty_non_terminals_exist():
    r = Resolver.from_text(ZONE)
    assert r.query("nothere.example", "TXT").nxdomain
    ent = r.query("b.deep.example", "A")
    assert not ent.nxdomain and ent.records == ()
    assert r.query("bank.example", "A").nxdomain is False  # NODATA


def test_cname_is_followed():
    r = Resolver.from_text(ZONE)
    answer = r.query("alias.example", "TXT")
    assert answer.cnames == (("alias.example", "bank.example"),) and answer.texts() == ["v=spf1 ip4:127.0.1.1 -all"]


@pytest.mark.parametrize("text,line", [
    ('$TTL 300\nbad.example. IN A not-an-address\n', 2),
    ('a.example. IN A 127.0.0.1\n\nb.example. IN A nope\n', 3),  # no $TTL: the line forgelab adds is not counted
])
def test_bad_zone_file_names_file_and_line(tmp_path, text, line):
    path = tmp_path / "broken.zone"
    path.write_text(text)
    with pytest.raises(ZoneError) as err:
        load_zone(path)
    assert f"{path}:{line}" in str(err.value)


def test_missing_zone_file_is_named(tmp_path):
    with pytest.raises(ZoneError, match="missing.zone"):
        Resolver.lab(tmp_path / "missing.zone")


def test_ttl_cache_across_messages_and_once_per_message():
    now = [0.0]
    r = Resolver.from_text(ZONE)
    r._clock = lambda: now[0]
    r.query("a.b.deep.example", "A")
    r.query("a.b.deep.example", "A")
    assert r.queries == 1
    now[0] = 61  # past the record's 60 s TTL
    r.query("a.b.deep.example", "A")
    assert r.queries == 2
    view = r.lookups()
    view.txt("bank.example")
    view.txt("bank.example")
    assert view.log == [("bank.example", "TXT")]


def test_timeouts_are_temperrors_and_spf_says_so():
    r = Resolver.from_text(ZONE, timeouts={"bank.example": ["A"]})
    with pytest.raises(DNSTempError):
        r.query("bank.example", "TXT")
    assert r.query("bank.example", "A").nxdomain is False
    result = spf.check("127.0.1.1", "x@bank.example", "h.example", r.lookups())
    assert result.result == "temperror"


def test_two_resolvers_in_one_process_do_not_mix():
    a = Resolver.from_text('x.example. IN TXT "v=spf1 +all"\n')
    b = Resolver.from_text('x.example. IN TXT "v=spf1 -all"\n')
    assert spf.check("127.0.0.9", "u@x.example", "h", a.lookups()).result == "pass"
    assert spf.check("127.0.0.9", "u@x.example", "h", b.lookups()).result == "fail"


def test_world_and_lab_zone_agree():
    r = Resolver.lab()
    for d in world.DOMAINS:
        spf_records = [t for t in r.txt(d.name) if t.startswith("v=spf1")]
        assert spf_records == ([d.spf] if d.spf else []), d.name
        assert r.txt(f"_dmarc.{d.name}") == ([d.dmarc] if d.dmarc else []), d.name
        for sel in d.selectors:
            assert r.txt(f"{sel}._domainkey.{d.name}")[0].startswith("v=DKIM1"), (d.name, sel)
        for ip in d.addresses:
            assert spf.check(ip, f"x@{d.name}", "h", r.lookups()).result == ("pass" if d.spf else "none")
    assert len(world.banner_lines()) == len(world.DOMAINS)
    assert r.query("news.example", "TXT").nxdomain


def test_the_cache_is_bounded_whatever_names_are_asked(monkeypatch):
    import forgelab.lab.dns as fdns

    monkeypatch.setattr(fdns, "CACHE_SIZE", 50)
    resolver = fdns.Resolver.lab()
    for n in range(500):
        resolver.query(f"host{n}.attacker-chosen.example", "TXT")
    assert len(resolver._cache) <= 50
    resolver.query("bank.example", "TXT")
    before = resolver.queries
    resolver.query("bank.example", "TXT")
    assert resolver.queries == before  # still a cache
