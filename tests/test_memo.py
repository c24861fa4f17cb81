"""forgelab/memo.py: memos of pure functions of short text stay small whatever attackers send."""
import gc
import tracemalloc

from forgelab.auth import dmarc
from forgelab.memo import short_memo

from test_plugin_lookalike import check


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
    dmarc.org_domain("mail.bank.example")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        # SMTP lines are short, but a folded From reads as one 10,000-letter domain.
        checks = [check([b"From: <a@" + b"x%d" % n * 2500 + b"\r\n ." + b"y" * 5000 + b".example>"]).check
                  for n in range(5)]
        orgs = [bool(dmarc.org_domain("z%d" % n * 5000 + ".example")) for n in range(5)]
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert checks == ["lookalike"] * 5 and all(orgs)
    assert kept < 40_000, f"{kept} bytes kept after five messages"
