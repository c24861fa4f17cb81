"""The one scan of an address field that both the address cap and the stdlib's piecewise parse use."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from forgelab.core.address_list import address_pieces, count_addresses, scan

# Every character that opens, closes or ends something, ordinary words, and encoded words.
FIELD = st.lists(st.sampled_from(list(' \t\r\n"(),:;<>@.\\[]=?') + ["a", "b@c.example", "=?utf-8?q?a,b?="]),
                 max_size=60).map("".join)


@settings(max_examples=500, deadline=None)
@given(FIELD)
def test_the_pieces_are_cut_only_where_the_count_sees_an_entry_end(value):
    found = scan(value)
    assert all(value[i] == "," for i in found.separators)
    assert set(found.cuts) <= set(found.separators)
    assert count_addresses(value) >= len(found.cuts) + 1 or not value.strip(" \t\r\n")


def test_a_scan_gives_separators_cuts_and_whether_it_can_be_cut():
    value = '"Doe, J" <j@d.example>, g: a@b, c@d;, =?utf-8?q?x,y?= <q@r.example>,, e@f'
    found = scan(value)
    assert [value[:i].count(",") for i in found.separators] == [1, 2, 3, 4, 5, 6]  # the quoted comma is not one
    assert found.cuts == [value.index(", g:"), value.index("d;,") + 2]  # not in the group, the word or at ",,"
    assert found.closed and found.cuttable
    assert count_addresses(value) == 7
    assert not scan("<@a.example,@b.example:x@y.example>").cuttable and scan("<a@b").closed is False


def test_pieces_put_together_are_the_field():
    value = ", ".join(f'"Name, {i}" <u{i}@e.example>' for i in range(200))
    pieces = address_pieces(value)
    assert len(pieces) > 1 and "".join(pieces) == value
