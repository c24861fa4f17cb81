"""lookalike: homoglyph, IDN, mixed-script, near-miss sender domains; bidi and invisible characters."""
import email
import email.policy

import pytest
from hypothesis import given, settings, strategies as st

from forgelab.lab import load_lab
from forgelab.plugins._skeleton import fold
from forgelab.plugins.lookalike import _BIDI_RE, _HIDDEN_RE, BIDI, INVISIBLE, Lookalike, distance_within
from forgelab.core.session import Envelope

LAB = load_lab()
DATE = b"Date: Mon, 17 Jun 1996 11:24:00 -0700"


def osa_distance(a: str, b: str) -> int:
    """The full optimal string alignment table: the reference for the banded one."""
    prev2, prev = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if prev2 is not None and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def punycode(domain: str) -> bytes:
    return domain.encode("idna")


def check(headers: list[bytes], mail_from="news@shop.example", settings=None):
    raw = b"".join(h + b"\r\n" for h in headers) + DATE + b"\r\n\r\nhello\r\n"
    try:
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception:  # the plugin must cope with raw bytes alone
        parsed = None
    return Lookalike(settings or {}).forgelab_message(envelope=Envelope(mail_from=mail_from), message=parsed,
                                                      raw=raw, lab=LAB)


CYRILLIC_BANK = "b\u0430nk.example"  # Cyrillic a
GREEK_SHOP = "sh\u03bfp.example"  # Greek omicron

CASES = [
    ("genuine", [b"From: <alerts@bank.example>"], "alerts@bank.example", "pass", None),
    ("genuine-subdomain", [b"From: <alerts@mail.bank.example>"], "b@mx.bank.example", "pass", None),
    ("unrelated", [b"From: <x@evil.example>"], "x@evil.example", "pass", None),
    ("two-letters-off-short-name", [b"From: <x@park.example>"], "x@park.example", "pass", None),
    ("legit-idn", [b"From: <info@" + punycode("b\u00fccher.example") + b">"], "", "pass", None),
    ("punycode-cyrillic", [b"From: <alerts@" + punycode(CYRILLIC_BANK) + b">"], "", "fail", "bank.example"),
    ("utf8-greek", ["From: <orders@{}>".format(GREEK_SHOP).encode()], "", "fail", "shop.example"),
    ("digit-for-letter", [b"From: <alerts@bank.examp1e>"], "", "fail", "bank.example"),
    ("digit-in-name", [b"From: <alerts@b4nk.example>"], "", "fail", "bank.example"),
    ("one-typo", [b"From: <alerts@bnak.example>"], "", "fail", "bank.example"),
    ("two-typos-long-name", [b"From: <claims@insrue.exmaple>"], "", "fail", "insure.example"),
    ("rn-for-m", [b"From: <it@corp.exarnple>"], "", "fail", "corp.example"),
    ("name-with-hyphen", [b"From: <alerts@bank-secure.example>"], "", "fail", "bank.example"),
    ("domain-inside-domain", [b"From: <alerts@bank.example.evil.example>"], "", "fail", "bank.example"),
    ("mail-from-only", [b"From: <x@evil.example>"], "bounce@b\u0430nk.example", "fail", "MAIL FROM"),
    ("reply-to", [b"From: <x@evil.example>", b"Reply-To: <help@5hop.example>"], "x@evil.example", "fail", "Reply-To"),
    ("mixed-scripts-unprotected", ["From: <x@p\u0430ypal.example>".encode()], "", "fail", "CYRILLIC and LATIN"),
    ("bidi-in-subject", ["Subject: invoice\u202eexe.pdf".encode()], "", "fail", "RIGHT-TO-LEFT OVERRIDE"),
    ("encoded-bidi-in-subject", [b"Subject: =?utf-8?b?" + __import__("base64").b64encode("a\u202eb".encode()) + b"?="],
     "", "fail", "U+202E"),
    ("zero-width-in-from", ["From: Bank\u200b Alerts <x@evil.example>".encode()], "", "fail", "ZERO WIDTH SPACE"),
    ("en-quad-in-from", ["From: \"a\u2000b\" <x@evil.example>".encode()], "", "fail", "U+2000"),
    ("bad-punycode", [b"From: <x@xn--99999999999.example>"], "", "softfail", "punycode"),
    # issue 17: the name joined to a word without a hyphen, accents, another suffix
    ("name-joined-to-a-word", [b"From: <alerts@banklogin.example>"], "", "fail", "'bank' in 'banklogin'"),
    ("word-joined-to-the-name", [b"From: <alerts@updatebank.example>"], "", "fail", "'bank' in 'updatebank'"),
    ("name-and-word-under-another-suffix", [b"From: <alerts@banktest.com>"], "", "fail", "imitates bank.example"),
    ("a-circumflex-under-another-suffix", ["From: <alerts@b\u00e2nk.com>".encode()], "", "fail", "under .com"),
    ("two-accents", [b"From: <alerts@" + punycode("b\u00e2\u0144k.example") + b">"], "", "fail",
     "U+00E2 LATIN SMALL LETTER A WITH CIRCUMFLEX"),
    ("small-capitals", ["From: <alerts@\u0299\u1d00nk.example>".encode()], "", "fail", "imitates bank.example"),
    ("suffix-swap", [b"From: <orders@shop.co>"], "", "fail", "'shop' under .co instead of .example"),
    ("typo-below-a-subdomain", [b"From: <x@mail.bnak.example>"], "", "fail", "'bnak' is a typing slip away"),
    ("name-and-words-in-a-subdomain", [b"From: <x@secure-banklogin.phish.example>"], "", "fail",
     "'bank' in 'secure-banklogin'"),
    ("short-name-inside-a-word", [b"From: <x@workshop.example>"], "", "pass", None),
    ("short-name-beside-a-plain-word", [b"From: <x@food-bank.example>", b"Reply-To: <x@foxnews.example>"], "",
     "pass", None),
    ("short-name-as-a-subdomain", [b"From: <x@news.bbc.co.uk>"], "", "pass", None),
]


@pytest.mark.parametrize("headers, mail_from, expected, phrase", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_results(headers, mail_from, expected, phrase):
    verdict = check(headers, mail_from)
    assert verdict.check == "lookalike"
    assert verdict.result == expected, verdict.reason
    if phrase:
        assert phrase in verdict.reason


def test_names_the_imitated_domain_in_details():
    verdict = check([b"From: <alerts@" + punycode(CYRILLIC_BANK) + b">"])
    found = [f for f in verdict.details["findings"] if f.get("imitates")]
    assert found[0]["imitates"] == "bank.example"
    assert found[0]["unicode"] == CYRILLIC_BANK


def test_default_protects_local_and_lab_domains():
    assert Lookalike({}).protected(LAB) == ["corp.example", "bank.example", "shop.example", "news.example",
                                            "insure.example"]


def test_protect_setting_replaces_the_default():
    settings = {"protect": ["mybank.example"]}
    assert check([b"From: <x@mybenk.example>"], settings=settings).result == "fail"
    assert check([b"From: <x@bank-secure.example>"], settings=settings).result == "pass"


def test_a_long_name_is_found_anywhere_in_a_label_of_dns_length():
    settings = {"protect": ["acmebank.example"]}
    for domain in (b"acmebankzq.com", b"myacmebanks.example", b"acmebank.phish.example", b"z" * 55 + b"acmebank.com"):
        assert check([b"From: <x@" + domain + b">"], settings=settings).result == "fail", domain
    # a label longer than DNS allows (63) is not searched: no name has one, and the search stays bounded
    assert check([b"From: <x@" + b"z" * 56 + b"acmebank.com>"], settings=settings).result == "pass"


def test_a_name_longer_than_dns_allows_is_only_searched_for_the_protected_domain():
    padding = "a" * 250 + "."  # a folded From can read as one long domain; no DNS name is this long
    assert "inside a different domain" in Lookalike._imitates(padding + "bank.example.evil.example", "bank.example")
    assert Lookalike._imitates(padding + "banklogin.example", "bank.example") is None
    assert Lookalike._imitates("banklogin.example", "bank.example")


def test_words_setting_adds_lure_words():
    assert check([b"From: <x@bankzebra.example>"]).result == "pass"  # zebra is no phishing word
    assert check([b"From: <x@bankzebra.example>"], settings={"words": ["Zebra"]}).result == "fail"
    with pytest.raises(ValueError, match="words"):
        Lookalike({"words": "zebra"})


def test_allow_setting():
    assert check([b"From: <x@bank-secure.example>"], settings={"allow": ["bank-secure.example"]}).result == "pass"


def test_bad_setting_is_refused():
    with pytest.raises(ValueError, match="protect"):
        Lookalike({"protect": "bank.example"})


def test_helpers():
    assert fold("b\u0430nk.examp1e") == fold("bank.example")
    assert fold("\uff42\uff41\uff4e\uff4b") == "bank"  # fullwidth, through NFKC
    assert distance_within("bank", "bnak", 2) == 1  # one swap
    assert distance_within("bank", "park", 2) == 2
    assert distance_within("bank", "pork", 2) == 3  # past the limit: limit + 1


def test_character_regexes_hold_exactly_the_character_sets():
    every = "".join(map(chr, range(0x110000)))  # surrogates included: headers keep bad bytes as them
    assert set(_BIDI_RE.findall(every)) == BIDI
    assert set(_HIDDEN_RE.findall(every)) == BIDI | INVISIBLE


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet="abcl1.-\u0430", max_size=14), st.text(alphabet="abcl1.-\u0430", max_size=14),
       st.integers(min_value=0, max_value=3))
def test_banded_distance_is_the_full_one_up_to_the_limit(a, b, limit):
    assert distance_within(a, b, limit) == min(osa_distance(a, b), limit + 1)


def test_a_domain_seen_again_gets_the_same_answer_from_a_bounded_memo():
    first = [check(h, m) for _, h, m, _, _ in CASES]
    again = [check(h, m) for _, h, m, _, _ in CASES]
    assert [(v.result, v.reason, v.details) for v in again] == [(v.result, v.reason, v.details) for v in first]
    assert Lookalike._imitates.cache_info().hits > 0
    assert Lookalike._imitates.cache_info().maxsize == 4096
